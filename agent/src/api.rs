//! The agent's HTTP API: `/metrics` (host, processes, self), `/healthz`, and the actuator
//! the healer calls. Every actuator call that changes something needs the bearer token;
//! new replicas can only be started from templates in the agent's own config.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hale_core::api::{ErrorBody, ProcessInfo, ProcessRestarted, ProcessStarted, ProcessStopped, StartProcess};
use hale_core::auth::bearer_token;

use crate::agent::Agent;
use crate::config::valid_instance_name;
use crate::supervise::SuperviseError;

/// An actuator error as `{"error": {"code", "message"}}`.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody::new(self.1, self.2))).into_response()
    }
}

impl From<SuperviseError> for ApiError {
    fn from(e: SuperviseError) -> Self {
        match e {
            SuperviseError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            SuperviseError::Exists(_) => ApiError(StatusCode::CONFLICT, "exists", e.to_string()),
        }
    }
}

fn authorize(agent: &Agent, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = agent.actuator_token() else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "actuator_disabled",
            "this agent has no token configured (HALE_AGENT_TOKEN or --token-file), so its actuator is off".into(),
        ));
    };
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if header.and_then(bearer_token).is_none() {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>`".into(),
        ));
    }
    if expected.accepts_bearer(header) {
        Ok(())
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token".into()))
    }
}

/// `POST /-/reload` (token): reads agent.toml again, as SIGHUP does. 200 with the
/// sections that changed, or 400 with why the file was refused (the config in force is
/// kept).
async fn reload(State(agent): State<Arc<Agent>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&agent, &headers)?;
    let outcome = tokio::task::spawn_blocking(move || agent.reload_from_source())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match outcome {
        Ok(changed) => {
            let changed = changed.into_iter().map(str::to_string).collect();
            Ok(axum::Json(hale_core::api::ConfigReloaded { status: "reloaded".into(), changed }).into_response())
        }
        Err(why) => Err(ApiError(StatusCode::BAD_REQUEST, "bad_config", why)),
    }
}

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/processes", get(list).post(start))
        .route("/api/v1/processes/{name}", axum::routing::delete(stop))
        .route("/api/v1/processes/{name}/restart", post(restart))
        .route("/-/reload", post(reload))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(agent)
}

async fn healthz(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    axum::Json(hale_core::api::AgentHealth {
        status: "alive".into(),
        node: agent.config().node.clone(),
        data_dir: agent.config().data_dir.to_string_lossy().into_owned(),
        pid: Some(std::process::id()),
    })
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    let families = agent.local_families().await;
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        hale_core::exposition::encode_text(&families),
    )
}

/// Supervised replicas, then the services adopted from other managers.
async fn list(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    let config = agent.config();
    let mut processes = agent.supervisor.list();
    for p in &mut processes {
        p.url = config.template(&p.service).map(|t| t.url(&p.listen));
    }
    processes.extend(agent.adopted.list(&config).await);
    axum::Json(hale_core::api::ProcessList { node: config.node.clone(), processes })
}

/// A failed manager command (systemctl, a configured command) as a 502: the agent is
/// fine, what it called is not.
fn manager_failed(e: crate::adopted::AdoptError) -> ApiError {
    ApiError(StatusCode::BAD_GATEWAY, "manager_failed", e.to_string())
}

/// `?grace_ms=N` replaces the grace before SIGKILL (0: kill at once, for a hung replica).
async fn restart(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&agent, &headers)?;
    let grace = match form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(k, _)| k == "grace_ms") {
        Some((_, v)) => Some(std::time::Duration::from_millis(v.parse::<u64>().map_err(|_| {
            ApiError(StatusCode::BAD_REQUEST, "bad_request", format!("grace_ms {v:?} is not a number of milliseconds"))
        })?)),
        None => None,
    };
    if agent.supervisor.spec(&name).is_none()
        && let Some(outcome) = agent.adopted.restart(&agent.config(), &name).await
    {
        outcome.map_err(manager_failed)?;
        tracing::warn!(process = %name, "adopted service restarted through its manager");
        return Ok((StatusCode::ACCEPTED, axum::Json(ProcessRestarted { restarted: name })));
    }
    agent.supervisor.restart_with_grace(&name, grace).await?;
    tracing::warn!(process = %name, "restart requested through the actuator");
    Ok((StatusCode::ACCEPTED, axum::Json(ProcessRestarted { restarted: name })))
}

async fn stop(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&agent, &headers)?;
    if agent.supervisor.spec(&name).is_none()
        && let Some(outcome) = agent.adopted.stop(&agent.config(), &name).await
    {
        outcome.map_err(manager_failed)?;
        tracing::warn!(process = %name, "adopted service stopped through its manager");
        return Ok(axum::Json(ProcessStopped { stopped: name }));
    }
    agent.supervisor.stop(&name).await?;
    tracing::warn!(process = %name, "stopped through the actuator");
    Ok(axum::Json(ProcessStopped { stopped: name }))
}

async fn start(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&agent, &headers)?;
    let req: StartProcess = serde_json::from_slice(&body).map_err(|e| {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", format!("expected {{\"service\", \"name\"?}}: {e}"))
    })?;
    let config = agent.config();
    let template = config.template(&req.service).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("no template for service {:?} on this node", req.service),
        )
    })?;
    if template.managed.is_some() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "managed_elsewhere",
            format!("service {:?} is run by another manager; the agent cannot start replicas of it", req.service),
        ));
    }
    let taken: Vec<String> = agent.supervisor.list().into_iter().map(|p| p.name).collect();
    let name = match req.name {
        Some(name) if !valid_instance_name(&name) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "name: use letters, digits, '-' and '_'".into(),
            ));
        }
        Some(name) => name,
        None => (1..)
            .map(|n| format!("{}-{}-{n}", req.service, config.node))
            .find(|n| !taken.contains(n))
            .unwrap_or_default(),
    };
    let (lo, hi) = template.port_range.ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "no_port_range",
            format!("service {:?} has no port_range for new replicas", req.service),
        )
    })?;
    let ip = config.listen.ip();
    let listen = (lo..=hi)
        .map(|port| SocketAddr::new(ip, port))
        .find(|addr| {
            !agent.supervisor.list().iter().any(|p| p.listen == addr.to_string())
                && std::net::TcpListener::bind(addr).is_ok()
        })
        .ok_or_else(|| ApiError(StatusCode::CONFLICT, "no_free_port", format!("no free port in {lo}..={hi}")))?;
    let spec = config.render(template, &name, listen, &[]);
    agent.supervisor.start(spec)?;
    tracing::warn!(process = %name, service = %req.service, %listen, "replica started through the actuator");
    let info = agent
        .supervisor
        .list()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| ProcessInfo { url: Some(template.url(&p.listen)), ..p });
    Ok((StatusCode::CREATED, axum::Json(ProcessStarted { process: info })))
}
