//! Metric metadata (type, help, unit) as remote_write senders describe their families,
//! answered on `/api/v1/metadata` (Grafana's query builder shows it). Kept in memory
//! only: senders describe their families again every few minutes (Hale's agents every
//! ten, Prometheus every one), so a restart forgets it for at most that long. Bounded: a
//! help text is cut at [`MAX_HELP_BYTES`], a name keeps [`MAX_VARIANTS`] distinct
//! descriptions, and past [`MAX_FAMILIES`] names new ones are not kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use hale_core::api::{Metadata, MetricMetadata};
use hale_core::exposition::valid_metric_name;
use hale_core::remote_write;

pub const MAX_FAMILIES: usize = 200_000;
pub const MAX_HELP_BYTES: usize = 1024;
/// Senders may disagree about a family (two versions of a service): Prometheus lists
/// each description; a few are kept.
pub const MAX_VARIANTS: usize = 4;

#[derive(Debug, Default)]
pub struct MetadataStore {
    by_name: RwLock<HashMap<String, Vec<MetricMetadata>>>,
}

impl MetadataStore {
    /// Keeps what a write request said of its families; names that are not metric names
    /// are passed over.
    pub fn observe(&self, described: Vec<remote_write::MetricMetadata>) {
        if described.is_empty() {
            return;
        }
        let mut by_name = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        for m in described.into_iter().filter(|m| valid_metric_name(&m.metric_family_name)) {
            let mut help = m.help.clone();
            if help.len() > MAX_HELP_BYTES {
                let cut = (0..=MAX_HELP_BYTES).rev().find(|i| help.is_char_boundary(*i)).unwrap_or(0);
                help.truncate(cut);
            }
            let entry = MetricMetadata { kind: m.type_name().to_string(), help, unit: m.unit.clone() };
            if by_name.len() >= MAX_FAMILIES && !by_name.contains_key(&m.metric_family_name) {
                continue;
            }
            let variants = by_name.entry(m.metric_family_name).or_default();
            if !variants.contains(&entry) {
                // The newest description first; the oldest goes when there are too many.
                variants.insert(0, entry);
                variants.truncate(MAX_VARIANTS);
            }
        }
    }

    /// Prometheus's `/api/v1/metadata`: every family (or only `metric`), at most `limit`
    /// families and `per_metric` descriptions each, sorted by name.
    pub fn query(&self, metric: Option<&str>, limit: Option<usize>, per_metric: Option<usize>) -> Metadata {
        let by_name = self.by_name.read().unwrap_or_else(|p| p.into_inner());
        let per_metric = per_metric.unwrap_or(usize::MAX);
        let mut names: Vec<&String> = match metric {
            Some(m) => by_name.get_key_value(m).map(|(k, _)| k).into_iter().collect(),
            None => by_name.keys().collect(),
        };
        names.sort();
        names
            .into_iter()
            .take(limit.unwrap_or(usize::MAX))
            .map(|name| (name.clone(), by_name[name].iter().take(per_metric).cloned().collect()))
            .collect::<BTreeMap<_, _>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(name: &str, kind: i32, help: &str) -> remote_write::MetricMetadata {
        remote_write::MetricMetadata {
            r#type: kind,
            metric_family_name: name.into(),
            help: help.into(),
            unit: String::new(),
        }
    }

    #[test]
    fn metadata_is_kept_bounded_and_queried_as_prometheus_does() {
        let store = MetadataStore::default();
        store.observe(vec![
            described("http_requests_total", 1, "Requests."),
            described("up", 2, "Up."),
            described("not a name", 2, "x"),
            described("long", 2, &"é".repeat(MAX_HELP_BYTES)),
        ]);
        store.observe(vec![described("up", 2, "Up."), described("up", 2, "Up, newer.")]);
        let all = store.query(None, None, None);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["http_requests_total", "long", "up"]);
        assert_eq!(all["http_requests_total"][0].kind, "counter");
        assert_eq!(all["up"].iter().map(|m| m.help.as_str()).collect::<Vec<_>>(), ["Up, newer.", "Up."]);
        assert!(all["long"][0].help.len() <= MAX_HELP_BYTES, "cut on a character boundary");
        assert_eq!(store.query(Some("up"), None, Some(1))["up"].len(), 1);
        assert!(store.query(Some("nope"), None, None).is_empty());
        assert_eq!(store.query(None, Some(1), None).len(), 1);
    }
}
