//! Scrape jobs as Prometheus configures them (`[[scrape_configs]]`): static targets and
//! `file_sd` files, turned into targets by Prometheus's rules — each address starts with
//! `__address__`, `__scheme__`, `__metrics_path__`, `__scrape_interval__`,
//! `__scrape_timeout__`, `job` and its group's labels (and `__meta_filepath` for a file),
//! goes through `relabel_configs`, gets `instance` from `__address__` when it has none,
//! and loses every label starting with `__`. Hale's own labels come on top where the
//! relabelling left them unset: `service` (the job) and `node` (the agent's).
//!
//! `file_sd` files are JSON or YAML lists of `{targets, labels}`, named by globs in
//! their last path element, read again when they change; a file that does not parse
//! keeps the targets it gave before, and says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::relabel::{self, LabelSet, RelabelConfig, Rule};

/// A group of targets with labels in common (static or from a file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Files of target groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Paths; the last element may be a glob (`targets/*.json`).
    pub files: Vec<PathBuf>,
}

fn default_scheme() -> String {
    "http".into()
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

/// One scrape job, with Prometheus's field names (durations as `"15s"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeJob {
    pub job_name: String,
    /// Defaults to the agent's `scrape_interval_ms`.
    #[serde(default, with = "opt_duration")]
    pub scrape_interval: Option<Duration>,
    /// Defaults to the agent's `timeout_ms`, and never past the interval.
    #[serde(default, with = "opt_duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// Keep the target's own labels where they clash with the job's (otherwise theirs are
    /// kept as `exported_<name>`).
    #[serde(default)]
    pub honor_labels: bool,
    /// A scrape with more samples than this fails (0: no limit).
    #[serde(default)]
    pub sample_limit: usize,
    /// A scrape whose body is larger fails (0: the agent's 16 MiB).
    #[serde(default)]
    pub body_size_limit: usize,
    #[serde(default)]
    pub static_configs: Vec<TargetGroup>,
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// The pods of the agent's node, through the Kubernetes API ([`crate::kubernetes_sd`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes_sd_configs: Vec<crate::kubernetes_sd::KubernetesSdConfig>,
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

/// `Option<Duration>` as Prometheus writes durations (`15s`, `1m30s`).
pub(crate) mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A job checked and compiled.
#[derive(Debug, Clone)]
pub struct Job {
    pub config: ScrapeJob,
    pub interval: Duration,
    pub timeout: Duration,
    relabel: Vec<Rule>,
    pub metric_relabel: Vec<Rule>,
}

impl ScrapeJob {
    /// Checks the job (its rules compile, its durations make sense); `interval` and
    /// `timeout` are the agent's defaults.
    pub fn compile(&self, interval: Duration, timeout: Duration) -> Result<Job, String> {
        let what = |e: String| format!("scrape job {:?}: {e}", self.job_name);
        if self.job_name.is_empty() {
            return Err("a scrape job needs a job_name".into());
        }
        if !matches!(self.scheme.as_str(), "http" | "https") {
            return Err(what(format!("scheme {:?} is neither http nor https", self.scheme)));
        }
        if !self.metrics_path.starts_with('/') {
            return Err(what(format!("metrics_path {:?} must start with /", self.metrics_path)));
        }
        let interval = self.scrape_interval.unwrap_or(interval);
        let timeout = self.scrape_timeout.unwrap_or(timeout.min(interval));
        if interval.is_zero() || timeout.is_zero() || timeout > interval {
            return Err(what("scrape_timeout must be positive and at most scrape_interval".into()));
        }
        let compile = |rules: &[RelabelConfig]| rules.iter().map(RelabelConfig::compile).collect::<Result<Vec<_>, _>>();
        Ok(Job {
            config: self.clone(),
            interval,
            timeout,
            relabel: compile(&self.relabel_configs).map_err(what)?,
            metric_relabel: compile(&self.metric_relabel_configs).map_err(what)?,
        })
    }
}

/// What a target is scraped as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub job: String,
    /// `scheme://address/path`.
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// The labels every scraped series gets (`job`, `instance`, the group's and the
    /// relabelling's, `service` and `node`).
    pub labels: LabelSet,
}

fn prometheus_duration(d: Duration) -> String {
    // Prometheus writes `1m`, `15s`, `500ms`.
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl Job {
    /// An address's labels before relabelling, as Prometheus starts them.
    pub fn discovered(&self, group: &BTreeMap<String, String>, address: &str) -> LabelSet {
        let mut labels: LabelSet = group.clone();
        for (name, value) in [
            ("__address__", address.to_string()),
            ("__scheme__", self.config.scheme.clone()),
            ("__metrics_path__", self.config.metrics_path.clone()),
            ("__scrape_interval__", prometheus_duration(self.interval)),
            ("__scrape_timeout__", prometheus_duration(self.timeout)),
            ("job", self.config.job_name.clone()),
        ] {
            labels.entry(name.to_string()).or_insert(value);
        }
        labels
    }

    /// The target `discovered` labels make after relabelling, or `None` if a rule drops
    /// it (or it is left without an address). `node` is the agent's.
    pub fn target(&self, discovered: LabelSet, node: &str) -> Option<ScrapeTarget> {
        let mut labels = relabel::apply(&self.relabel, discovered)?;
        let address = labels.get("__address__").filter(|a| !a.is_empty())?.clone();
        labels.entry("instance".into()).or_insert_with(|| address.clone());
        let get = |labels: &LabelSet, name: &str| labels.get(name).cloned().unwrap_or_default();
        // As Prometheus: a target whose relabelled interval or timeout is not a duration,
        // is zero, or has the timeout past the interval is not created.
        let duration = |name: &str| humantime::parse_duration(&get(&labels, name)).ok().filter(|d| !d.is_zero());
        let (Some(interval), Some(timeout)) = (duration("__scrape_interval__"), duration("__scrape_timeout__")) else {
            tracing::warn!(job = %self.config.job_name, %address, "a target's relabelled scrape interval or timeout is not a positive duration; left out");
            return None;
        };
        if timeout > interval || address.contains('/') {
            tracing::warn!(job = %self.config.job_name, %address, "a target's timeout is past its interval, or its address is not host:port; left out");
            return None;
        }
        let url = format!("{}://{address}{}", get(&labels, "__scheme__"), get(&labels, "__metrics_path__"));
        labels.retain(|name, _| !name.starts_with("__"));
        labels.entry("service".into()).or_insert_with(|| self.config.job_name.clone());
        labels.entry("node".into()).or_insert_with(|| node.to_string());
        Some(ScrapeTarget { job: self.config.job_name.clone(), url, interval, timeout, labels })
    }

    /// Every target of the job: its static groups, `files`' (path → groups) and those
    /// `discovered` otherwise (Kubernetes).
    pub fn targets(
        &self,
        files: &BTreeMap<PathBuf, Vec<TargetGroup>>,
        discovered: &[TargetGroup],
        node: &str,
    ) -> Vec<ScrapeTarget> {
        let statics = self.config.static_configs.iter().chain(discovered).map(|g| (g, None));
        let from_files = files.iter().flat_map(|(path, groups)| groups.iter().map(move |g| (g, Some(path))));
        let mut out: Vec<ScrapeTarget> = Vec::new();
        for (group, path) in statics.chain(from_files) {
            for address in &group.targets {
                let mut labels = self.discovered(&group.labels, address);
                if let Some(path) = path {
                    labels.insert("__meta_filepath".into(), path.display().to_string());
                }
                if let Some(target) = self.target(labels, node)
                    && !out.iter().any(|t| t.labels == target.labels)
                {
                    out.push(target);
                }
            }
        }
        out
    }
}

/// The files a `file_sd` config names now (globs expanded), in order.
pub fn matching_files(config: &FileSdConfig) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pattern in &config.files {
        match glob::glob(&pattern.display().to_string()) {
            Ok(paths) => out.extend(paths.flatten()),
            Err(e) => tracing::warn!(pattern = %pattern.display(), error = %e, "file_sd: not a valid pattern"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Parses a `file_sd` file: JSON if it ends in `.json`, YAML otherwise.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<TargetGroup>, String> {
    let is_json = path.extension().is_some_and(|e| e == "json");
    let groups: Vec<TargetGroup> = if is_json {
        serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_norway::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    for group in &groups {
        if let Some(bad) = group.labels.keys().find(|k| !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
            return Err(format!("{}: {bad:?} is not a valid label name", path.display()));
        }
    }
    Ok(groups)
}

/// What says a file changed: its modification time and length, and when it was read
/// (a file is read again at least every [`REREAD`], as Prometheus does, in case an edit
/// kept both).
type Stamp = (Option<SystemTime>, u64, std::time::Instant);

/// How often a `file_sd` file is read again even when it looks unchanged.
pub const REREAD: Duration = Duration::from_secs(300);

/// `file_sd` files as last read: each file's groups and when it was read.
#[derive(Debug, Default)]
pub struct FileSd {
    files: BTreeMap<PathBuf, (Stamp, Vec<TargetGroup>)>,
    /// Reads that failed (a file that does not parse keeps its previous groups).
    pub read_errors: u64,
}

impl FileSd {
    /// Reads the files of `configs` that are new or changed since the last call, forgets
    /// those gone; returns whether anything changed.
    pub fn refresh(&mut self, configs: &[FileSdConfig]) -> bool {
        let paths: Vec<PathBuf> = configs.iter().flat_map(matching_files).collect();
        let before = self.files.len();
        self.files.retain(|path, _| paths.contains(path));
        let mut changed = self.files.len() != before;
        for path in paths {
            let meta = std::fs::metadata(&path).ok();
            let stamp =
                (meta.as_ref().and_then(|m| m.modified().ok()), meta.map_or(0, |m| m.len()), std::time::Instant::now());
            let same =
                |seen: &Stamp| seen.0 == stamp.0 && seen.0.is_some() && seen.1 == stamp.1 && seen.2.elapsed() < REREAD;
            if self.files.get(&path).is_some_and(|(seen, _)| same(seen)) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()));
            match parsed.and_then(|text| parse_file(&path, &text)) {
                Ok(groups) => {
                    changed |= self.files.get(&path).is_none_or(|(_, old)| *old != groups);
                    self.files.insert(path, (stamp, groups));
                }
                Err(e) => {
                    self.read_errors += 1;
                    tracing::warn!(error = %e, "file_sd: cannot read a targets file; keeping its previous targets");
                    // Read again once it changes.
                    let old = self.files.remove(&path).map(|(_, g)| g).unwrap_or_default();
                    self.files.insert(path, (stamp, old));
                }
            }
        }
        changed
    }

    /// The groups of the files `config` names.
    pub fn groups(&self, configs: &[FileSdConfig]) -> BTreeMap<PathBuf, Vec<TargetGroup>> {
        let wanted: Vec<PathBuf> = configs.iter().flat_map(matching_files).collect();
        self.files.iter().filter(|(p, _)| wanted.contains(p)).map(|(p, (_, g))| (p.clone(), g.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(toml: &str) -> Job {
        toml::from_str::<ScrapeJob>(toml)
            .expect("parses")
            .compile(Duration::from_secs(10), Duration::from_secs(2))
            .expect("valid")
    }

    #[test]
    fn targets_get_prometheus_labels_then_hales() {
        let j = job(r#"job_name = "api"
scrape_interval = "30s"
static_configs = [{ targets = ["10.0.0.1:8080", "10.0.0.2:8080"], labels = { env = "prod" } }]
relabel_configs = [
  { source_labels = ["__address__"], regex = "10\\.0\\.0\\.2:.*", action = "drop" },
  { source_labels = ["__address__"], regex = "([^:]+):.*", target_label = "host" },
]"#);
        let targets = j.targets(&BTreeMap::new(), &[], "node-1");
        assert_eq!(targets.len(), 1);
        let t = &targets[0];
        assert_eq!(t.url, "http://10.0.0.1:8080/metrics");
        assert_eq!(t.interval, Duration::from_secs(30));
        let labels: Vec<(&str, &str)> = t.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("env", "prod"),
                ("host", "10.0.0.1"),
                ("instance", "10.0.0.1:8080"),
                ("job", "api"),
                ("node", "node-1"),
                ("service", "api")
            ]
        );
    }

    #[test]
    fn file_sd_reads_json_and_yaml_follows_changes_and_keeps_targets_of_a_broken_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let json = dir.path().join("a.json");
        std::fs::write(&json, r#"[{"targets": ["h1:1"], "labels": {"team": "x"}}]"#).expect("write");
        std::fs::write(dir.path().join("b.yml"), "- targets: [h2:2]\n").expect("write");
        let configs = vec![FileSdConfig { files: vec![dir.path().join("*.json"), dir.path().join("*.yml")] }];
        let mut sd = FileSd::default();
        assert!(sd.refresh(&configs));
        let j = job("job_name = \"files\"");
        let addresses = |sd: &FileSd| {
            j.targets(&sd.groups(&configs), &[], "n")
                .into_iter()
                .map(|t| t.labels["instance"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(addresses(&sd), ["h1:1", "h2:2"]);
        assert!(!sd.refresh(&configs), "nothing changed");
        // A broken edit keeps the file's targets; a good one replaces them; a new file counts.
        std::fs::write(&json, "[{").expect("write");
        sd.refresh(&configs);
        assert_eq!(sd.read_errors, 1);
        assert_eq!(addresses(&sd), ["h1:1", "h2:2"]);
        std::fs::write(&json, r#"[{"targets": ["h3:3"]}]"#).expect("write");
        std::fs::write(dir.path().join("c.json"), r#"[{"targets": ["h4:4"]}]"#).expect("write");
        assert!(sd.refresh(&configs));
        assert_eq!(addresses(&sd), ["h3:3", "h2:2", "h4:4"], "in path order");
        std::fs::remove_file(dir.path().join("b.yml")).expect("rm");
        assert!(sd.refresh(&configs));
        assert_eq!(addresses(&sd), ["h3:3", "h4:4"]);
    }
}
