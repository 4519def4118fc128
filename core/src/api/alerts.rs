//! Alerts as the collector's Prometheus-compatible API shows them, and silences.

use serde::{Deserialize, Serialize};

use super::Labels;

/// An alert's state, as Prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

/// One pending or firing alert (`/api/v1/alerts`, and each alerting rule's `alerts` in
/// `/api/v1/rules`): Prometheus's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlert {
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub state: AlertState,
    /// RFC 3339.
    #[serde(default)]
    pub active_at: String,
    /// The value that made it fire, as Go formats it (`1e+00`).
    #[serde(default)]
    pub value: String,
}

impl ActiveAlert {
    /// Whether every one of `labels` has the same value on this alert.
    pub fn has_labels<'a>(&self, labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> bool {
        labels.into_iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// `GET /api/v1/alerts`'s `data`: every pending and firing alert and, beside Prometheus's
/// shape, `groupBy`, the labels notifications group them by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsData {
    pub alerts: Vec<ActiveAlert>,
    #[serde(default)]
    pub group_by: Vec<String>,
}

/// One matcher of a silence: Alertmanager's v2 `matchers[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    /// `name="value"`: equality, not a regex.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> SilenceMatcher {
        SilenceMatcher { name: name.into(), value: value.into(), is_regex: false, is_equal: true }
    }

    /// `=`, `!=`, `=~` or `!~`.
    pub fn op(&self) -> &'static str {
        match (self.is_equal, self.is_regex) {
            (true, false) => "=",
            (false, false) => "!=",
            (true, true) => "=~",
            (false, true) => "!~",
        }
    }

    /// Parses `name=value`, `name!=value`, `name=~regex`, `name!~regex` (the CLI's form).
    pub fn parse(text: &str) -> Result<SilenceMatcher, String> {
        for (op, is_regex, is_equal) in
            [("=~", true, true), ("!~", true, false), ("!=", false, false), ("=", false, true)]
        {
            if let Some((name, value)) = text.split_once(op) {
                let value = value.trim().trim_matches('"').to_string();
                return Ok(SilenceMatcher { name: name.trim().to_string(), value, is_regex, is_equal });
            }
        }
        Err(format!("{text:?} is not a matcher: write name=value, name!=value, name=~regex or name!~regex"))
    }
}

/// Where a silence stands in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Active,
    Pending,
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Active => "active",
            SilenceState::Pending => "pending",
            SilenceState::Expired => "expired",
        }
    }
}

/// A silence's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceStatus {
    pub state: SilenceState,
}

/// One silence as `GET /api/v1/silences` lists it: Alertmanager's `GettableSilence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339, as are the other times.
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    pub status: SilenceStatus,
}

/// What `POST /api/v1/silences` takes: Alertmanager's `PostableSilence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSilence {
    /// Set to replace an existing silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339; now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    pub ends_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// `POST /api/v1/silences`'s `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceCreated {
    #[serde(rename = "silenceID")]
    pub silence_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Envelope, test_support::round_trip};

    fn alert() -> ActiveAlert {
        ActiveAlert {
            labels: [("alertname", "ReplicaDown"), ("instance", "search-1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            annotations: [("summary".to_string(), "search-1 is down".to_string())].into(),
            state: AlertState::Firing,
            active_at: "2026-12-01T10:00:00.5Z".into(),
            value: "0e+00".into(),
        }
    }

    #[test]
    fn alerts_round_trip_and_parse_as_the_collector_writes_them() {
        let data = AlertsData { alerts: vec![alert()], group_by: vec!["alertname".into(), "service".into()] };
        round_trip(&Envelope::success(data.clone()));
        let served = r#"{"data":{"alerts":[{"activeAt":"2026-12-01T10:00:00.5Z","annotations":{"summary":"search-1 is down"},
            "labels":{"alertname":"ReplicaDown","instance":"search-1"},"state":"firing","value":"0e+00"}],
            "groupBy":["alertname","service"]},"status":"success"}"#;
        let parsed: Envelope<AlertsData> = serde_json::from_str(served).expect("valid");
        assert_eq!(parsed.into_data().expect("valid"), data);
        // A Prometheus without `groupBy` still reads.
        let plain: Envelope<AlertsData> =
            serde_json::from_str(r#"{"status":"success","data":{"alerts":[]}}"#).expect("valid");
        assert!(plain.into_data().expect("valid").group_by.is_empty());
    }

    #[test]
    fn silences_round_trip_and_parse_as_the_collector_writes_them() {
        let silence = Silence {
            id: "4f1c".into(),
            matchers: vec![
                SilenceMatcher::equal("alertname", "ReplicaDown"),
                SilenceMatcher::parse("instance!~search-.*").expect("valid"),
            ],
            starts_at: "2026-12-01T10:00:00Z".into(),
            ends_at: "2026-12-01T12:00:00Z".into(),
            updated_at: "2026-12-01T10:00:00Z".into(),
            created_by: "ops".into(),
            comment: "deploy".into(),
            status: SilenceStatus { state: SilenceState::Active },
        };
        round_trip(&Envelope::success(vec![silence.clone()]));
        let served = r#"{"status":"success","data":[{"comment":"deploy","createdBy":"ops","endsAt":"2026-12-01T12:00:00Z",
            "id":"4f1c","matchers":[{"isEqual":true,"isRegex":false,"name":"alertname","value":"ReplicaDown"},
            {"isEqual":false,"isRegex":true,"name":"instance","value":"search-.*"}],"startsAt":"2026-12-01T10:00:00Z",
            "status":{"state":"active"},"updatedAt":"2026-12-01T10:00:00Z"}]}"#;
        let parsed: Envelope<Vec<Silence>> = serde_json::from_str(served).expect("valid");
        assert_eq!(parsed.into_data().expect("valid"), vec![silence]);
    }

    #[test]
    fn a_new_silence_round_trips_and_refuses_unknown_fields() {
        let new = NewSilence {
            id: None,
            matchers: vec![SilenceMatcher::equal("alertname", "X")],
            starts_at: None,
            ends_at: "2026-12-01T12:00:00Z".into(),
            created_by: "hale-healer".into(),
            comment: "c".into(),
        };
        round_trip(&new);
        let posted = r#"{"matchers":[{"name":"alertname","value":"X"}],"endsAt":"2026-12-01T12:00:00Z","createdBy":"hale-healer","comment":"c"}"#;
        assert_eq!(serde_json::from_str::<NewSilence>(posted).expect("valid"), new);
        assert!(serde_json::from_str::<NewSilence>(r#"{"matchers":[],"endsAt":"x","bogus":1}"#).is_err());
        let created = Envelope::success(SilenceCreated { silence_id: "4f1c".into() });
        round_trip(&created);
        assert_eq!(
            serde_json::to_string(&created).expect("valid"),
            r#"{"status":"success","data":{"silenceID":"4f1c"}}"#
        );
    }

    #[test]
    fn matchers_parse_every_operator() {
        for (text, op) in [("a=b", "="), ("a!=b", "!="), ("a=~b.*", "=~"), ("a!~b", "!~")] {
            assert_eq!(SilenceMatcher::parse(text).expect("valid").op(), op, "{text}");
        }
        assert!(SilenceMatcher::parse("nothing").is_err());
    }
}
