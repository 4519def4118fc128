//! # hale-agent
//!
//! The node agent: one per host. It collects host metrics, scrapes and probes the
//! services on its node, tails their logs, ships everything through disk queues to the
//! collector, and supervises the node's replicas behind a token-protected actuator API.

pub mod adopted;
mod agent;
pub mod api;
pub mod blackbox;
pub mod config;
pub mod host;
mod jobs;
pub mod kubernetes_sd;
mod logs;
pub mod metadata;
pub mod queue;
pub mod relabel;
mod run;
pub mod scrape;
pub mod ship;
pub mod staleness;
pub mod supervise;
pub mod tail;
pub mod targets;
pub mod telemetry;

pub use agent::{Agent, AgentError};
pub use run::{run, runtime};
