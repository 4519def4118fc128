//! # hale-core
//!
//! The vocabulary every Hale component shares, and nothing else:
//! - the cluster topology (`cluster.toml`, [`ClusterConfig`]) and the process specs
//!   derived from it ([`ProcessSpec`]);
//! - every JSON contract between components ([`api`], and the cluster view with its
//!   freshness rule in [`cluster`]), so a server and its clients share one definition;
//! - the metric model ([`metrics`]), its text formats ([`exposition`]) and remote_write
//!   ([`remote_write`]);
//! - the small rules every component applies the same way: the bearer check ([`auth`]),
//!   webhook signatures ([`webhook`]), the clock ([`time`]), line-numbered config errors
//!   ([`ConfigError`]).
//!
//! It does no network and no disk I/O, so every other crate can depend on it without
//! dragging a runtime along; the disk helpers live in `hale-fs`, the HTTP clients in
//! `hale-client`.
//!
//! ```
//! let cluster = hale_core::ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).unwrap();
//! let gateway = cluster.instances().into_iter().find(|i| i.service == hale_core::ServiceKind::Gateway).unwrap();
//! assert_eq!(gateway.listen.to_string(), "127.0.0.1:8080");
//! ```

pub mod api;
pub mod auth;
pub mod cluster;
mod error;
pub mod exposition;
pub mod metrics;
mod process;
pub mod remote_write;
pub mod secret;
pub mod time;
pub mod token;
mod topology;
pub mod webhook;

pub use error::{ConfigError, find_key_line, line_of};
pub use process::{ProcessSpec, not_inherited, withheld_from_children};
pub use topology::{
    ClientConfig, ClusterConfig, CollectorPlacement, DemoLogin, HealerPlacement, Instance, NodeConfig, Role, Secrets,
    ServiceConfig, ServiceKind, UserConfig,
};

/// The cluster `hale up` runs when no `--config` is given (config/cluster.toml).
pub const DEFAULT_CLUSTER_TOML: &str = include_str!("../../config/cluster.toml");
