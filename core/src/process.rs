//! What it takes to start one replica ([`ProcessSpec`]): the program, its arguments, its
//! environment and where its output goes. Plain data with no runtime handles, so `hale up`
//! can build specs from the topology and an agent's supervisor can run them.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything needed to start one replica of a service, and nothing about *how* it is
/// supervised. `hale up` turns the cluster topology into these; the node agent will take
/// them over, which is why they live here and carry no runtime handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Instance name, unique in the cluster: `<service>-<n>` (`search-1`).
    pub name: String,
    /// Service the replica belongs to (`search`).
    pub service: String,
    /// Node the replica runs on (`node-1`).
    pub node: String,
    /// Address the replica listens on.
    pub listen: SocketAddr,
    /// Program to execute.
    pub program: PathBuf,
    /// Arguments, without the program itself.
    pub args: Vec<String>,
    /// Extra environment. Secrets travel here, never in `args` (which `ps` shows).
    pub env: Vec<(String, String)>,
    /// File that receives the process's stdout and stderr.
    pub output_file: PathBuf,
}

/// Variables that carry credentials: Hale's own (`HALE_*`: tokens, the webhook secret)
/// and the OpenTelemetry exporter's headers (the traces token).
fn carries_credentials(name: &str) -> bool {
    name.starts_with("HALE_")
        || matches!(
            name,
            "OTEL_EXPORTER_OTLP_HEADERS"
                | "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
                | "OTEL_EXPORTER_OTLP_LOGS_HEADERS"
                | "OTEL_EXPORTER_OTLP_METRICS_HEADERS"
        )
}

/// Of `parent`'s variable names, those a child must not inherit: every one that carries
/// a credential, unless the child is given that variable itself (`given`). A process
/// Hale starts — a replica, an operator's exec hook, a service manager's command — gets
/// only the secrets its own configuration hands it, never its parent's.
pub fn not_inherited(
    parent: impl Iterator<Item = std::ffi::OsString>,
    given: impl Fn(&str) -> bool,
) -> Vec<std::ffi::OsString> {
    parent
        .filter(|key| {
            let name = key.to_string_lossy();
            carries_credentials(&name) && !given(&name)
        })
        .collect()
}

/// [`not_inherited`] for this process's own environment.
pub fn withheld_from_children(given: impl Fn(&str) -> bool) -> Vec<std::ffi::OsString> {
    not_inherited(std::env::vars_os().map(|(k, _)| k), given)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_with_the_parent_unless_the_child_is_given_them() {
        let parent = [
            "HALE_AGENT_TOKEN",
            "HALE_WEBHOOK_SECRET",
            "HALE_LOAD_PASSWORD",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "PATH",
            "RUST_LOG",
        ];
        let removed = not_inherited(parent.iter().map(std::ffi::OsString::from), |k| k == "HALE_LOAD_PASSWORD");
        assert_eq!(removed, ["HALE_AGENT_TOKEN", "HALE_WEBHOOK_SECRET", "OTEL_EXPORTER_OTLP_HEADERS"]);
    }
}
