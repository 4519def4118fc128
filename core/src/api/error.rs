//! The error answer the healer, the node agents' actuator and the shop share, so one
//! reader (hale-client's) understands all three.

use serde::{Deserialize, Serialize};

/// The error answer of the healer, the node agents' actuator and the shop:
/// `{"error": {"code", "message"}}`, a short machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The `error` of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `not_found`, `unauthorized`, `bad_payload`, …
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::round_trip;

    #[test]
    fn an_error_body_round_trips_and_parses_as_the_servers_write_it() {
        let served = r#"{"error":{"code":"not_found","message":"no action act-1"}}"#;
        let error: ErrorBody = serde_json::from_str(served).expect("error");
        assert_eq!(error, ErrorBody::new("not_found", "no action act-1"));
        round_trip(&error);
        assert_eq!(serde_json::to_string(&error).expect("json"), served);
    }
}
