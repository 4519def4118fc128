//! `/api/v1/silences`: list (open), add and expire (admin token). Alertmanager's v2
//! silence shapes inside the collector's usual `{"status", "data"}` envelope.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use hale_core::api::{Envelope, SilenceCreated, SilenceState};
use hale_core::auth::bearer_matches;
use serde_json::json;

use super::silence::{NewSilence, SilenceError};
use crate::api::Collector;
use hale_core::time::now_ms;

/// A silence is a few matchers and a comment.
const MAX_SILENCE_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v1/silences", get(list).post(add).layer(DefaultBodyLimit::max(MAX_SILENCE_BYTES)))
        .route("/api/v1/silences/{id}", delete(expire))
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"status": "error", "errorType": kind, "error": message.into()}))).into_response()
}

/// Writes need the admin token; without one configured they are refused outright.
/// The refusal to answer with, if any.
fn refusal(c: &Collector, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &c.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "silences are read-only here: start the collector with --admin-token (or HALE_ADMIN_TOKEN)",
        ));
    };
    if bearer_matches(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()), expected) {
        None
    } else {
        Some(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token (--admin-token)"))
    }
}

fn silence_error(e: SilenceError) -> Response {
    match e {
        SilenceError::Invalid(m) => error(StatusCode::BAD_REQUEST, "bad_data", m),
        SilenceError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        SilenceError::Save { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn list(State(c): State<Arc<Collector>>) -> Response {
    let now = now_ms();
    let mut silences = c.silences.list();
    // Active first, then pending, then expired; newest end first within each.
    let rank = |s: &super::silence::Silence| match s.state(now) {
        SilenceState::Active => 0,
        SilenceState::Pending => 1,
        SilenceState::Expired => 2,
    };
    silences.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.ends_at_ms.cmp(&a.ends_at_ms)));
    let data: Vec<_> = silences.iter().map(|s| s.to_api(now)).collect();
    axum::Json(Envelope::success(data)).into_response()
}

async fn add(
    State(c): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Some(refused) = refusal(&c, &headers) {
        return refused;
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), "bad_data", e.body_text()),
    };
    let new: NewSilence = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", format!("not a silence: {e}")),
    };
    let silences = c.silences.clone();
    let added = tokio::task::spawn_blocking(move || silences.add(new, now_ms())).await;
    let added = added.unwrap_or_else(|e| Err(SilenceError::Invalid(format!("adding the silence failed: {e}"))));
    match added {
        Ok(id) => {
            tracing::info!(id = %id, "silence added");
            axum::Json(Envelope::success(SilenceCreated { silence_id: id })).into_response()
        }
        Err(e) => silence_error(e),
    }
}

async fn expire(State(c): State<Arc<Collector>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(refused) = refusal(&c, &headers) {
        return refused;
    }
    let (silences, target) = (c.silences.clone(), id.clone());
    let expired = tokio::task::spawn_blocking(move || silences.expire(&target, now_ms())).await;
    match expired.unwrap_or_else(|e| Err(SilenceError::Invalid(format!("expiring the silence failed: {e}")))) {
        Ok(()) => {
            tracing::info!(id = %id, "silence expired");
            axum::Json(json!({"status": "success"})).into_response()
        }
        Err(e) => silence_error(e),
    }
}
