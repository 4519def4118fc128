//! How the collector and the cluster are: Prometheus's `/api/v1/status/{buildinfo,
//! config,flags,runtimeinfo}` and `/api/v1/targets` (the agents' scrapes, judged by the
//! freshness of their `up`), `/api/v1/cluster` (core's
//! [`ClusterView`](hale_core::cluster::ClusterView)), `/-/ready` and `/healthz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use hale_core::api::{BuildInfo, ConfigYaml, PROMETHEUS_API_VERSION, RuntimeInfo};
use hale_core::time::now_ms;
use serde_json::json;

use super::{PromError, blocking, success};
use crate::state::Collector;

pub(super) fn routes() -> Router<Arc<Collector>> {
    Router::new()
        .route("/api/v1/status/{page}", get(status_page))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/cluster", get(cluster))
        .route("/-/ready", get(|| async { "ready" }))
        .route("/healthz", get(|| async { axum::Json(json!({"status": "alive"})) }))
}

/// Prometheus's status pages.
async fn status_page(State(c): State<Arc<Collector>>, Path(page): Path<String>) -> Result<Response, PromError> {
    match page.as_str() {
        "buildinfo" => Ok(buildinfo()),
        "config" => Ok(success(ConfigYaml { yaml: c.server.config_yaml.clone() })),
        "flags" => Ok(success(&c.server.flags)),
        "runtimeinfo" => Ok(runtimeinfo(&c)),
        other => Err(PromError(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("no status page {other:?}: buildinfo, config, flags or runtimeinfo"),
        )),
    }
}

/// Which server this is: the Prometheus API level it answers as (Grafana decides what
/// it may call by it), and Hale's own release as the revision.
fn buildinfo() -> Response {
    success(BuildInfo {
        version: PROMETHEUS_API_VERSION.into(),
        revision: concat!("hale ", env!("CARGO_PKG_VERSION")).into(),
        branch: String::new(),
        build_user: "hale".into(),
        build_date: String::new(),
        go_version: "n/a (Rust)".into(),
    })
}

fn runtimeinfo(c: &Collector) -> Response {
    let started = humantime::format_rfc3339_seconds(c.server.started_at).to_string();
    let runtime = tokio::runtime::Handle::current().metrics();
    success(RuntimeInfo {
        start_time: started.clone(),
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        reload_config_success: true,
        last_config_time: started,
        corruption_count: 0,
        goroutine_count: runtime.num_alive_tasks() as u64,
        gomaxprocs: runtime.num_workers() as u64,
        gogc: String::new(),
        godebug: String::new(),
        storage_retention: c.server.retention.clone(),
    })
}

async fn targets(State(c): State<Arc<Collector>>) -> Result<Response, PromError> {
    Ok(success(blocking(&c, |c| crate::cluster::targets(&c.store, now_ms())).await?))
}

async fn cluster(State(c): State<Arc<Collector>>) -> Result<Response, PromError> {
    let mut view = blocking(&c, |c| crate::cluster::view(&c.store, &c.logs, now_ms())).await?;
    view.ingest_refused = c.disk.full().map(|full| full.to_string());
    Ok(success(view))
}
