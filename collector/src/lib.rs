//! # hale-collector
//!
//! The collector: receives what agents ship, keeps it safely (a write-ahead log, then an
//! in-memory head of Gorilla-compressed chunks), and answers queries.
//!
//! Modules, in the direction data flows (each uses only those before it):
//! `store` (WAL, head, chunks, index) → `query` (PromQL) → `logs`, `sources`
//! (staleness of silent senders), `cluster` (the cluster view) → `rules` (rule files,
//! evaluation, the published view) → `slo` (Sloth specs → generated rules, SLO state) →
//! `notify` (dispatch, silences, outbox) → `telemetry` (self-metrics counted while
//! serving) → `state` (the shared state) → `api` (HTTP, one module per endpoint family)
//! → `run` (start, housekeeping, stop). `config` reads `collector.toml`.

pub mod api;
pub mod batch_ids;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod exemplars;
pub mod forward;
pub mod logql;
pub mod logs;
pub mod metadata;
pub mod notify;
pub mod otlp_scan;
pub mod parallel;
pub mod query;
pub mod remote;
pub mod rules;
mod run;
pub mod server_info;
pub mod shared_str;
pub mod slo;
pub mod sources;
pub mod spanmetrics;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod traces;

pub use run::{CollectorConfig, CollectorError, run};
