//! SLOs as the collector's `/api/v1/slos` reports them.

use serde::{Deserialize, Serialize};

/// Where an SLO stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SloStatus {
    /// A page-tier burn-rate alert fires.
    Page,
    /// A ticket-tier one fires.
    Ticket,
    Ok,
    /// Too few events (or a blind page window) to call it good.
    InsufficientData,
    /// No data at all; also what a reader makes of a status it does not know.
    #[serde(other)]
    NoData,
}

impl SloStatus {
    pub const ALL: [SloStatus; 5] =
        [SloStatus::Page, SloStatus::Ticket, SloStatus::Ok, SloStatus::InsufficientData, SloStatus::NoData];

    pub fn as_str(self) -> &'static str {
        match self {
            SloStatus::Page => "page",
            SloStatus::Ticket => "ticket",
            SloStatus::Ok => "ok",
            SloStatus::InsufficientData => "insufficient_data",
            SloStatus::NoData => "no_data",
        }
    }
}

/// One SLO window in `/api/v1/slos`. (An absent `Option` field reads as `None`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloWindow {
    /// `5m`, `30m`, `1h`, … (the burn-rate windows).
    pub window: String,
    /// `None`: no data (no series, or no traffic: 0/0).
    pub error_ratio: Option<f64>,
    pub burn_rate: Option<f64>,
    /// Events in the window (event-based SLIs only).
    pub events: Option<f64>,
}

/// One SLO as the collector's `/api/v1/slos` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloState {
    pub id: String,
    pub service: String,
    pub slo: String,
    /// A ratio (0.999).
    pub objective: f64,
    #[serde(default)]
    pub windows: Vec<SloWindow>,
    /// Error ratio over the 30-day period.
    pub period_error_ratio: Option<f64>,
    pub error_budget_remaining: Option<f64>,
    pub status: SloStatus,
    /// Firing alert tiers.
    #[serde(default)]
    pub firing: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Envelope, test_support::round_trip};

    #[test]
    fn slos_round_trip_and_parse_as_the_collector_writes_them() {
        let slo = SloState {
            id: "search-availability".into(),
            service: "search".into(),
            slo: "availability".into(),
            objective: 0.999,
            windows: vec![SloWindow { window: "5m".into(), error_ratio: None, burn_rate: None, events: Some(3.0) }],
            period_error_ratio: Some(0.0005),
            error_budget_remaining: Some(0.5),
            status: SloStatus::InsufficientData,
            firing: vec![],
        };
        round_trip(&Envelope::success(vec![slo.clone()]));
        let served = r#"{"status":"success","data":[{"id":"search-availability","service":"search","slo":"availability",
            "objective":0.999,"windows":[{"window":"5m","error_ratio":null,"burn_rate":null,"events":3.0}],
            "period_error_ratio":0.0005,"error_budget_remaining":0.5,"status":"insufficient_data","firing":[]}]}"#;
        let parsed: Envelope<Vec<SloState>> = serde_json::from_str(served).expect("slos");
        assert_eq!(parsed.into_data().expect("data"), vec![slo]);
        for status in SloStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
        }
        assert_eq!(serde_json::from_str::<SloStatus>(r#""eclipse""#).expect("status"), SloStatus::NoData);
        // What readers have always tolerated missing reads as no data.
        let sparse = r#"{"id":"x","service":"s","slo":"a","objective":0.9,"status":"no_data"}"#;
        let sparse: SloState = serde_json::from_str(sparse).expect("sparse");
        assert_eq!((sparse.period_error_ratio, sparse.error_budget_remaining), (None, None));
        let window: SloWindow = serde_json::from_str(r#"{"window":"5m"}"#).expect("window");
        assert_eq!((window.error_ratio, window.events), (None, None));
    }
}
