//! Alertmanager's v2 API over the collector's alerts and silences, so `amtool` and
//! Grafana's Alertmanager datasource work against the collector as against an
//! Alertmanager: `GET /api/v2/alerts` (firing alerts, `filter`, `active`, `silenced`,
//! `inhibited`), `/api/v2/alerts/groups` (grouped as notifications group them),
//! `/api/v2/silences` (list; add with the admin token), `/api/v2/silence/{id}` (read;
//! expire with the admin token), `/api/v2/status` and `/api/v2/receivers`.
//!
//! The collector is its own notifier, so every alert has one receiver, `hale`, and
//! nothing is inhibited. Errors are a JSON string, as Alertmanager answers them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hale_core::api::{
    ALERTMANAGER_API_VERSION, ActiveAlert, AlertState, AmAlert, AmAlertGroup, AmAlertState, AmAlertStatus, AmCluster,
    AmConfig, AmReceiver, AmSilenceCreated, AmStatus, BuildInfo, NewSilence, SilenceMatcher,
};
use hale_core::time::now_ms;

use super::silences::{MAX_SILENCE_BYTES, SilencesApi, authorize, change};
use super::{PromError, form_pairs};
use crate::notify::silence::matcher_hits;
use crate::rules::manager::rfc3339;
use crate::state::Collector;

/// The one receiver: the collector's own notifier.
const RECEIVER: &str = "hale";

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v2/status", get(status))
        .route("/api/v2/receivers", get(|| async { axum::Json(vec![AmReceiver { name: RECEIVER.into() }]) }))
        .route("/api/v2/alerts", get(alerts))
        .route("/api/v2/alerts/groups", get(groups))
        .route("/api/v2/silences", get(silences).post(add_silence).layer(DefaultBodyLimit::max(MAX_SILENCE_BYTES)))
        .route("/api/v2/silence/{id}", get(silence).delete(expire_silence))
}

/// Alertmanager's error: a status and a JSON string.
#[derive(Debug)]
struct AmError(StatusCode, String);

impl IntoResponse for AmError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

impl From<PromError> for AmError {
    fn from(e: PromError) -> AmError {
        AmError(e.0, e.2)
    }
}

fn bad(message: impl Into<String>) -> AmError {
    AmError(StatusCode::BAD_REQUEST, message.into())
}

/// The query's `filter` matchers and its boolean flags.
struct AlertFilter {
    matchers: Vec<SilenceMatcher>,
    active: bool,
    silenced: bool,
}

/// The `filter` parameters (`name="value"`, `name=~"re"`, …, braces allowed) as matchers.
fn filters(pairs: &[(String, String)]) -> Result<Vec<SilenceMatcher>, AmError> {
    pairs
        .iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| SilenceMatcher::parse(v.trim().trim_start_matches('{').trim_end_matches('}')).map_err(bad))
        .collect()
}

impl AlertFilter {
    fn of(query: Option<String>) -> Result<AlertFilter, AmError> {
        let pairs = form_pairs(query.as_deref().unwrap_or(""));
        let flag = |key: &str| -> Result<bool, AmError> {
            match pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()) {
                None => Ok(true),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(other) => Err(bad(format!("{key} must be true or false, not {other:?}"))),
            }
        };
        Ok(AlertFilter { matchers: filters(&pairs)?, active: flag("active")?, silenced: flag("silenced")? })
    }

    fn keeps(&self, alert: &AmAlert) -> bool {
        let suppressed = alert.status.state == AmAlertState::Suppressed;
        let wanted = if suppressed { self.silenced } else { self.active };
        wanted && self.matchers.iter().all(|m| matcher_hits(m, &alert.labels))
    }
}

/// The firing alerts as Alertmanager shows them: silenced ones `suppressed`, with the
/// silences that silence them.
fn am_alerts(c: &Collector, now: i64) -> Vec<AmAlert> {
    let silences = c.silences.list();
    c.rules
        .alerts()
        .into_iter()
        .filter(|a: &ActiveAlert| a.state == AlertState::Firing)
        .map(|a| {
            let labels: BTreeMap<String, String> = a.labels.clone().into_iter().collect();
            let silenced_by: Vec<String> =
                silences.iter().filter(|s| s.matches(&labels, now)).map(|s| s.id.clone()).collect();
            AmAlert {
                fingerprint: format!("{:016x}", hale_core::webhook::fingerprint(&a.labels)),
                starts_at: a.active_at.clone(),
                // Alertmanager resolves an alert not sent again within its resolve timeout.
                ends_at: rfc3339(now + 5 * 60_000),
                updated_at: rfc3339(now),
                receivers: vec![AmReceiver { name: RECEIVER.into() }],
                status: AmAlertStatus {
                    state: if silenced_by.is_empty() { AmAlertState::Active } else { AmAlertState::Suppressed },
                    silenced_by,
                    inhibited_by: Vec::new(),
                },
                generator_url: String::new(),
                labels: a.labels,
                annotations: a.annotations,
            }
        })
        .collect()
}

async fn alerts(State(c): State<Arc<Collector>>, RawQuery(query): RawQuery) -> Result<Response, AmError> {
    let filter = AlertFilter::of(query)?;
    let alerts: Vec<AmAlert> = am_alerts(&c, now_ms()).into_iter().filter(|a| filter.keeps(a)).collect();
    Ok(axum::Json(alerts).into_response())
}

/// Grouped by the route's `group_by`, as notifications are.
async fn groups(State(c): State<Arc<Collector>>, RawQuery(query): RawQuery) -> Result<Response, AmError> {
    let filter = AlertFilter::of(query)?;
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<AmAlert>> = BTreeMap::new();
    for alert in am_alerts(&c, now_ms()).into_iter().filter(|a| filter.keeps(a)) {
        let key = c.group_by.iter().filter_map(|l| Some((l.clone(), alert.labels.get(l)?.clone()))).collect();
        groups.entry(key).or_default().push(alert);
    }
    let groups: Vec<AmAlertGroup> = groups
        .into_iter()
        .map(|(key, alerts)| AmAlertGroup {
            labels: key.into_iter().collect(),
            receiver: AmReceiver { name: RECEIVER.into() },
            alerts,
        })
        .collect();
    Ok(axum::Json(groups).into_response())
}

async fn status(State(c): State<Arc<Collector>>) -> Response {
    axum::Json(AmStatus {
        cluster: AmCluster { status: "disabled".into(), peers: Vec::new() },
        config: AmConfig { original: c.server.alertmanager_yaml.clone() },
        uptime: humantime::format_rfc3339_millis(c.server.started_at).to_string(),
        version_info: BuildInfo {
            version: ALERTMANAGER_API_VERSION.into(),
            revision: concat!("hale ", env!("CARGO_PKG_VERSION")).into(),
            branch: String::new(),
            build_user: "hale".into(),
            build_date: String::new(),
            go_version: "n/a (Rust)".into(),
        },
    })
    .into_response()
}

/// Every silence (Alertmanager lists expired ones too), or those whose matchers `filter`
/// names (each `name=value` of the filter is one of the silence's matchers).
async fn silences(State(c): State<Arc<Collector>>, RawQuery(query): RawQuery) -> Result<Response, AmError> {
    let wanted = filters(&form_pairs(query.as_deref().unwrap_or("")))?;
    let now = now_ms();
    let list: Vec<_> = c
        .silences
        .list()
        .iter()
        .filter(|s| wanted.iter().all(|w| s.matchers.iter().any(|m| m.name == w.name && m.value == w.value)))
        .map(|s| s.to_api(now))
        .collect();
    Ok(axum::Json(list).into_response())
}

async fn silence(State(c): State<Arc<Collector>>, Path(id): Path<String>) -> Result<Response, AmError> {
    let found = c.silences.list().into_iter().find(|s| s.id == id);
    let silence = found.ok_or_else(|| AmError(StatusCode::NOT_FOUND, format!("no silence with id {id}")))?;
    Ok(axum::Json(silence.to_api(now_ms())).into_response())
}

async fn add_silence(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, AmError> {
    let api = SilencesApi::from_ref(&c);
    authorize(&api, &headers)?;
    let body = body.map_err(|e| AmError(e.status(), e.body_text()))?;
    let new: NewSilence = serde_json::from_slice(&body).map_err(|e| bad(format!("not a silence: {e}")))?;
    let id = change(&api, "adding", move |s| s.add(new, now_ms())).await?;
    tracing::info!(id = %id, "silence added (Alertmanager API)");
    Ok(axum::Json(AmSilenceCreated { silence_id: id }).into_response())
}

async fn expire_silence(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AmError> {
    let api = SilencesApi::from_ref(&c);
    authorize(&api, &headers)?;
    let target = id.clone();
    change(&api, "expiring", move |s| s.expire(&target, now_ms())).await?;
    tracing::info!(id = %id, "silence expired (Alertmanager API)");
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_amtools_matchers() {
        let f = AlertFilter::of(Some("filter=alertname%3D%22Down%22&silenced=false".into())).expect("filter");
        assert_eq!(f.matchers, [SilenceMatcher::equal("alertname", "Down")]);
        assert!(f.active && !f.silenced);
        assert!(AlertFilter::of(Some("active=maybe".into())).is_err());
        let labels = BTreeMap::from([("alertname".to_string(), "Down".to_string())]);
        assert!(matcher_hits(&SilenceMatcher::parse("alertname=~Do.*").expect("m"), &labels));
        assert!(matcher_hits(&SilenceMatcher::parse("severity!=page").expect("m"), &labels));
        assert!(!matcher_hits(&SilenceMatcher::parse("alertname!~D.*").expect("m"), &labels));
    }
}
