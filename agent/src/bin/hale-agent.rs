//! `hale-agent`: the node agent alone, for hosts. The same agent as `hale agent` (the
//! same flags, agent.toml and behaviour) in a binary of its own: a host maps and pages
//! in only the agent's code, which is most of what the agent's resident memory is.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use hale_agent::config::{AgentFlags, ConfigSource};

/// Hale's node agent: host metrics, scraping, probes, log tailing, durable shipping and
/// supervision. No `Debug`: it holds tokens.
#[derive(Parser)]
#[command(name = "hale-agent", version)]
struct Args {
    /// agent.toml; the flags below override it. Read again at SIGHUP or `POST /-/reload`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: AgentFlags,
    #[command(flatten)]
    tls: hale_serve::tls::TlsFlags,
    #[command(flatten)]
    client_tls: hale_client::tls::ClientTlsFlags,
}

fn main() -> ExitCode {
    // Queues, checkpoints and logs are for the agent's owner only, as with `hale`.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let Args { config, flags, tls, client_tls } = Args::parse();
    if let Err(e) = hale_client::tls::install(&client_tls) {
        eprintln!("hale-agent: {e}");
        return ExitCode::FAILURE;
    }
    let security = match tls.security() {
        Ok(security) => security,
        Err(e) => {
            eprintln!("hale-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source = ConfigSource { file: config, flags };
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hale-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match hale_agent::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hale-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    hale_serve::process::log_to_stderr("info");
    match runtime.block_on(hale_agent::run(config, source, security, hale_serve::process::stop_requested())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hale-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
