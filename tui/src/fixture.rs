//! A demo cluster a minute after search-1 hung: the state the dashboard's snapshot tests
//! draw and `hale bench tui` times frames of.

use std::collections::BTreeMap;

use hale_core::cluster::{AgentState, NodeView};

use crate::model::*;

pub const NOW: i64 = 1_790_000_000_000;

fn replica(instance: &str, node: &str, state: ReplicaState, restarts: f64) -> Replica {
    Replica { instance: instance.into(), node: Some(node.into()), state, restarts: Some(restarts), last_error: None }
}

/// A ready replica that never restarted.
fn ready(instance: &str, node: &str) -> Replica {
    replica(instance, node, ReplicaState::Ready, 0.0)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn action(
    id: &str,
    kind: &str,
    target: &str,
    status: &str,
    alert: &str,
    (ago_s, took_s): (i64, i64),
    detail: &str,
) -> Action {
    Action {
        id: id.into(),
        kind: kind.into(),
        policy: format!("{kind}-policy"),
        target: target.into(),
        status: status.into(),
        alert: alert.into(),
        created_ms: NOW - ago_s * 1000,
        updated_ms: NOW - (ago_s - took_s) * 1000,
        detail: detail.into(),
        trace_id: Some(format!("{:032x}", NOW as u128 + ago_s as u128)),
    }
}

fn process(name: &str, pid: u32, uptime: u64) -> Process {
    Process {
        name: name.into(),
        service: name.split('-').next().unwrap_or_default().into(),
        pid: Some(pid),
        state: "running".into(),
        restarts: 0,
        uptime_secs: Some(uptime),
        last_exit: None,
    }
}

fn service(name: &str, restarts_1h: f64, replicas: Vec<Replica>) -> Service {
    Service { name: name.into(), restarts_1h: Some(restarts_1h), replicas }
}

/// A restart the healer refused for now: why (its code and words), since when, how
/// often, and when it looks again.
pub fn refused_restart(
    alert: &str,
    target: &str,
    (code, reason): (&str, &str),
    first_refused_ms: i64,
    attempts: u32,
    retry: Retry,
) -> Refused {
    Refused {
        alert: alert.into(),
        action: "restart".into(),
        target: target.into(),
        code: code.into(),
        reason: reason.into(),
        first_refused_ms,
        attempts,
        retry,
    }
}

/// Sixty points, 5 s apart, ending at [`NOW`].
fn wave(value: impl Fn(usize) -> f64) -> Vec<(f64, f64)> {
    (0..60).map(|i| ((NOW / 1000 - 300) as f64 + i as f64 * 5.0, value(i))).collect()
}

/// A node whose agent reported a second ago, with its resource use (0..=1).
pub fn node(name: &str, cpu: f64, memory: f64, disk: f64) -> NodeView {
    NodeView {
        node: name.into(),
        agent: AgentState::Up,
        agent_up: true,
        last_seen_secs_ago: Some(1.0),
        interval_secs: Some(1.0),
        cpu_used_ratio: Some(cpu),
        memory_used_ratio: Some(memory),
        disk_used_ratio: Some(disk),
    }
}

/// The demo cluster a minute after search-1 hung: restarted, being verified.
pub fn demo() -> Snapshot {
    let slo = |service: &str, name: &str, objective: f64, sli: f64, left: f64, b1: f64, b6: f64, status| Slo {
        service: service.into(),
        name: name.into(),
        objective,
        sli: Some(sli),
        budget_left: Some(left),
        burn_1h: Some(b1),
        burn_6h: Some(b6),
        status,
    };
    let log = |ago_s: i64, instance: &str, level: &str, message: &str| LogLine {
        time_ms: NOW - ago_s * 1000,
        service: instance.split('-').next().unwrap_or_default().into(),
        instance: instance.into(),
        level: level.into(),
        message: message.into(),
        detail: if message == "request" {
            "method=GET route=/api/search status=200 latency_ms=1.9".into()
        } else {
            String::new()
        },
    };
    let trace_row = |id: &str, root: &str, ago_s: i64, ms: u32, failed: bool| crate::model::TraceRow {
        id: id.into(),
        root: root.into(),
        start_ms: NOW - ago_s * 1000,
        duration_ms: ms,
        failed,
    };
    let span =
        |depth: usize, instance: &str, name: &str, from_ms: u64, to_ms: u64, error: bool| crate::model::SpanRow {
            depth,
            service: instance.split('-').next().unwrap_or_default().into(),
            instance: instance.into(),
            name: name.into(),
            start_ns: NOW as u64 * 1_000_000 + from_ms * 1_000_000,
            end_ns: NOW as u64 * 1_000_000 + to_ms * 1_000_000,
            error,
            attributes: vec![
                ("http.route".into(), "/api/search".into()),
                ("http.response.status_code".into(), "504".into()),
            ],
        };
    Snapshot {
        ingest_refused: None,
        traces: Some(crate::model::ServiceTraces {
            slowest: vec![
                trace_row("4bf92f3577b34da6a3ce929d0e0e4736", "gateway: GET /api/search", 12, 10_012, false),
                trace_row("0af7651916cd43dd8448eb211c80319c", "gateway: GET /api/search", 40, 812, false),
            ],
            failed: vec![trace_row("4bf92f3577b34da6a3ce929d0e0e4736", "gateway: GET /api/search", 12, 10_012, true)],
        }),
        trace: Some(crate::model::TraceView {
            id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            spans: vec![
                span(0, "gateway-1", "GET /api/search", 0, 10_012, true),
                span(1, "gateway-1", "GET", 1, 10_010, true),
                span(2, "search-1", "GET /api/search", 3, 10_005, true),
            ],
            logs: vec![log(11, "search-1", "error", "request failed")],
        }),
        at_ms: NOW,
        nodes: Some(vec![
            node("node-1", 0.42, 0.61, 0.33),
            node("node-2", 0.18, 0.55, 0.33),
            node("node-3", 0.93, 0.58, 0.81),
        ]),
        services: Some(vec![
            service("auth", 0.0, vec![ready("auth-1", "node-1"), ready("auth-2", "node-2")]),
            service("catalog", 0.0, vec![ready("catalog-1", "node-2"), ready("catalog-2", "node-3")]),
            service(
                "search",
                1.0,
                vec![
                    Replica {
                        last_error: Some("request timed out after 10 s".into()),
                        ..replica("search-1", "node-3", ReplicaState::NotReady, 1.0)
                    },
                    ready("search-2", "node-1"),
                ],
            ),
            service(
                "orders",
                4.0,
                vec![ready("orders-1", "node-1"), replica("orders-2", "node-2", ReplicaState::Restarting, 4.0)],
            ),
        ]),
        slos: Some(vec![
            slo("gateway", "availability", 99.5, 0.9991, 0.82, 0.4, 0.2, SloStatus::Ok),
            slo("checkout", "availability", 99.9, 0.9962, -0.3, 21.5, 4.2, SloStatus::Page),
            slo("search", "latency", 99.0, 0.9874, 0.11, 3.1, 1.2, SloStatus::Ticket),
            Slo {
                sli: None,
                budget_left: None,
                burn_1h: None,
                burn_6h: None,
                ..slo("orders", "durability", 99.99, 0.0, 0.0, 0.0, 0.0, SloStatus::NoData)
            },
        ]),
        alerts: Some(vec![
            Alert {
                name: "ReplicaDown".into(),
                labels: labels(&[
                    ("alertname", "ReplicaDown"),
                    ("instance", "search-1"),
                    ("node", "node-3"),
                    ("service", "search"),
                    ("severity", "page"),
                ]),
                firing: true,
                active_at: "2026-09-21T14:12:50Z".into(),
                summary: "search replica search-1 on node-3 fails its readiness probe".into(),
            },
            Alert {
                name: "CpuSaturated".into(),
                labels: labels(&[("alertname", "CpuSaturated"), ("node", "node-3"), ("severity", "ticket")]),
                firing: false,
                active_at: "2026-09-21T14:13:10Z".into(),
                summary: "node-3 CPU above 90 %".into(),
            },
        ]),
        healer: Some(Healer {
            paused: false,
            dry_run: false,
            actions: vec![
                action(
                    "act-3",
                    "restart",
                    "instance/search-1",
                    "verifying",
                    "ReplicaDown",
                    (8, 0),
                    "restarted search-1 (pid 4242 → 4310)",
                ),
                action("act-2", "scale_out", "service/search", "awaiting_approval", "SearchLatencySLO", (30, 0), ""),
                action(
                    "act-1",
                    "failover",
                    "service/catalog",
                    "succeeded",
                    "CatalogPrimaryDown",
                    (600, 2),
                    "promoted catalog-2 to primary under epoch 2",
                ),
            ],
            needs_human: vec![("instance/orders-2".into(), "act-0 failed: crashed on every start".into())],
            refused: vec![
                refused_restart(
                    "CrashLooping",
                    "instance/auth-1",
                    (
                        "cooldown",
                        "cooldown: instance/auth-1 was acted on 40 s ago; the next action may come after 60 s",
                    ),
                    NOW - 75_000,
                    2,
                    Retry::At(NOW + 20_000),
                ),
                refused_restart(
                    "ReplicaDown",
                    "instance/search-2",
                    ("service_share", "1 of 3 search replicas are being acted on; at most 1 at once"),
                    NOW - 6_000,
                    1,
                    Retry::WhenFreed("search".into()),
                ),
            ],
        }),
        logs: Some(vec![
            log(40, "search-1", "info", "request"),
            log(20, "search-1", "warn", "request refused"),
            log(9, "search-1", "error", "request failed"),
            log(8, "orders-2", "error", "card vault unavailable"),
            log(2, "auth-1", "info", "token issued"),
        ]),
        cpu_history: [
            ("node-1".to_string(), vec![0.2, 0.3, 0.35, 0.4, 0.42]),
            ("node-3".to_string(), vec![0.5, 0.7, 0.9, 0.95, 0.93]),
        ]
        .into_iter()
        .collect(),
        processes: [
            (
                "node-1",
                vec![
                    process("gateway-1", 4101, 3600),
                    process("auth-1", 4102, 3600),
                    process("search-2", 4103, 3600),
                    process("orders-1", 4104, 3600),
                ],
            ),
            (
                "node-2",
                vec![
                    process("auth-2", 4201, 3600),
                    process("catalog-1", 4202, 3600),
                    Process {
                        state: "crash_loop".into(),
                        pid: None,
                        uptime_secs: None,
                        restarts: 4,
                        last_exit: Some("exit status 1".into()),
                        ..process("orders-2", 0, 0)
                    },
                ],
            ),
            ("node-3", vec![process("catalog-2", 4301, 3600), Process { restarts: 1, ..process("search-1", 4310, 8) }]),
        ]
        .into_iter()
        .map(|(node, list)| (node.to_string(), Some(list)))
        .collect(),
        alert_group_by: vec!["alertname".into()],
        silences: Some(vec![Silence {
            id: "5f1c9a2e-6b0d-4d1e-9c55-2f8a1d3e7b40".into(),
            matchers: "alertname=\"DiskFilling\", node=\"node-3\"".into(),
            state: "active".into(),
            ends_at: "2026-09-21T16:00:00Z".into(),
            comment: "log rotation fixed tomorrow".into(),
            matcher_list: vec![
                Matcher { name: "alertname".into(), value: "DiskFilling".into(), equal: true, regex: false },
                Matcher { name: "node".into(), value: "node-3".into(), equal: true, regex: false },
            ],
        }]),
        focus: Some(ServiceSeries {
            service: "search".into(),
            rate: wave(|i| 8.0 + (i % 7) as f64),
            errors: wave(|i| if i > 50 { 2.0 } else { 0.0 }),
            p50: wave(|_| 0.004),
            p99: wave(|i| if i > 50 { 0.4 } else { 0.02 }),
        }),
    }
}

/// What `hale up` with the defaults tells the dashboard about its cluster.
pub fn info() -> crate::info::ClusterInfo {
    let replicas = [
        ("auth-1", "127.0.1.1:8081", "node-1"),
        ("auth-2", "127.0.1.2:8082", "node-2"),
        ("catalog-1", "127.0.1.2:8083", "node-2, primary"),
        ("catalog-2", "127.0.1.3:8084", "node-3, standby"),
        ("search-1", "127.0.1.3:8085", "node-3"),
        ("search-2", "127.0.1.1:8086", "node-1"),
        ("orders-1", "127.0.1.1:8087", "node-1"),
        ("orders-2", "127.0.1.2:8088", "node-2"),
    ];
    crate::info::ClusterInfo {
        gateway: Some("http://127.0.0.1:8080".into()),
        collector: "http://127.0.0.1:9464".into(),
        healer: "http://127.0.0.1:9465".into(),
        agents: (1..=3).map(|n| (format!("node-{n}"), format!("http://127.0.1.{n}:9100"))).collect(),
        replicas: replicas.iter().map(|(i, a, n)| (i.to_string(), format!("http://{a}"), n.to_string())).collect(),
        logins: vec![("admin".into(), "hale-admin".into()), ("shopper".into(), "hale-shopper".into())],
        data_dir: Some("/home/sre/.hale".into()),
        load: Some("20 requests/s of browse, search and buy traffic".into()),
    }
}
