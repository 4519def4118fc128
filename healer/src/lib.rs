//! # hale-healer
//!
//! Turns alerts into repairs an on-call engineer would trust: a policy says what to do
//! for which alert, safety checks say whether to do it now, every action is verified
//! against the condition that triggered it, and every decision is one line of an
//! append-only audit log.
//!
//! Data flows one way: the intake (`api`) stores alerts durably in the `state`, the
//! `engine` decides them in order (the `policy` says what, `safety` whether now) and runs
//! actions through the `clients` (the collector, the agents and the gateway, over
//! `hale-client`'s typed clients), recording every step in the `audit` log and its
//! `metrics`. Every JSON it serves or sends is a type of `hale_core::api`.

pub mod api;
pub mod audit;
pub mod clients;
pub mod engine;
pub mod executor;
pub mod failover;
pub mod ha;
pub mod inventory;
pub mod kubernetes;
pub mod metrics;
pub mod policy;
pub mod replay;
mod run;
pub mod safety;
pub mod state;

pub use run::{EtcdTls, HealerConfig, HealerError, kubernetes_client, run};
