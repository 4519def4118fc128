//! The collector's Loki read API, as Grafana's Loki datasource calls it: labels and their
//! values, series, log queries (line filters, `| json`, label filters) as streams, metric
//! queries as a matrix or a vector, errors as Loki's 400s, and the live tail over a
//! WebSocket.

mod common;

use std::time::Duration;

use common::{eventually, free_addr};
use futures::StreamExt;
use hale_core::api::{Envelope, LokiData, LokiResult, LokiTail};
use serde_json::{Value, json};

/// An OTLP/JSON logs request: one resource (service, instance) and its records
/// (time in s, level, message, attributes).
fn otlp(service: &str, records: &[(u64, &str, &str, Value)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|(t, level, message, attrs)| {
            let attributes: Vec<Value> = attrs
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| match v {
                    Value::Number(n) => json!({"key": k, "value": {"intValue": n.to_string()}}),
                    other => json!({"key": k, "value": {"stringValue": other.as_str().unwrap_or_default()}}),
                })
                .collect();
            json!({"timeUnixNano": (t * 1_000_000_000).to_string(), "severityText": level, "body": {"stringValue": message}, "attributes": attributes})
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": service}},
            {"key": "service.instance.id", "value": {"stringValue": format!("{service}-1")}},
            {"key": "host.name", "value": {"stringValue": "node-1"}}
        ]},
        "scopeLogs": [{"logRecords": records}]
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafanas_loki_calls_answer_from_hales_logs() {
    let dir = tempfile::tempdir().expect("tmp");
    let addr = free_addr();
    let out = dir.path().join("collector.out");
    let mut collector = common::spawn_collector(addr, &dir.path().join("data"), &out, &[], &[]);
    common::collector_ready(&mut collector, addr, &out).await;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/loki/api/v1");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let t0 = now - 120;
    for body in [
        otlp(
            "orders",
            &[
                (t0, "error", "payment failed for order 7", json!({"status": 502, "user": "ann"})),
                (t0 + 10, "info", "order 8 placed", json!({"status": 201, "user": "bob"})),
                (t0 + 20, "error", "payment failed for order 9", json!({"status": 503, "user": "bob"})),
            ],
        ),
        otlp("search", &[(t0 + 30, "warn", "slow query", json!({}))]),
    ] {
        let r = client.post(format!("http://{addr}/v1/logs")).json(&body).send().await.expect("post");
        assert_eq!(r.status(), 200);
    }
    let window = [("start", (t0 - 60).to_string()), ("end", now.to_string())];
    let get = async |path: &str, extra: &[(&str, &str)]| -> reqwest::Response {
        let mut params: Vec<(&str, String)> = window.to_vec();
        params.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        client.get(format!("{base}/{path}")).query(&params).send().await.expect("get")
    };
    let data = async |path: &str, extra: &[(&str, &str)]| -> Value {
        let r = get(path, extra).await;
        assert_eq!(r.status(), 200, "{path} {extra:?}");
        r.json::<Value>().await.expect("json")["data"].clone()
    };

    // The label browser.
    assert_eq!(data("labels", &[]).await, json!(["instance", "level", "node", "service"]));
    assert_eq!(data("label/service/values", &[]).await, json!(["orders", "search"]));
    assert_eq!(data("label/level/values", &[("query", "{service=\"orders\"}")]).await, json!(["error", "info"]));
    let series = data("series", &[("match[]", "{level=\"warn\"}")]).await;
    assert_eq!(series, json!([{"instance": "search-1", "level": "warn", "node": "node-1", "service": "search"}]));

    // Log queries: newest first by default, a line filter, json and a label filter.
    let streams = async |query: &str, extra: &[(&str, &str)]| -> Vec<(Value, Vec<String>)> {
        let mut params = vec![("query", query)];
        params.extend_from_slice(extra);
        let r = get("query_range", &params).await;
        assert_eq!(r.status(), 200, "{query}");
        let data: LokiData = r.json::<Envelope<LokiData>>().await.expect("loki answer").into_data().expect("success");
        let LokiResult::Streams(streams) = data.result else { panic!("{query}: not streams") };
        streams
            .into_iter()
            .map(|s| {
                (serde_json::to_value(&s.stream).expect("json"), s.values.into_iter().map(|[_, line]| line).collect())
            })
            .collect()
    };
    let failed = streams(r#"{service="orders"} |= "payment""#, &[]).await;
    assert_eq!(failed.len(), 1, "one stream: orders at level error");
    assert_eq!(failed[0].1, ["payment failed for order 9", "payment failed for order 7"], "newest first");
    let forward = streams(r#"{service="orders"} |= "payment""#, &[("direction", "forward"), ("limit", "1")]).await;
    assert_eq!(forward[0].1, ["payment failed for order 7"]);
    let by_json = streams(r#"{service="orders"} | json | status >= 500 | user="bob""#, &[]).await;
    assert_eq!(by_json.len(), 1);
    assert_eq!(by_json[0].1, ["payment failed for order 9"]);
    assert_eq!(by_json[0].0["user"], "bob", "extracted labels are part of the stream");

    // Metric queries: a matrix over the range, a vector at an instant.
    let r = get(
        "query_range",
        &[("query", r#"sum by (level) (count_over_time({service="orders"}[5m]))"#), ("step", "60s")],
    )
    .await;
    let data: LokiData = r.json::<Envelope<LokiData>>().await.expect("loki").into_data().expect("success");
    let LokiResult::Matrix(matrix) = data.result else { panic!("not a matrix") };
    let error =
        matrix.iter().find(|s| s.metric.get("level").map(String::as_str) == Some("error")).expect("error series");
    assert_eq!(error.values.last().and_then(|p| p.value()), Some(2.0), "both errors within the last 5 minutes");
    let v = data_instant(&client, &base, r#"sum(count_over_time({level=~"error|warn"}[10m]))"#, now).await;
    assert_eq!(v, json!([{"metric": {}, "value": [now as f64, "3"]}]));

    // Errors are Loki's 400s with what is wrong.
    let r = get("query_range", &[("query", r#"{service="orders"} | logfmt"#)]).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.expect("text").contains("not supported"));
    let r = get("query_range", &[("query", r#"{service=~".*"}"#)]).await;
    assert_eq!(r.status(), 400);

    // The live tail: the backlog, then a new line as it arrives.
    let ws_url = format!(
        "ws://{addr}/loki/api/v1/tail?query={}&start={}",
        urlencode(r#"{service="orders"} |= "failed""#),
        t0 - 60
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.expect("websocket");
    let next = async |socket: &mut tokio_tungstenite::WebSocketStream<_>| -> LokiTail {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a message in time");
        let text = message.expect("open").expect("message").into_text().expect("text");
        serde_json::from_str(&text).expect("a tail message")
    };
    let backlog = next(&mut socket).await;
    assert_eq!(backlog.streams[0].values.len(), 2);
    let late = otlp("orders", &[(now, "error", "payment failed for order 10", json!({}))]);
    eventually("the new line is stored", Duration::from_secs(10), async || {
        let r = client.post(format!("http://{addr}/v1/logs")).json(&late).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let live = next(&mut socket).await;
    assert_eq!(live.streams[0].values[0][1], "payment failed for order 10");
    socket.close(None).await.expect("close");
}

async fn data_instant(client: &reqwest::Client, base: &str, query: &str, at: u64) -> Value {
    let r = client
        .get(format!("{base}/query"))
        .query(&[("query", query.to_string()), ("time", at.to_string())])
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "{query}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["data"]["resultType"], "vector");
    body["data"]["result"].clone()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
