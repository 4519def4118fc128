//! The head's symbol table: every label name and value once, by a 4-byte id.
//!
//! Most symbols are label values unique to one series (an address, a pod name), so the
//! table grows by one or two symbols per series and its per-symbol cost is paid per
//! series. The strings are therefore kept end to end in one buffer, with only their end
//! offsets beside them, rather than one heap allocation each (a 14-byte address as an
//! `Arc<str>` takes 48 bytes of heap plus a 16-byte handle). The lookup table holds bare
//! ids and hashes through the buffer.

use std::hash::BuildHasher;

#[derive(Default)]
pub struct Symbols {
    /// All symbols, end to end.
    text: String,
    /// Where each symbol ends in `text`; symbol `i` starts where `i - 1` ends.
    ends: Vec<usize>,
    ids: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl Symbols {
    /// The id of `s`, added if new. Ids are dense and in order of first use.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.get(s) {
            return id;
        }
        let id = self.ends.len() as u32;
        self.text.push_str(s);
        self.ends.push(self.text.len());
        let (text, ends, hasher) = (&self.text, &self.ends, &self.hasher);
        self.ids.insert_unique(hasher.hash_one(s), id, |id| hasher.hash_one(span(text, ends, *id)));
        id
    }

    /// The id of `s`, if it is a symbol.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.find(self.hasher.hash_one(s), |id| self.resolve(*id) == s).copied()
    }

    /// The string of an id handed out by [`Symbols::intern`].
    pub fn resolve(&self, id: u32) -> &str {
        span(&self.text, &self.ends, id)
    }
}

fn span<'a>(text: &'a str, ends: &[usize], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends.get(i - 1).copied().unwrap_or(text.len()) };
    let end = ends.get(i).copied().unwrap_or(text.len());
    text.get(start..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once_and_resolves() {
        let mut s = Symbols::default();
        let a = s.intern("job");
        let b = s.intern("api");
        let e = s.intern("");
        let c = s.intern("job");
        assert_eq!((a, b, e, c), (0, 1, 2, 0));
        assert_eq!((s.resolve(a), s.resolve(b), s.resolve(e)), ("job", "api", ""));
        assert_eq!(s.get("api"), Some(1));
        assert_eq!(s.get(""), Some(2));
        assert_eq!(s.get("ap"), None);
        let many: Vec<u32> = (0..10_000).map(|i| s.intern(&format!("10.0.{}.{}:9100 ✓", i / 250, i % 250))).collect();
        for (i, id) in many.iter().enumerate() {
            assert_eq!(s.resolve(*id), format!("10.0.{}.{}:9100 ✓", i / 250, i % 250));
            assert_eq!(s.get(s.resolve(*id)), Some(*id));
        }
    }
}
