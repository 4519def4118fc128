//! A virtual network of hosts on one Linux machine, for running Hale's demo so that
//! every message between nodes crosses a network that can fail.
//!
//! Each host is a network namespace with one interface, `eth0`: a TAP device whose other
//! end is a file descriptor held by a userspace switch ([`switch`]). The switch learns
//! MAC addresses like a bridge and, on command, cuts hosts off from each other, delays
//! and drops their frames ([`links`]) — netem's job, done in userspace because many
//! kernels (containers, microVMs such as the one CI runs in) ship without `sch_netem`.
//! Nothing routes out: the namespaces have no default route and no link to the host's
//! own network, so traffic never leaves the addresses the lab gives out.
//!
//! Namespaces are named `hale-<owner pid>-<host>`; a lab whose owner died (even by
//! kill -9) is removed by the next [`Lab::create`], processes inside it first.
//!
//! Namespaces are managed with iproute2's `ip` (as every admin would); the data path is
//! this crate's own.

pub mod fabric;
pub mod lab;
pub mod links;
pub mod ns;
pub mod switch;
pub mod tap;

pub use lab::{Host, Lab, LabFile};
pub use links::{LinkCommand, Links};

/// What can go wrong building or steering the lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
