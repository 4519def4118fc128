//! Where each command's own log lines go: stderr for the components, a file beside the
//! others while `hale up`'s dashboard owns the screen, JSON lines for a shop replica (its
//! agent tails and ships them). `HALE_LOG` overrides the level everywhere.

use std::path::Path;

use anyhow::{Context, Result};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use hale_serve::process::log_filter as filter;
pub use hale_serve::process::log_to_stderr as to_stderr;

/// Human-readable logs appended to `path` (its folder made if need be).
pub fn to_file(default: &str, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let _ = tracing_subscriber::registry()
        .with(filter(default))
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(std::sync::Mutex::new(file)))
        .try_init();
    Ok(())
}

/// Hale's own components: human-readable logs on stderr, and their spans to a tracing
/// pipeline when OpenTelemetry's variables name an endpoint (see [`hale_trace::Config`]);
/// the pipeline is returned, to keep (dropping it flushes what is queued).
pub fn to_stderr_traced(default: &str, service: &str, instance: &str, ratio: f64) -> Option<hale_trace::Tracing> {
    let tracing = hale_trace::Config::from_env(service, instance)
        .map(|mut config| {
            // The variable, when set, has the last word.
            if std::env::var_os("OTEL_TRACES_SAMPLER_ARG").is_none() {
                config.ratio = ratio;
            }
            config
        })
        .map(hale_trace::Tracing::start);
    let spans = tracing.as_ref().map(hale_trace::Tracing::layer);
    let _ = tracing_subscriber::registry()
        .with(filter(default))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(spans)
        .try_init();
    tracing
}

/// A shop replica's JSON-lines log, at info level, and its spans to `tracing`'s pipeline
/// when it has one.
pub fn to_json_lines(path: &Path, service: &str, instance: &str, tracing: Option<&hale_trace::Tracing>) -> Result<()> {
    let layer = hale_shop::logging::JsonLines::open(path, service, instance)
        .with_context(|| format!("opening log {}", path.display()))?;
    let spans = tracing.map(hale_trace::Tracing::layer);
    let _ = tracing_subscriber::registry().with(filter("info")).with(layer).with(spans).try_init();
    Ok(())
}
