//! What the dashboard knows about its cluster beyond the APIs: where everything listens,
//! the demo logins, where the admin token is, the data dir. `hale up` prints it once
//! before the dashboard takes the screen, so the dashboard shows it again (`i`, `:info`):
//! a new user's first question is the shop's URL and how to log in.

/// Given by the binary (from the data dir's cluster.toml, or the flags), drawn by the
/// info view. No `Debug`: it holds the demo passwords.
#[derive(Clone, Default, PartialEq)]
pub struct ClusterInfo {
    /// The shop's entry point, when the data dir says it.
    pub gateway: Option<String>,
    pub collector: String,
    pub healer: String,
    /// `(node, the agent's URL)`.
    pub agents: Vec<(String, String)>,
    /// `(instance, URL, node and role)`, the gateway left out.
    pub replicas: Vec<(String, String, String)>,
    /// `(username, password)` of the demo accounts.
    pub logins: Vec<(String, String)>,
    /// The data dir whose cluster.toml holds the tokens (secrets.admin_token).
    pub data_dir: Option<String>,
    /// What the load generator sends, if it runs.
    pub load: Option<String>,
}
