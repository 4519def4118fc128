//! SLOs: Sloth `prometheus/v1` specs turned into Prometheus rules (`generate`), which the
//! collector evaluates like any rule file, and the state of every SLO read back from what
//! those rules record (`state`).

#[cfg(test)]
mod burn_tests;
pub mod generate;
pub mod spec;
pub mod state;

use std::path::{Path, PathBuf};

use crate::rules::{FileKind, LoadError};

pub use generate::Options;
pub use state::{SloDef, SloState};

use hale_core::ConfigError;

/// A loaded SLO file: its specs and the rules they become.
pub struct SloFile {
    pub path: PathBuf,
    pub specs: Vec<spec::Spec>,
    pub rules: String,
}

pub fn load(path: &Path, options: Options) -> Result<SloFile, LoadError> {
    let source = LoadError::read(FileKind::Slo, path)?;
    let specs =
        parse(&source).map_err(|error| LoadError::Invalid { kind: FileKind::Slo, path: path.to_path_buf(), error })?;
    let rules = generate::prometheus_rules(&specs, options);
    Ok(SloFile { path: path.to_path_buf(), specs, rules })
}

/// Reads every spec of a file and checks it, with the rules each becomes: a spec
/// `hale slo check` passes is one the collector runs (templates in its labels and
/// annotations included). Data flows one way: spec → generated rules → the rule check.
pub fn parse(source: &str) -> Result<Vec<spec::Spec>, ConfigError> {
    let mut specs = Vec::new();
    for (line, spec) in spec::documents(source)? {
        let rules = generate::prometheus_rules(std::slice::from_ref(&spec), Options::default());
        if let Err(e) = crate::rules::RuleFile::parse(&rules) {
            return Err(ConfigError {
                line: Some(line),
                message: format!("service {:?}: its generated rules do not load: {}", spec.service, e.message),
            });
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_whose_rules_do_not_load_is_refused_at_its_document() {
        let good = spec::tests::SPEC;
        assert_eq!(parse(good).expect("good").len(), 1);
        let templated = good.replace("category: availability", "category: \"{{ $labels.x\"");
        let e = parse(&templated).expect_err("bad template");
        assert!(e.message.contains("not closed"), "{e}");
        assert_eq!(e.line, Some(1), "{e}");
        let second = format!("{good}---\n{}", templated.replace("orders", "gateway"));
        assert_eq!(parse(&second).expect_err("second").line, Some(good.lines().count() + 2));
    }
}
