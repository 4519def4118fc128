//! `/api/v1/silences`: list (open), add and expire (admin token). Alertmanager's v2
//! silence shapes inside the collector's usual `{"status", "data"}` envelope.
//!
//! The routes see only [`SilencesApi`], the silences and the admin token, taken from the
//! collector's state with `FromRef`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use hale_core::api::{Envelope, SilenceCreated, SilenceState, Status};
use hale_core::time::now_ms;

use super::{PromError, success};
use crate::notify::silence::{NewSilence, Silence, SilenceError, Silences};
use crate::state::Collector;

/// A silence is a few matchers and a comment.
pub(super) const MAX_SILENCE_BYTES: usize = 64 * 1024;

/// What the silence routes work with.
#[derive(Clone)]
pub struct SilencesApi {
    pub silences: Arc<Silences>,
    /// Bearer token for writes; `None` makes silences read-only.
    pub admin_token: Option<std::sync::Arc<hale_core::token::Token>>,
}

impl FromRef<Arc<Collector>> for SilencesApi {
    fn from_ref(c: &Arc<Collector>) -> SilencesApi {
        SilencesApi { silences: c.silences.clone(), admin_token: c.admin_token.clone() }
    }
}

pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    SilencesApi: FromRef<S>,
{
    Router::new()
        .route("/api/v1/silences", get(list).post(add).layer(DefaultBodyLimit::max(MAX_SILENCE_BYTES)))
        .route("/api/v1/silences/{id}", delete(expire))
}

fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> PromError {
    PromError(status, kind, message.into())
}

/// Writes need the admin token; without one configured they are refused outright.
pub(super) fn authorize(api: &SilencesApi, headers: &HeaderMap) -> Result<(), PromError> {
    let Some(expected) = &api.admin_token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "silences are read-only here: start the collector with --admin-token (or HALE_ADMIN_TOKEN)",
        ));
    };
    if expected.accepts_bearer(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())) {
        Ok(())
    } else {
        Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token (--admin-token)"))
    }
}

impl From<SilenceError> for PromError {
    fn from(e: SilenceError) -> PromError {
        match e {
            SilenceError::Invalid(m) => error(StatusCode::BAD_REQUEST, "bad_data", m),
            SilenceError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            SilenceError::Save { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

/// Runs a change to the silences file on the blocking pool; `what` names it if that fails.
pub(super) async fn change<T: Send + 'static>(
    api: &SilencesApi,
    what: &str,
    f: impl FnOnce(&Silences) -> Result<T, SilenceError> + Send + 'static,
) -> Result<T, PromError> {
    let silences = api.silences.clone();
    let done = tokio::task::spawn_blocking(move || f(&silences)).await;
    Ok(done.unwrap_or_else(|e| Err(SilenceError::Invalid(format!("{what} the silence failed: {e}"))))?)
}

async fn list(State(api): State<SilencesApi>) -> Response {
    let now = now_ms();
    let mut silences = api.silences.list();
    // Active first, then pending, then expired; newest end first within each.
    let rank = |s: &Silence| match s.state(now) {
        SilenceState::Active => 0,
        SilenceState::Pending => 1,
        SilenceState::Expired => 2,
    };
    silences.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.ends_at_ms.cmp(&a.ends_at_ms)));
    success(silences.iter().map(|s| s.to_api(now)).collect::<Vec<_>>())
}

async fn add(
    State(api): State<SilencesApi>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, PromError> {
    authorize(&api, &headers)?;
    let body = body.map_err(|e| error(e.status(), "bad_data", e.body_text()))?;
    let new: NewSilence = serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_data", format!("not a silence: {e}")))?;
    let id = change(&api, "adding", move |s| s.add(new, now_ms())).await?;
    tracing::info!(id = %id, "silence added");
    Ok(success(SilenceCreated { silence_id: id }))
}

async fn expire(
    State(api): State<SilencesApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PromError> {
    authorize(&api, &headers)?;
    let target = id.clone();
    change(&api, "expiring", move |s| s.expire(&target, now_ms())).await?;
    tracing::info!(id = %id, "silence expired");
    let done: Envelope<()> = Envelope { status: Status::Success, data: None, error_type: None, error: None };
    Ok(axum::Json(done).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{app, call, get};
    use hale_core::api::SilenceMatcher;

    fn post(body: impl Into<axum::body::Body>) -> axum::http::Request<axum::body::Body> {
        axum::http::Request::post("/api/v1/silences")
            .header("authorization", "Bearer admin-secret")
            .header("content-type", "application/json")
            .body(body.into())
            .expect("req")
    }

    /// Issue #13: what the collector serves parses into core's wire types, the ones every
    /// client reads (silences and their POST answer).
    #[tokio::test]
    async fn silences_parse_into_the_clients_types() {
        let (_dir, app) = app(None);
        let new = NewSilence {
            id: None,
            matchers: vec![SilenceMatcher::equal("alertname", "ReplicaDown")],
            starts_at: None,
            ends_at: "2099-01-01T00:00:00Z".into(),
            created_by: "test".into(),
            comment: "deploy".into(),
        };
        let (status, created) = call(&app, post(serde_json::to_vec(&new).expect("json"))).await;
        assert!(status.is_success(), "{status}");
        let created: Envelope<SilenceCreated> = serde_json::from_slice(&created).expect("created");
        let id = created.into_data().expect("data").silence_id;
        let listed: Envelope<Vec<hale_core::api::Silence>> =
            serde_json::from_str(&get(&app, "/api/v1/silences").await.1).expect("silences");
        let listed = listed.into_data().expect("data");
        assert_eq!((listed[0].id.as_str(), listed[0].comment.as_str()), (id.as_str(), "deploy"));
        assert_eq!(listed[0].matchers, new.matchers);
    }

    /// JSON bodies nest no deeper than serde_json's limit: refused, not recursed into.
    #[tokio::test]
    async fn deeply_nested_bodies_are_refused() {
        let (_dir, app) = app(None);
        for body in ["[".repeat(100_000), format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000))] {
            let status = call(&app, post(body)).await.0;
            assert!(status.is_client_error(), "{status}");
        }
    }
}
