//! The dashboard's reads and the healer's client, through hale-client, against in-process
//! stand-ins for the collector, an agent and the healer that answer what the real ones
//! serve (their JSON, as fixtures).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hale_client::{ClientError, Healer};
use hale_tui::model::{Retry, SloStatus};
use hale_tui::source::{Endpoints, Link, Source};

const TOKEN: &str = "healer-token";
const NOW_MS: i64 = 1_790_000_000_000;

/// JSON text as an answer.
fn json(text: &'static str) -> Response {
    ([("content-type", "application/json")], text).into_response()
}

/// Serves `router` on a free loopback port; its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

const CLUSTER: &str = r#"{"status":"success","data":{
    "nodes":[{"node":"node-1","agent":"up","agent_up":true,"last_seen_secs_ago":0.5,"interval_secs":1.0,
              "cpu_used_ratio":0.42,"memory_used_ratio":0.6,"disk_used_ratio":null}],
    "services":[{"service":"search","ready_replicas":1,"replicas":[
        {"instance":"search-1","node":"node-1","state":"down","ready":false,"alive":false,"up":false,
         "age_secs":0.4,"interval_secs":0.5,"restarts":2.0,"last_error":{"time_unix_nano":5,"message":"timed out"}},
        {"instance":"search-2","node":"node-1","state":"ready","ready":true,"alive":true,"up":true,
         "age_secs":0.4,"interval_secs":0.5,"restarts":0.0,"last_error":null}]}]}}"#;
const SLOS: &str = r#"{"status":"success","data":[{"id":"search-availability","service":"search","slo":"availability",
    "objective":0.999,"windows":[{"window":"1h","error_ratio":0.02,"burn_rate":20.0,"events":300.0}],
    "period_error_ratio":0.0005,"error_budget_remaining":0.5,"status":"page","firing":[]}]}"#;
const ALERTS: &str = r#"{"status":"success","data":{"alerts":[
    {"activeAt":"2026-12-01T10:00:01Z","annotations":{},"labels":{"alertname":"CpuSaturated","node":"node-1"},"state":"pending","value":"1e+00"},
    {"activeAt":"2026-12-01T10:00:00.5Z","annotations":{"summary":"search-1 is down"},
     "labels":{"alertname":"ReplicaDown","instance":"search-1"},"state":"firing","value":"0e+00"}],
    "groupBy":["alertname","service"]}}"#;
const SILENCES: &str = r#"{"status":"success","data":[{"comment":"deploy","createdBy":"ops","endsAt":"2026-12-01T12:00:00Z",
    "id":"4f1c","matchers":[{"isEqual":true,"isRegex":false,"name":"alertname","value":"ReplicaDown"}],
    "startsAt":"2026-12-01T10:00:00Z","status":{"state":"active"},"updatedAt":"2026-12-01T10:00:00Z"},
    {"comment":"old","createdBy":"ops","endsAt":"2026-12-01T09:00:00Z","id":"0ld","matchers":[],
    "startsAt":"2026-12-01T08:00:00Z","status":{"state":"expired"},"updatedAt":"2026-12-01T09:00:00Z"}]}"#;
const CPU: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[
    {"metric":{"node":"node-1"},"values":[[1789999700,"0.25"],[1789999710,"NaN"],[1789999720,"0.5"]]}]}}"#;
const RESTARTS: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"service":"search"},"value":[1790000000,"3"]}]}}"#;
const SEARCH_RATE: &str =
    r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1789999995,"7.5"]]}]}}"#;
const LOGS: &str = r#"{"status":"success","data":[
    {"time_unix_nano":1789999999000000000,"service":"search","instance":"search-1","node":"node-1","level":"info",
     "message":"request","attributes":{"latency_ms":1.9,"request_id":"r1","route":"/api/search","status":200}},
    {"time_unix_nano":1789999998000000000,"service":"search","instance":"search-1","node":"node-1","level":"error",
     "message":"request failed"}]}"#;

/// A collector with one node, one service, one SLO, two alerts, silences, PromQL answers
/// and logs; it records the log queries it gets.
fn collector(log_queries: Arc<Mutex<Vec<String>>>) -> Router {
    let range = |Query(q): Query<Vec<(String, String)>>| async move {
        let query = q.iter().find(|(k, _)| k == "query").map(|(_, v)| v.as_str()).unwrap_or_default();
        if query.contains("node_cpu_seconds_total") { json(CPU) } else { json(SEARCH_RATE) }
    };
    Router::new()
        .route("/api/v1/cluster", get(|| async { json(CLUSTER) }))
        .route("/api/v1/slos", get(|| async { json(SLOS) }))
        .route("/api/v1/alerts", get(|| async { json(ALERTS) }))
        .route("/api/v1/silences", get(|| async { json(SILENCES) }))
        .route("/api/v1/query", get(|| async { json(RESTARTS) }))
        .route("/api/v1/query_range", get(range))
        .route(
            "/api/v1/logs",
            get(move |uri: axum::http::Uri| async move {
                log_queries.lock().expect("lock").push(uri.query().unwrap_or_default().to_string());
                json(LOGS)
            }),
        )
}

const PROCESSES: &str = r#"{"node":"node-1","processes":[{"name":"search-1","service":"search","node":"node-1",
    "listen":"127.0.0.1:8091","pid":4242,"state":"running","restarts":3,"uptime_secs":12,"last_exit":null}]}"#;

const ACTION: &str = r#"{"id":"act-1","policy":"restart-hung","kind":"restart",
    "target":{"service":"search","instance":"search-1","node":"node-1"},
    "alert":{"labels":{"alertname":"ReplicaDown","instance":"search-1"},"annotations":{},"starts_at":"2026-01-01T00:00:00Z",
             "fingerprint":"f","received_ms":1},
    "status":"awaiting_approval","created_ms":1000,"updated_ms":2000,"expires_ms":3000,"detail":"","started":[],
    "followed_by":null,"burn_before":null}"#;

const STATE: &str = r#"{"paused":false,"queued":0,"in_flight":["act-1"],"dry_run":true,
    "targets":{"instance/orders-2":{"actions":[1],"needs_human":"act-0 failed"}},
    "deferred":[{"alert":{"labels":{"alertname":"ReplicaDown"},"annotations":{},"starts_at":"x","fingerprint":"g",
        "received_ms":1},"policy":"restart-hung","action":"restart",
        "target":{"service":"auth","instance":"auth-1","node":null},"code":"cooldown","reason":"cooldown",
        "first_refused_ms":3000,"refused_ms":3000,"attempts":1,"retry":{"when":"at","at_ms":23000}}],
    "ha":{"mode":"single","role":"leader"}}"#;

/// The healer's routes; its writes need [`TOKEN`], as the healer's do, and answer in its
/// shapes (the action, `{"paused"}`, `{"target", "was_blocked"}`).
fn healer() -> Router {
    fn write(headers: &HeaderMap, answer: String) -> Response {
        let token = headers.get("authorization").and_then(|v| v.to_str().ok());
        if token != Some(&format!("Bearer {TOKEN}")) {
            let body = r#"{"error":{"code":"unauthorized","message":"missing or wrong bearer token"}}"#;
            return (StatusCode::UNAUTHORIZED, json(body)).into_response();
        }
        ([("content-type", "application/json")], answer).into_response()
    }
    let answer = |status: &'static str| {
        move |headers: HeaderMap, Path(id): Path<String>| async move {
            if id != "act-1" {
                let body = format!(r#"{{"error":{{"code":"not_found","message":"no action {id}"}}}}"#);
                return (StatusCode::NOT_FOUND, body).into_response();
            }
            write(&headers, format!(r#"{{"action":{}}}"#, ACTION.replace("awaiting_approval", status)))
        }
    };
    let paused =
        |paused: bool| move |headers: HeaderMap| async move { write(&headers, format!(r#"{{"paused":{paused}}}"#)) };
    Router::new()
        .route("/healthz", get(|| async { json(r#"{"status":"alive"}"#) }))
        .route("/api/v1/state", get(|| async { json(STATE) }))
        .route(
            "/api/v1/actions",
            get(|| async { ([("content-type", "application/json")], format!(r#"{{"actions":[{ACTION}]}}"#)) }),
        )
        .route("/api/v1/actions/{id}/approve", post(answer("running")))
        .route("/api/v1/actions/{id}/reject", post(answer("rejected")))
        .route("/api/v1/pause", post(paused(true)))
        .route("/api/v1/resume", post(paused(false)))
        .route(
            "/api/v1/targets/{kind}/{name}/reset",
            post(|headers: HeaderMap, Path((kind, name)): Path<(String, String)>| async move {
                write(&headers, format!(r#"{{"target":"{kind}/{name}","was_blocked":{}}}"#, name == "orders-2"))
            }),
        )
}

#[tokio::test]
async fn a_refresh_reads_every_api_into_the_snapshot() {
    let log_queries = Arc::new(Mutex::new(Vec::new()));
    let agent = serve(Router::new().route("/api/v1/processes", get(|| async { json(PROCESSES) }))).await;
    let endpoints = Endpoints {
        collector: serve(collector(log_queries.clone())).await,
        healer: serve(healer()).await,
        // node-2's agent is gone (nothing listens on port 9 of loopback).
        agents: vec![("node-1".into(), agent), ("node-2".into(), "http://127.0.0.1:9".into())],
    };
    let mut source = Source::new(endpoints);
    source.focus = Some("search".into());
    let s = source.refresh(NOW_MS).await;
    assert!(source.collector.is_up() && source.healer.is_up(), "{:?} {:?}", source.collector, source.healer);
    assert_eq!(s.at_ms, NOW_MS);
    let nodes = s.nodes.as_ref().expect("nodes");
    assert_eq!(
        (nodes[0].node.as_str(), nodes[0].agent_up, nodes[0].cpu_used_ratio, nodes[0].disk_used_ratio),
        ("node-1", true, Some(0.42), None)
    );
    let search = &s.services.as_ref().expect("services")[0];
    assert_eq!((search.name.as_str(), search.ready(), search.restarts_1h), ("search", 1, Some(3.0)));
    // The agent says search-1 runs (a pid): down by its probes, so hung, not dead.
    assert_eq!(search.replicas[0].state, hale_tui::model::ReplicaState::NotReady);
    assert_eq!(search.replicas[0].last_error.as_deref(), Some("timed out"));
    let slo = &s.slos.as_ref().expect("slos")[0];
    assert_eq!((slo.objective, slo.burn_1h, slo.burn_6h, slo.status), (99.9, Some(20.0), None, SloStatus::Page));
    let alerts = s.alerts.as_ref().expect("alerts");
    assert_eq!(
        alerts.iter().map(|a| (a.name.as_str(), a.firing)).collect::<Vec<_>>(),
        [("ReplicaDown", true), ("CpuSaturated", false)]
    );
    assert_eq!(s.alert_group_by, ["alertname", "service"]);
    let silences = s.silences.as_ref().expect("silences");
    assert_eq!(silences.len(), 1, "expired ones left out");
    assert_eq!(silences[0].matchers, r#"alertname="ReplicaDown""#);
    assert!(s.silenced(&alerts[0]) && !s.silenced(&alerts[1]));
    assert_eq!(s.cpu_history["node-1"], [0.25, 0.5], "points that are not numbers left out");
    let logs = s.logs.as_ref().expect("logs");
    assert_eq!(logs.iter().map(|l| l.level.as_str()).collect::<Vec<_>>(), ["error", "info"], "oldest first");
    assert_eq!(logs[1].detail, "latency_ms=1.9 route=/api/search status=200");
    assert_eq!(logs[1].time_ms, 1_789_999_999_000);
    assert_eq!(log_queries.lock().expect("lock").as_slice(), ["limit=500"]);
    let focus = s.focus.as_ref().expect("the focused service's traffic");
    assert_eq!((focus.service.as_str(), focus.rate.as_slice()), ("search", [(1_789_999_995.0, 7.5)].as_slice()));
    assert_eq!(s.processes["node-1"].as_ref().map(|p| (p[0].name.as_str(), p[0].pid)), Some(("search-1", Some(4242))));
    assert_eq!(s.processes["node-2"], None, "an agent that does not answer is missing");
    let h = s.healer.as_ref().expect("healer");
    assert!(h.dry_run && !h.paused);
    assert_eq!((h.actions[0].id.as_str(), h.actions[0].target.as_str()), ("act-1", "instance/search-1"));
    assert!(h.actions[0].awaiting_approval());
    assert_eq!(h.needs_human, [("instance/orders-2".to_string(), "act-0 failed".to_string())]);
    assert_eq!((h.refused[0].target.as_str(), &h.refused[0].retry), ("instance/auth-1", &Retry::At(23000)));
}

#[tokio::test]
async fn an_api_away_is_a_banner_and_an_answer_off_contract_a_missing_part() {
    let broken = Router::new()
        .route("/api/v1/cluster", get(|| async { json(r#"{"status":"success","data":{"nodes":[{"node":"n"}]}}"#) }))
        .route("/api/v1/slos", get(|| async { json(SLOS) }))
        .route("/api/v1/alerts", get(|| async { json(ALERTS) }));
    let failing = Router::new().route("/api/v1/actions", get(|| async { json(r#"{"actions":[]}"#) })).route(
        "/api/v1/state",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, json(r#"{"error":{"code":"x","message":"disk full"}}"#)) }),
    );
    let mut source =
        Source::new(Endpoints { collector: serve(broken).await, healer: serve(failing).await, agents: Vec::new() });
    let s = source.refresh(NOW_MS).await;
    // The collector answers: it is up, its cluster view (an older shape) is missing.
    assert!(source.collector.is_up());
    assert_eq!((s.nodes, s.services), (None, None));
    assert!(s.slos.is_some() && s.alerts.is_some());
    // The healer does not answer its state: a banner with its reason, and a retry later.
    match &source.healer {
        Link::Reconnecting { attempt: 1, error, .. } => assert_eq!(error, "HTTP 500: disk full"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.healer, None);
    let mut nowhere = Source::new(Endpoints {
        collector: "http://127.0.0.1:9".into(),
        healer: "not a url".into(),
        agents: Vec::new(),
    });
    nowhere.refresh(NOW_MS).await;
    assert!(
        matches!(&nowhere.collector, Link::Reconnecting { error, .. } if error == "connection refused"),
        "{:?}",
        nowhere.collector
    );
    assert!(
        matches!(&nowhere.healer, Link::Reconnecting { error, .. } if error.contains("not an http URL")),
        "{:?}",
        nowhere.healer
    );
}

#[tokio::test]
async fn the_healer_client_makes_every_call_the_dashboard_and_the_cli_make() {
    let base = serve(healer()).await;
    let h = Healer::new(&base, Some(TOKEN.into())).expect("client");
    assert_eq!(h.health().await.expect("health").status, "alive");
    let state = h.state().await.expect("state");
    assert_eq!((state.dry_run, state.in_flight.as_slice()), (true, ["act-1".to_string()].as_slice()));
    assert_eq!(h.actions().await.expect("actions").actions[0].id, "act-1");
    use hale_core::api::ActionStatus;
    assert_eq!(h.approve("act-1").await.expect("approve").action.status, ActionStatus::Running);
    assert_eq!(h.reject("act-1").await.expect("reject").action.status, ActionStatus::Rejected);
    assert!(h.set_paused(true).await.expect("pause").paused);
    assert!(!h.set_paused(false).await.expect("resume").paused);
    let reset = h.reset("instance/orders-2").await.expect("reset");
    assert_eq!((reset.target.as_str(), reset.was_blocked), ("instance/orders-2", true));
    match h.approve("act-9").await {
        Err(ClientError::Status { status: 404, message, .. }) => assert_eq!(message, "no action act-9"),
        other => panic!("{other:?}"),
    }
    // Without the token, or with another: refused, in the healer's words.
    for token in [None, Some("wrong".to_string())] {
        let h = Healer::new(&base, token).expect("client");
        match h.set_paused(true).await {
            Err(ClientError::Unauthorized { message, .. }) => assert_eq!(message, "missing or wrong bearer token"),
            other => panic!("{other:?}"),
        }
    }
}
