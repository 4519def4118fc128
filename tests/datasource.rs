//! The collector as a Grafana Prometheus datasource: every server call Grafana's
//! datasource makes besides queries (build info, config, flags, runtime info, targets,
//! exemplars, query formatting) answers in the shape the real Prometheus 2.42 gives, side
//! by side with one that scrapes itself. Shapes are compared by their keys (values
//! differ: these are two different servers); typed reads go through core's types.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, eventually, free_addr};
use hale_core::api::{BuildInfo, ConfigYaml, Envelope, Flags, PROMETHEUS_API_VERSION, RuntimeInfo, Targets};
use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use serde_json::Value;

/// The keys of a JSON object (recursively for nested objects, as `a.b`).
fn keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            let key = format!("{prefix}{k}");
            keys(child, &format!("{key}."), out);
            out.insert(key);
        }
    }
}

fn key_set(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    keys(v, "", &mut out);
    out
}

fn series(labels: &[(&str, &str)], t: i64, v: f64) -> TimeSeries {
    TimeSeries {
        exemplars: Vec::new(),
        labels: labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect(),
        samples: vec![Sample { value: v, timestamp: t }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_calls_answer_in_prometheus_shapes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let prom_addr = free_addr();
    std::fs::write(
        tmp.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{prom_addr}']\n"
        ),
    )
    .expect("config");
    let _prometheus = common::spawn_prometheus(tmp.path(), prom_addr);
    let hale_addr = free_addr();
    let _collector = Proc(
        Command::new(env!("CARGO_BIN_EXE_hale"))
            .args(["collector", "--insecure-open-ingest", "--listen", &hale_addr.to_string(), "--retention", "2d"])
            .arg("--data-dir")
            .arg(tmp.path().join("collector"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("collector"),
    );
    common::wait_ready("prometheus", prom_addr).await;
    common::wait_ready("the collector", hale_addr).await;
    let client = reqwest::Client::new();
    let get = async |addr, path: &str, query: &[(&str, &str)]| -> Value {
        common::get_json(&client, &format!("http://{addr}/api/v1/{path}"), query).await.expect("a JSON answer")
    };
    // What an agent reports of two scrapes, one of them failing, every second, ending
    // `ago_ms` ago.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let report = async |ago_ms: i64| {
        for i in 0..3 {
            let t = now() - ago_ms - (2 - i) * 1000;
            let mut timeseries = Vec::new();
            for (instance, up) in [("search-1", 1.0), ("search-2", 0.0)] {
                let labels = [("job", "search"), ("instance", instance), ("node", "node-1")];
                for (name, v) in [("up", up), ("scrape_duration_seconds", 0.004)] {
                    let mut all = vec![("__name__", name)];
                    all.extend(labels);
                    all.sort();
                    timeseries.push(series(&all, t, v));
                }
            }
            common::send_remote_write(&client, hale_addr, remote_write::encode(&WriteRequest::of(timeseries))).await;
        }
    };
    let health = async || -> Vec<(String, String)> {
        let targets: Targets = serde_json::from_value::<Envelope<Targets>>(get(hale_addr, "targets", &[]).await)
            .expect("core's Targets")
            .into_data()
            .expect("success");
        targets.active_targets.iter().map(|t| (t.labels["instance"].clone(), t.health.clone())).collect()
    };
    // Reports a minute old: missing is never healthy.
    report(60_000).await;
    let unknown = [("search-1".to_string(), "unknown".to_string()), ("search-2".into(), "unknown".into())];
    assert_eq!(health().await, unknown);

    // Prometheus needs one scrape of itself for a target with every field filled.
    let prom_targets = eventually("Prometheus scraped itself", Duration::from_secs(30), async || {
        let v = get(prom_addr, "targets", &[]).await;
        (v["data"]["activeTargets"][0]["health"] == "up").then_some(v)
    })
    .await;
    report(0).await;
    let hale_targets = get(hale_addr, "targets", &[]).await;
    assert_eq!(key_set(&hale_targets), key_set(&prom_targets), "targets answer");
    // One target's fields (their labels differ: two different fleets).
    let fields = |v: &Value| key_set(v).into_iter().filter(|k| !k.contains('.')).collect::<BTreeSet<_>>();
    assert_eq!(
        fields(&hale_targets["data"]["activeTargets"][0]),
        fields(&prom_targets["data"]["activeTargets"][0]),
        "one target"
    );
    assert_eq!(health().await, [("search-1".into(), "up".into()), ("search-2".into(), "down".into())]);
    let targets: Targets = serde_json::from_value::<Envelope<Targets>>(hale_targets)
        .expect("core's Targets")
        .into_data()
        .expect("success");
    assert_eq!(targets.active_targets[0].scrape_pool, "search");
    assert_eq!(targets.active_targets[0].last_scrape_duration, 0.004);

    for path in ["status/buildinfo", "status/runtimeinfo", "status/config"] {
        let (prom, hale) = (get(prom_addr, path, &[]).await, get(hale_addr, path, &[]).await);
        assert_eq!(key_set(&hale), key_set(&prom), "{path}: {hale}");
    }
    let build: BuildInfo = serde_json::from_value::<Envelope<BuildInfo>>(get(hale_addr, "status/buildinfo", &[]).await)
        .expect("core's BuildInfo")
        .into_data()
        .expect("success");
    assert_eq!(build.version, PROMETHEUS_API_VERSION);
    assert!(build.revision.starts_with("hale "), "{build:?}");
    let runtime: RuntimeInfo =
        serde_json::from_value::<Envelope<RuntimeInfo>>(get(hale_addr, "status/runtimeinfo", &[]).await)
            .expect("core's RuntimeInfo")
            .into_data()
            .expect("success");
    assert!(runtime.goroutine_count > 0 && runtime.gomaxprocs > 0, "{runtime:?}");
    assert_eq!(runtime.storage_retention, "2days");
    let config: ConfigYaml = serde_json::from_value::<Envelope<ConfigYaml>>(get(hale_addr, "status/config", &[]).await)
        .expect("core's ConfigYaml")
        .into_data()
        .expect("success");
    assert!(config.yaml.contains("evaluation_interval: 15s"), "{}", config.yaml);
    let flags: Flags = serde_json::from_value::<Envelope<Flags>>(get(hale_addr, "status/flags", &[]).await)
        .expect("core's Flags")
        .into_data()
        .expect("success");
    assert_eq!(flags["listen"], hale_addr.to_string());
    assert_eq!(flags["ingest-token"], "unset", "a token is said to be set or not, never shown");
    assert!(get(prom_addr, "status/flags", &[]).await["data"].is_object());

    // Metadata: what a sender said of its families, in Prometheus's shape.
    let mut described = WriteRequest::of(Vec::new());
    described.metadata.push(remote_write::MetricMetadata {
        r#type: 1,
        metric_family_name: "shop_orders_total".into(),
        help: "Order requests by outcome.".into(),
        unit: String::new(),
    });
    common::send_remote_write(&client, hale_addr, remote_write::encode(&described)).await;
    let prom_meta = get(prom_addr, "metadata", &[("metric", "prometheus_build_info")]).await;
    let hale_meta = get(hale_addr, "metadata", &[("metric", "shop_orders_total")]).await;
    assert_eq!(
        key_set(&hale_meta["data"]["shop_orders_total"][0]),
        key_set(&prom_meta["data"]["prometheus_build_info"][0])
    );
    assert_eq!(hale_meta["data"]["shop_orders_total"][0]["type"], "counter");

    // Exemplars: none stored, an empty list; a broken query is refused as Prometheus does.
    let range = [("query", "up"), ("start", "0"), ("end", "100")];
    assert_eq!(get(hale_addr, "query_exemplars", &range).await, get(prom_addr, "query_exemplars", &range).await);
    let broken = [("query", "up{"), ("start", "0"), ("end", "100")];
    assert_eq!(get(hale_addr, "query_exemplars", &broken).await["errorType"], "bad_data");
    assert_eq!(get(prom_addr, "query_exemplars", &broken).await["errorType"], "bad_data");

    // A query past its timeout: Prometheus's 503 `timeout`, on both.
    let slow = [
        ("query", "max_over_time(vector(1)[1h:1s])"),
        ("start", "0"),
        ("end", "3600"),
        ("step", "1"),
        ("timeout", "1ms"),
    ];
    for addr in [prom_addr, hale_addr] {
        let r = client.get(format!("http://{addr}/api/v1/query_range")).query(&slow).send().await.expect("query");
        let status = r.status();
        let body = r.json::<Value>().await.expect("json");
        assert_eq!((status.as_u16(), &body["errorType"]), (503, &Value::from("timeout")), "{addr}: {body}");
    }

    // Format query: the same layout as Prometheus's formatter.
    for q in [
        "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / sum by (job) (rate(http_requests_total[5m]))",
        "up",
        "histogram_quantile(0.99, sum by (le, service) (rate(http_server_request_duration_seconds_bucket[5m])))",
    ] {
        let (prom, hale) = (
            get(prom_addr, "format_query", &[("query", q)]).await,
            get(hale_addr, "format_query", &[("query", q)]).await,
        );
        assert_eq!(hale, prom, "format_query {q}");
    }
}
