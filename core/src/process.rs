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
