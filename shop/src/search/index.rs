//! An in-memory inverted index ranked with BM25F: name, tags and description are scored as
//! one document whose term frequencies are weighted by field, so a word in the name counts
//! more than the same word deep in the description.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

const K1: f64 = 1.2;
const B: f64 = 0.75;
const NAME_WEIGHT: f64 = 3.0;
const TAG_WEIGHT: f64 = 2.0;
const DESCRIPTION_WEIGHT: f64 = 1.0;

/// What the index keeps of a product.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub price_cents: i64,
}

/// One product found, best first. Fields in the order search has always written them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: i64,
    pub name: String,
    pub price_cents: i64,
    pub score: f64,
}

struct Entry {
    name: String,
    price_cents: i64,
    /// Field-weighted term frequencies.
    terms: HashMap<String, f64>,
    /// Field-weighted length.
    length: f64,
}

#[derive(Default)]
pub struct Index {
    docs: HashMap<i64, Entry>,
    postings: HashMap<String, HashSet<i64>>,
    total_length: f64,
}

/// Lower-cased alphanumeric words; a plural `s` is dropped so "lamps" finds "lamp".
pub fn tokenize(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| {
        let mut w = w.to_lowercase();
        if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
            w.pop();
        }
        w
    })
}

impl Index {
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Adds or replaces a document.
    pub fn upsert(&mut self, doc: &Document) {
        self.remove(doc.id);
        let mut terms: HashMap<String, f64> = HashMap::new();
        let fields: [(&str, f64); 2] = [(&doc.name, NAME_WEIGHT), (&doc.description, DESCRIPTION_WEIGHT)];
        for (text, weight) in fields {
            for t in tokenize(text) {
                *terms.entry(t).or_default() += weight;
            }
        }
        for tag in &doc.tags {
            for t in tokenize(tag) {
                *terms.entry(t).or_default() += TAG_WEIGHT;
            }
        }
        let length: f64 = terms.values().sum();
        for term in terms.keys() {
            self.postings.entry(term.clone()).or_default().insert(doc.id);
        }
        self.total_length += length;
        self.docs.insert(doc.id, Entry { name: doc.name.clone(), price_cents: doc.price_cents, terms, length });
    }

    pub fn remove(&mut self, id: i64) {
        if let Some(old) = self.docs.remove(&id) {
            self.total_length -= old.length;
            for term in old.terms.keys() {
                if let Some(set) = self.postings.get_mut(term) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.postings.remove(term);
                    }
                }
            }
        }
    }

    /// The best `limit` matches of `query` (any term matches), and how many matched.
    /// Ties are broken by id so results are stable.
    pub fn search(&self, query: &str, limit: usize) -> (Vec<Hit>, usize) {
        let terms: HashSet<String> = tokenize(query).collect();
        let n = self.docs.len() as f64;
        if n == 0.0 || terms.is_empty() {
            return (Vec::new(), 0);
        }
        let avg_length = self.total_length / n;
        let mut scores: HashMap<i64, f64> = HashMap::new();
        for term in &terms {
            let Some(ids) = self.postings.get(term) else { continue };
            let df = ids.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for id in ids {
                let Some(entry) = self.docs.get(id) else { continue };
                let tf = entry.terms.get(term).copied().unwrap_or(0.0);
                let norm = K1 * (1.0 - B + B * entry.length / avg_length);
                *scores.entry(*id).or_default() += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let total = scores.len();
        let mut ranked: Vec<(i64, f64)> = scores.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        let hits = ranked
            .into_iter()
            .filter_map(|(id, score)| {
                self.docs.get(&id).map(|e| Hit {
                    id,
                    name: e.name.clone(),
                    price_cents: e.price_cents,
                    score: (score * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        (hits, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: i64, name: &str, description: &str, tags: &[&str]) -> Document {
        Document {
            id,
            name: name.into(),
            description: description.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            price_cents: 100,
        }
    }

    #[test]
    fn name_matches_outrank_description_matches() {
        let mut ix = Index::default();
        ix.upsert(&doc(1, "Desk lamp", "A warm light for reading", &["lighting"]));
        ix.upsert(&doc(2, "Reading chair", "Comfortable; pairs well with a lamp", &["furniture"]));
        ix.upsert(&doc(3, "Kettle", "Boils water", &["kitchen"]));
        let (hits, total) = ix.search("lamp", 10);
        assert_eq!(total, 2);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 2]);
        assert!(hits[0].score > hits[1].score);
    }

    #[test]
    fn rare_terms_weigh_more_and_plurals_match() {
        let mut ix = Index::default();
        for i in 0..10 {
            ix.upsert(&doc(i, &format!("Blue mug {i}"), "", &[]));
        }
        ix.upsert(&doc(100, "Blue teapot", "", &[]));
        let (hits, _) = ix.search("blue teapots", 3);
        assert_eq!(hits[0].id, 100);
    }

    #[test]
    fn upsert_replaces_and_remove_forgets() {
        let mut ix = Index::default();
        ix.upsert(&doc(1, "Old name", "", &[]));
        ix.upsert(&doc(1, "New name", "", &["fresh"]));
        assert_eq!(ix.search("old", 10).1, 0);
        assert_eq!(ix.search("fresh", 10).1, 1);
        assert_eq!(ix.len(), 1);
        ix.remove(1);
        assert!(ix.is_empty());
        assert_eq!(ix.search("new", 10).1, 0);
        assert!(ix.total_length.abs() < 1e-9);
    }

    #[test]
    fn empty_or_punctuation_queries_match_nothing() {
        let mut ix = Index::default();
        ix.upsert(&doc(1, "Lamp", "", &[]));
        assert_eq!(ix.search("", 10), (vec![], 0));
        assert_eq!(ix.search("?!", 10), (vec![], 0));
    }
}
