//! # hale-healer
//!
//! Turns alerts into repairs an on-call engineer would trust: a policy says what to do
//! for which alert, safety checks say whether to do it now, every action is verified
//! against the condition that triggered it, and every decision is one line of an
//! append-only audit log.
//!
//! Data flows one way: the intake (`api`) stores alerts durably in the `state`, the
//! `engine` decides them in order and runs actions through the `clients` (agents,
//! collector), recording every step in the `audit` log.

pub mod api;
pub mod audit;
pub mod clients;
pub mod engine;
pub mod ha;
pub mod metrics;
pub mod policy;
pub mod replay;
mod run;
pub mod safety;
pub mod state;

pub use run::{HealerConfig, HealerError, run};
