//! The JSON contracts between Hale's components, as serde types and nothing else (no I/O).
//!
//! The server of each API serializes these types and every client deserializes them, so
//! a field renamed on one side fails to compile (or a test) instead of reading as absent
//! on the other. Field names follow what the endpoints have always said (Prometheus's and
//! Alertmanager's camelCase where the collector mimics them, snake_case elsewhere); a
//! field a reader has always tolerated missing is `#[serde(default)]` here.
//!
//! The cluster view lives beside its freshness rule in [`crate::cluster`].
//!
//! ```
//! use hale_core::api::{AlertsData, Envelope};
//! let answer: Envelope<AlertsData> =
//!     serde_json::from_str(r#"{"status":"success","data":{"alerts":[],"groupBy":["alertname"]}}"#).unwrap();
//! assert_eq!(answer.into_data().unwrap().group_by, ["alertname"]);
//! ```

mod agent;
mod alertmanager;
mod alerts;
mod error;
mod gateway;
mod healer;
mod logs;
mod loki;
mod notify;
mod query;
mod rules;
mod server;
mod slo;
mod status;
mod traces;

pub use agent::*;
pub use alertmanager::*;
pub use alerts::*;
pub use error::*;
pub use gateway::*;
pub use healer::*;
pub use logs::*;
pub use loki::*;
pub use notify::*;
pub use query::*;
pub use rules::*;
pub use server::*;
pub use slo::*;
pub use status::*;
pub use traces::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Label names to values.
pub type Labels = BTreeMap<String, String>;

/// Whether a collector answer succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Error,
}

/// The collector's (Prometheus's) envelope: `{"status": "success", "data": …}` or
/// `{"status": "error", "errorType": …, "error": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub status: Status,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    #[serde(default, rename = "errorType", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Envelope<T> {
    /// A successful answer carrying `data`.
    pub fn success(data: T) -> Envelope<T> {
        Envelope { status: Status::Success, data: Some(data), error_type: None, error: None }
    }

    /// The data of a successful answer, else the server's message.
    pub fn into_data(self) -> Result<T, String> {
        match (self.status, self.data) {
            (Status::Success, Some(data)) => Ok(data),
            _ => Err(self.error.unwrap_or_else(|| "no message".into())),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Serializes, reads back, and checks nothing changed.
    pub(crate) fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
        let text = serde_json::to_string(value).expect("valid");
        let back: T = serde_json::from_str(&text).expect("valid");
        assert_eq!(&back, value, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::round_trip;
    use super::*;

    #[test]
    fn an_error_answer_gives_its_message() {
        let served = r#"{"status":"error","errorType":"bad_data","error":"no such thing"}"#;
        let parsed: Envelope<AlertsData> = serde_json::from_str(served).expect("valid");
        assert_eq!(parsed.error_type.as_deref(), Some("bad_data"));
        round_trip(&parsed);
        assert_eq!(parsed.into_data().expect_err("an error"), "no such thing");
    }
}
