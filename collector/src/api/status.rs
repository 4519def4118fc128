//! How the collector and the cluster are: `/api/v1/status/buildinfo` (Prometheus's),
//! `/api/v1/cluster` (core's [`ClusterView`](hale_core::cluster::ClusterView)),
//! `/-/ready` and `/healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use hale_core::time::now_ms;
use serde_json::json;

use super::{PromError, blocking, success};
use crate::state::Collector;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/cluster", get(cluster))
        .route("/-/ready", get(|| async { "ready" }))
        .route("/healthz", get(|| async { axum::Json(json!({"status": "alive"})) }))
}

/// What Prometheus answers, for tools that ask which server they talk to (nothing in Hale
/// reads it).
async fn buildinfo() -> Response {
    success(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "n/a (Rust)",
    }))
}

async fn cluster(State(c): State<Arc<Collector>>) -> Result<Response, PromError> {
    let view = blocking(&c, |c| crate::cluster::view(&c.store, &c.logs, now_ms())).await?;
    Ok(success(view))
}
