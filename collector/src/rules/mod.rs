//! Rules: Prometheus rule files evaluated on the collector's own PromQL engine.
//!
//! `file` reads and checks rule files, `template` renders alert labels and annotations,
//! `eval` runs a group at one instant (recording rules write back, alerting rules keep
//! their alerts' state), `manager` runs groups on their intervals and publishes the result
//! to the API and to notifiers.

pub mod eval;
pub mod file;
pub mod manager;
pub mod template;

pub use eval::{Alert, AlertState, GroupRunner, LabelSet};
pub use file::RuleFile;
pub use manager::{AlertsUpdate, FileKind, LoadError, RulesView};
