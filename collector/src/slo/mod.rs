//! SLOs: Sloth `prometheus/v1` specs turned into Prometheus rules (`generate`), which the
//! collector evaluates like any rule file, and the state of every SLO read back from what
//! those rules record (`state`).

#[cfg(test)]
mod burn_tests;
pub mod generate;
pub mod spec;
pub mod state;

use std::path::{Path, PathBuf};

pub use generate::Options;
pub use state::{SloDef, SloState};

use hale_core::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum SloError {
    // The causes are part of the message (not `source`), so they are printed once.
    #[error("reading SLO file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("SLO file {path}: {error}; check it with `hale slo check {path}`")]
    Invalid { path: PathBuf, error: ConfigError },
}

/// A loaded SLO file: its specs and the rules they become.
pub struct SloFile {
    pub path: PathBuf,
    pub specs: Vec<spec::Spec>,
    pub rules: String,
}

pub fn load(path: &Path, options: Options) -> Result<SloFile, SloError> {
    let source = std::fs::read_to_string(path).map_err(|error| SloError::Read { path: path.to_path_buf(), error })?;
    let specs = spec::parse(&source).map_err(|error| SloError::Invalid { path: path.to_path_buf(), error })?;
    let rules = generate::prometheus_rules(&specs, options);
    Ok(SloFile { path: path.to_path_buf(), specs, rules })
}
