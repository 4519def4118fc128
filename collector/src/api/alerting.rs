//! What the rule groups and SLOs found: `/api/v1/rules` and `/api/v1/alerts` in
//! Prometheus's shapes, and `/api/v1/slos`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use hale_core::api::{AlertsData, Rule};
use hale_core::time::now_ms;

use super::{PromError, bad_data, blocking, param, success};
use crate::state::Collector;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/slos", get(slos))
}

/// `/api/v1/rules` in Prometheus's shape; `type=alert` or `type=record` keeps one kind.
async fn rules(State(c): State<Arc<Collector>>, RawQuery(raw): RawQuery) -> Result<Response, PromError> {
    let keep: fn(&Rule) -> bool = match param(&raw.unwrap_or_default(), "type").as_deref() {
        None => |_| true,
        Some("alert") => Rule::is_alerting,
        Some("record") => |r| !r.is_alerting(),
        Some(other) => return Err(bad_data(format!("unsupported type {other:?}: use type=alert or type=record"))),
    };
    Ok(success(c.rules.rules(keep)))
}

/// `/api/v1/alerts`: every pending and firing alert, and (beside Prometheus's shape)
/// `groupBy`, the labels notifications group them by.
async fn alerts(State(c): State<Arc<Collector>>) -> Response {
    success(AlertsData { alerts: c.rules.alerts(), group_by: c.group_by.clone() })
}

/// `/api/v1/slos`: every SLO's windows, budget and status, computed now.
async fn slos(State(c): State<Arc<Collector>>) -> Response {
    let now = now_ms();
    success(blocking(&c, move |c| c.slo_states(now)).await.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::api::test_support::{app, app_with, get};
    use crate::rules::{GroupRunner, RuleFile, RulesView};
    use hale_core::api::{AlertsData, Envelope, NEVER_EVALUATED, RuleHealth, RuleKind, RulesData, SloState};

    const RULES: &str = "groups:
  - name: shop
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: up == 0
        for: 1m
        annotations:
          summary: '{{ $labels.instance }} is down'
";

    /// Issue #13: what the collector serves parses into core's wire types, the ones every
    /// client reads (alerts, SLOs).
    #[tokio::test]
    async fn answers_parse_into_the_clients_types() {
        let (_dir, app) = app(None);
        let alerts: Envelope<AlertsData> = serde_json::from_str(&get(&app, "/api/v1/alerts").await.1).expect("alerts");
        assert_eq!(alerts.into_data().expect("data").group_by, ["alertname"]);
        let slos: Envelope<Vec<SloState>> = serde_json::from_str(&get(&app, "/api/v1/slos").await.1).expect("slos");
        assert!(slos.into_data().expect("data").is_empty());
    }

    /// `/api/v1/rules` as core's `RulesData`, every group listed from the start; `type`
    /// keeps one kind of rule.
    #[tokio::test]
    async fn rule_groups_are_served_as_core_types() {
        let file = RuleFile::parse(RULES).expect("rules");
        let groups: Vec<GroupRunner> = file
            .groups
            .iter()
            .map(|g| GroupRunner::new(g, "rules.yml", Duration::from_secs(5), Default::default()))
            .collect();
        let view = RulesView::default();
        view.register(&groups);
        let (_dir, app) = app_with(None, view);
        let rules = |uri: &'static str| {
            let app = app.clone();
            async move {
                let answer: Envelope<RulesData> = serde_json::from_str(&get(&app, uri).await.1).expect("rules");
                answer.into_data().expect("data").groups
            }
        };
        let groups = rules("/api/v1/rules").await;
        let group = &groups[0];
        assert_eq!((group.name.as_str(), group.file.as_str(), group.interval), ("shop", "rules.yml", 5.0));
        assert_eq!(group.last_evaluation, NEVER_EVALUATED);
        let [record, alert] = &group.rules[..] else { panic!("two rules: {group:?}") };
        assert_eq!((record.name.as_str(), &record.kind), ("job:up:sum", &RuleKind::Recording));
        assert_eq!(record.health, RuleHealth::Unknown);
        let RuleKind::Alerting(alerting) = &alert.kind else { panic!("alerting: {alert:?}") };
        assert_eq!(
            (alerting.duration, alerting.annotations["summary"].as_str()),
            (60.0, "{{ $labels.instance }} is down")
        );
        let alerts_only = rules("/api/v1/rules?type=alert").await;
        assert_eq!(alerts_only[0].rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["Down"]);
        let records_only = rules("/api/v1/rules?type=record").await;
        assert_eq!(records_only[0].rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["job:up:sum"]);
        let (status, bad) = get(&app, "/api/v1/rules?type=bogus").await;
        assert_eq!(status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
    }
}
