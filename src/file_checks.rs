//! `hale rules check`, `hale slo check|export` and `hale policies check`: the files the
//! collector and the healer load, checked before they are deployed; every error with its
//! file and line.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct RulesCommand {
    #[command(subcommand)]
    which: RulesWhich,
}

#[derive(clap::Subcommand)]
enum RulesWhich {
    /// Check rule files: syntax, PromQL, durations, templates; errors with their line.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct SloCommand {
    #[command(subcommand)]
    which: SloWhich,
}

#[derive(clap::Subcommand)]
enum SloWhich {
    /// Check SLO spec files, errors with their line.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the Prometheus recording and alerting rules of a spec file.
    Export {
        /// Only `prometheus` (rule files for Prometheus, promtool-clean).
        #[arg(long, default_value = "prometheus")]
        format: String,
        /// Multiply windows by this (1 in production).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// An alert window needs at least this many events (0: no guard).
        #[arg(long, default_value_t = 0)]
        min_events: u64,
        file: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct PoliciesCommand {
    #[command(subcommand)]
    which: PoliciesWhich,
}

#[derive(clap::Subcommand)]
enum PoliciesWhich {
    /// Check policy files, errors with their line; with `--inventory`, also that every
    /// action is one the inventory's executors can do.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The healer's inventory (healer.toml) the policies will run with.
        #[arg(long, value_name = "FILE")]
        inventory: Option<PathBuf>,
    },
}

/// `hale rules check`.
pub fn rules(command: RulesCommand) -> Result<()> {
    let RulesWhich::Check { files } = command.which;
    check_files(&files, "rule", hale_collector::rules::RuleFile::parse, |file| {
        let rules: Vec<_> = file.groups.iter().flat_map(|g| &g.rules).collect();
        let alerting = rules.iter().filter(|r| r.alert.is_some()).count();
        format!(
            "{} groups, {} rules ({} recording, {alerting} alerting)",
            file.groups.len(),
            rules.len(),
            rules.len() - alerting
        )
    })
}

/// `hale slo check` and `hale slo export`.
pub fn slo(command: SloCommand) -> Result<()> {
    match command.which {
        SloWhich::Check { files } => check_files(&files, "SLO", hale_collector::slo::parse, |specs| {
            let slos: usize = specs.iter().map(|s| s.slos.len()).sum();
            format!("{} services, {slos} SLOs", specs.len())
        }),
        SloWhich::Export { format, time_scale, min_events, file } => {
            if format != "prometheus" {
                bail!("--format {format:?}: only `prometheus` is supported");
            }
            if !(time_scale > 0.0 && time_scale <= 1.0) {
                bail!("--time-scale must be more than 0 and at most 1");
            }
            let loaded = hale_collector::slo::load(&file, hale_collector::slo::Options { time_scale, min_events })?;
            print!("{}", loaded.rules);
            Ok(())
        }
    }
}

/// `hale policies check`.
pub fn policies(command: PoliciesCommand) -> Result<()> {
    let PoliciesWhich::Check { files, inventory } = command.which;
    let inventory = match &inventory {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let parsed = hale_healer::inventory::Inventory::parse(&text).map_err(|e| match e.line {
                Some(line) => anyhow::anyhow!("{}:{line}: {}", path.display(), e.message),
                None => anyhow::anyhow!("{}: {}", path.display(), e.message),
            })?;
            Some(parsed)
        }
        None => None,
    };
    let parse = |source: &str| {
        let file = hale_healer::policy::PolicyFile::parse(source)?;
        if let Some(inventory) = &inventory {
            hale_healer::executor::check_policies(&file, inventory)
                .map_err(|message| hale_core::ConfigError { line: None, message })?;
        }
        Ok(file)
    };
    check_files(&files, "policy", parse, |f| format!("{} policies", f.policies.len()))
}

/// Every file checked; each error printed as `FILE:LINE: message`, each good file with
/// `summary` of it.
fn check_files<T>(
    files: &[PathBuf],
    what: &str,
    parse: impl Fn(&str) -> Result<T, hale_core::ConfigError>,
    summary: impl Fn(&T) -> String,
) -> Result<()> {
    let mut failed = 0;
    for path in files {
        let result = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display())).and_then(|source| {
            parse(&source).map_err(|e| match e.line {
                Some(line) => format!("{}:{line}: {}", path.display(), e.message),
                None => format!("{}: {}", path.display(), e.message),
            })
        });
        match result {
            Ok(parsed) => println!("{}: OK, {}", path.display(), summary(&parsed)),
            Err(message) => {
                eprintln!("{message}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} {what} files have errors; fix the lines above and run the check again", files.len());
    }
    Ok(())
}
