//! The healer's HTTP API: the alert intake (`POST /hooks/alertmanager`), actions and their
//! approval, pause and resume, the state, `/metrics`.
//!
//! The intake takes Alertmanager's v4 payload (unknown fields ignored) signed with
//! `X-Hale-Signature` or carrying the intake token, and answers 2xx only once the alerts
//! are stored. Every other write needs `--token`/`HALE_HEALER_TOKEN`; a follower answers
//! writes 503 `not_leader` naming the leader, while every healer takes alerts. The state
//! says who leads (`ha`) and which refused alerts are kept for another look (`deferred`).

use std::sync::Arc;

use crate::engine::{AnswerError, Healer};
use crate::state::Alert;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hale_core::api;
use hale_core::time::now_ms;

/// Alertmanager caps a notification's alerts; a few MiB is far above any real payload.
const MAX_HOOK_BYTES: usize = 4 * 1024 * 1024;

/// What the intake and the write endpoints check.
#[derive(Default)]
pub struct Auth {
    /// Bearer token for writes (approve, pause, reset…). Never accepted on the intake: the
    /// one credential that moves the healer must not also be a way to feed it alerts.
    pub token: Option<Arc<hale_core::token::Token>>,
    /// HMAC key of `X-Hale-Signature` on the intake.
    pub webhook_secret: Option<Arc<[u8]>>,
    /// A bearer token the intake accepts in place of a signature, only when configured
    /// (`--intake-token`): for senders that cannot sign, such as Alertmanager's
    /// `http_config.authorization`.
    pub intake_token: Option<Arc<hale_core::token::Token>>,
}

pub struct App {
    pub healer: Arc<Healer>,
    pub auth: Auth,
}

fn error(status: StatusCode, code: &str, message: impl ToString) -> Response {
    (status, axum::Json(api::ErrorBody::new(code, message.to_string()))).into_response()
}

fn bearer_ok(app: &App, headers: &HeaderMap) -> bool {
    bearer_is(app.auth.token.as_deref(), headers)
}

fn bearer_is(expected: Option<&hale_core::token::Token>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else { return false };
    expected.accepts_bearer(headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()))
}

/// Writes need the bearer token; without one configured they are refused.
fn refusal(app: &App, headers: &HeaderMap) -> Option<Response> {
    if app.auth.token.is_none() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this healer has no token (--token or HALE_HEALER_TOKEN), so its API is read-only",
        ));
    }
    if !bearer_ok(app, headers) {
        return Some(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token"));
    }
    // Decisions are the leader's: a follower names it instead of racing it.
    let store = &app.healer.store;
    (!store.is_leader()).then(|| {
        let leader = store.leadership().and_then(|l| l.leader());
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            crate::state::SaveError::NotLeader(leader).to_string() + "; send this to the leader",
        )
    })
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/hooks/alertmanager", post(hook).layer(DefaultBodyLimit::max(MAX_HOOK_BYTES)))
        .route("/api/v1/actions", get(actions))
        .route("/api/v1/actions/{id}/approve", post(approve))
        .route("/api/v1/actions/{id}/reject", post(reject))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/targets/{kind}/{name}/reset", post(reset))
        .route("/api/v1/state", get(state))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { axum::Json(api::HealerHealth { status: "alive".into() }) }))
        .route("/-/ready", get(|| async { "ready" }))
        .with_state(app)
}

async fn hook(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), "bad_request", e.body_text()),
    };
    let signature = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let authorized = if let (Some(secret), Some(_)) = (&app.auth.webhook_secret, signature) {
        let now = (now_ms() / 1000).max(0) as u64;
        match hale_core::webhook::verify(secret, signature, &body, now) {
            Ok(()) => true,
            Err(e) => return error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string()),
        }
    } else {
        bearer_is(app.auth.intake_token.as_deref(), &headers)
    };
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign the body (X-Hale-Signature, with the webhook secret), or send the intake token (--intake-token) as a bearer token",
        );
    }
    let payload: api::WebhookPayload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "bad_payload", format!("not an Alertmanager webhook payload: {e}"));
        }
    };
    let mut accepted = api::HookAccepted::default();
    for a in payload.alerts.into_iter().filter(|a| a.status == api::NotifyStatus::Firing) {
        let fingerprint = if a.fingerprint.is_empty() {
            format!("{:016x}", hale_core::webhook::fingerprint(&a.labels))
        } else {
            a.fingerprint
        };
        let alert = Alert {
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            fingerprint,
            received_ms: now_ms(),
        };
        match app.healer.receive(alert).await {
            Ok(true) => accepted.queued += 1,
            Ok(false) => accepted.duplicates += 1,
            // Not stored: the sender must retry, so the answer is not 2xx.
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e.to_string()),
        }
    }
    axum::Json(accepted).into_response()
}

async fn actions(State(app): State<Arc<App>>) -> Response {
    let actions = app.healer.store.read(|s| s.actions.iter().rev().cloned().collect());
    axum::Json(api::ActionList { actions }).into_response()
}

async fn answer(app: Arc<App>, headers: HeaderMap, id: String, approve: bool) -> Response {
    if let Some(r) = refusal(&app, &headers) {
        return r;
    }
    match app.healer.answer(&id, approve).await {
        Ok(action) => axum::Json(api::ActionAnswer { action }).into_response(),
        Err(e @ AnswerError::NotFound(_)) => error(StatusCode::NOT_FOUND, "not_found", e),
        Err(AnswerError::Save(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "not_saved", e),
        Err(e) => error(StatusCode::CONFLICT, "conflict", e),
    }
}

async fn approve(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(app, headers, id, true).await
}

async fn reject(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    answer(app, headers, id, false).await
}

async fn set_paused(app: Arc<App>, headers: HeaderMap, paused: bool) -> Response {
    if let Some(r) = refusal(&app, &headers) {
        return r;
    }
    match app.healer.set_paused(paused).await {
        Ok(()) => axum::Json(api::Paused { paused }).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "not_saved", e),
    }
}

async fn pause(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    set_paused(app, headers, true).await
}

async fn resume(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    set_paused(app, headers, false).await
}

async fn reset(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refusal(&app, &headers) {
        return r;
    }
    if !["instance", "service", "node"].contains(&kind.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_target",
            "targets are instance/<name>, service/<name> or node/<name>",
        );
    }
    match app.healer.reset(&format!("{kind}/{name}")).await {
        Ok(was_blocked) => {
            axum::Json(api::TargetReset { target: format!("{kind}/{name}"), was_blocked }).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "not_saved", e),
    }
}

async fn state(State(app): State<Arc<App>>) -> Response {
    let ha = match app.healer.store.leadership() {
        Some(l) => api::Ha::Etcd {
            me: l.me.clone(),
            role: if l.is_leader() { api::HaRole::Leader } else { api::HaRole::Follower },
            leader: l.leader(),
        },
        None => api::Ha::Single { role: api::HaRole::Leader },
    };
    let state = app.healer.store.read(|s| api::HealerState {
        paused: s.paused,
        queued: s.queue.len(),
        targets: s.targets.clone(),
        in_flight: s.actions.iter().filter(|a| a.status.in_flight()).map(|a| a.id.clone()).collect(),
        // Refused alerts kept for another look: what, why, and when (`state::Deferred`).
        deferred: s.deferred.clone(),
        dry_run: app.healer.dry_run,
        ha: Some(ha),
    });
    axum::Json(state).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let paused = app.healer.store.read(|s| s.paused);
    let leader = app.healer.store.is_leader();
    ([(axum::http::header::CONTENT_TYPE, hale_serve::metrics::OPENMETRICS)], app.healer.metrics.encode(paused, leader))
}
