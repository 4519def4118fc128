//! # hale-collector
//!
//! The collector: receives what agents ship, keeps it safely (a write-ahead log, then an
//! in-memory head of Gorilla-compressed chunks), and answers queries.

pub mod api;
pub mod cluster;
pub mod config;
pub mod logs;
pub mod notify;
pub mod query;
pub mod rules;
mod run;
pub mod slo;
pub mod sources;
pub mod state;
pub mod store;
pub mod telemetry;

pub use run::{CollectorConfig, CollectorError, run};
