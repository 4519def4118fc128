//! A running cluster's `cluster.toml`, as the components and commands that join it read it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hale_core::ClusterConfig;

/// Parses `text` (read from `path`) as the cluster.toml of a cluster that runs, or is about
/// to: its `[secrets]` must be in it. Without them the parser would hand this process
/// random secrets of its own, which match no other component's (every token and signature
/// refused), so that is refused here with what to do instead.
pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig> {
    let cluster = ClusterConfig::parse(text).with_context(|| path.display().to_string())?;
    if cluster.secrets.generated {
        bail!(
            "{} has no [secrets]: every component of a cluster must share them. Point this at the \
             cluster.toml `hale up` wrote in its data dir (it has them), or add a [secrets] table",
            path.display()
        );
    }
    Ok(cluster)
}

/// Reads and parses `path` with [`parse`]; a file others can read is warned about (it
/// holds the cluster's secrets).
pub fn read(path: &Path) -> Result<ClusterConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(warning) = hale_core::token::readable_by_others(path) {
        tracing::warn!("{warning}: it holds the cluster's secrets");
    }
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_file_without_secrets_is_refused_with_the_way_on() {
        let path = Path::new("config/cluster.toml");
        let err = parse(hale_core::DEFAULT_CLUSTER_TOML, path).expect_err("no [secrets]");
        assert!(err.to_string().contains("has no [secrets]") && err.to_string().contains("hale up"), "{err}");
        let mut with = ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("parse");
        with.secrets.generated = false;
        let kept = parse(&with.to_toml(), path).expect("a file with its secrets");
        assert!(kept.secrets == with.secrets);
    }
}
