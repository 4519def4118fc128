//! `hale load`: open-loop shop traffic through the gateway ([`hale_shop::load`]), and its
//! summary.

use anyhow::{Context, Result};

/// No `Debug`: it holds a password.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// The shop gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Requests per second at the gateway (journeys start at the pace that gives it).
    #[arg(long, default_value_t = 20)]
    rps: u32,
    /// How long to run (30s, 5m, 1h); 0 runs until interrupted.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Weights of the journeys, such as browse=50,search=35,buy=15.
    #[arg(long, default_value = "browse=50,search=35,buy=15")]
    mix: String,
    /// Shop account the traffic logs in as.
    #[arg(long, default_value = "shopper")]
    username: String,
    /// Its password.
    #[arg(long, env = "HALE_LOAD_PASSWORD", default_value = "hale-shopper", hide_env_values = true)]
    password: String,
    /// Print a status line every 10 s instead of a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Requests allowed in flight at once.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
}

/// How long `--duration` says: `None` for 0 (until interrupted).
fn duration(text: &str) -> Result<Option<std::time::Duration>> {
    match text.trim() {
        "0" | "" => Ok(None),
        d => Ok(Some(humantime::parse_duration(d).with_context(|| format!("--duration {d:?}: use 30s, 5m or 1h"))?)),
    }
}

/// `hale load`.
pub async fn run(args: LoadArgs) -> Result<()> {
    let config = hale_shop::load::LoadConfig {
        gateway: args.gateway.trim_end_matches('/').to_string(),
        rps: args.rps,
        duration: duration(&args.duration)?,
        mix: args.mix.parse()?,
        username: args.username,
        password: args.password.into(),
        progress: !args.no_progress,
        max_in_flight: args.max_in_flight,
    };
    let summary = hale_shop::load::run(config, crate::shutdown::requested()).await?;
    print!("{}", summary.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn load_duration_parses() {
        assert_eq!(duration("5m").expect("5m"), Some(Duration::from_secs(300)));
        assert_eq!(duration("0").expect("0"), None);
        assert!(duration("soon").is_err());
    }
}
