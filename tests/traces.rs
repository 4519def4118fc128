//! Traces end to end, on the real `hale up --headless` (its own loopback range, ports and
//! data dir): a purchase is one trace from the gateway through orders to the catalog's
//! primary and its standby, found by id and by search, with the order's log lines and a
//! latency exemplar pointing at stored traces; a latency fault shows as slow traces of
//! its replica, and the healer's restart is a trace the audit names.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::eventually;
use common::up::{Cluster, chaos, effective_config};
use hale_core::api::{Action, ActionStatus, ExemplarSeries, LogLine, TraceSearch};
use hale_shop::auth::TokenResponse;
use hale_shop::catalog::store::Product;
use serde_json::{Value, json};

/// One span of a trace as the collector's `/api/traces/<id>` gives it (OTLP/JSON).
#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    instance: String,
    name: String,
    span_id: String,
    parent: String,
    attributes: BTreeMap<String, Value>,
}

/// The spans of trace `id`, `None` until the collector has it.
async fn trace(client: &reqwest::Client, collector: &str, id: &str) -> Option<Vec<SpanSeen>> {
    let r = client.get(format!("{collector}/api/traces/{id}")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let body: Value = r.json().await.ok()?;
    let mut out = Vec::new();
    for batch in body["batches"].as_array()? {
        let resource = attributes(&batch["resource"]["attributes"]);
        let text = |k: &str| resource.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        for scope in batch["scopeSpans"].as_array()? {
            for span in scope["spans"].as_array()? {
                out.push(SpanSeen {
                    service: text("service.name"),
                    instance: text("service.instance.id"),
                    name: span["name"].as_str()?.to_string(),
                    span_id: span["spanId"].as_str()?.to_string(),
                    parent: span["parentSpanId"].as_str().unwrap_or_default().to_string(),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    Some(out)
}

/// OTLP/JSON key-values as key → the value inside its `AnyValue`.
fn attributes(list: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for kv in list.as_array().into_iter().flatten() {
        if let (Some(key), Some(value)) = (kv["key"].as_str(), kv["value"].as_object()) {
            out.insert(key.to_string(), value.values().next().cloned().unwrap_or(Value::Null));
        }
    }
    out
}

async fn search(client: &reqwest::Client, collector: &str, query: &[(&str, &str)]) -> Option<TraceSearch> {
    client.get(format!("{collector}/api/search")).query(query).send().await.ok()?.json().await.ok()
}

async fn token(client: &reqwest::Client, gateway: &str, user: &str, password: &str) -> String {
    let form = [("grant_type", "password"), ("username", user), ("password", password)];
    let r = client.post(format!("{gateway}/oauth/token")).form(&form).send().await.expect("token");
    r.json::<TokenResponse>().await.expect("token json").access_token
}

/// A W3C id of `bytes` random bytes, in hex.
fn random_id(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_found_by_id_search_logs_and_exemplars() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(tmp.path(), 5, &[]).await;
    let (gateway, collector) = (cluster.gateway(), cluster.collector());
    let config = effective_config(&cluster.data_dir);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let admin = token(&client, &gateway, "admin", "hale-admin").await;
    let shopper = token(&client, &gateway, "shopper", "hale-shopper").await;
    let lamp =
        json!({"name": "Traced lamp", "description": "Brass", "price_cents": 4200, "stock": 5, "tags": ["home"]});
    let r = client.post(format!("{gateway}/api/products")).bearer_auth(&admin).json(&lamp).send().await;
    let product: Product = r.expect("publish").json().await.expect("a product");

    // The shopper's client starts the trace (sampled), as an instrumented app would: the
    // default 10 % head sampling follows its decision.
    let (trace_id, client_span) = (random_id(16), random_id(8));
    let order = json!({"items": [{"product_id": product.id, "quantity": 1}], "shipping_address": "1 Span Street", "card_number": "4000 0566 5566 5556"});
    let r = client
        .post(format!("{gateway}/api/orders"))
        .bearer_auth(&shopper)
        .header("idempotency-key", "traced-1")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&order)
        .send()
        .await
        .expect("buy");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // By id: every hop, correctly parented.
    let primary = config.instances().into_iter().find(|i| i.name == "catalog-1").expect("catalog-1").name;
    // Each process exports its spans in its own batches: the trace is whole once the
    // standby's span is there and no span's parent is missing.
    let spans = eventually("the purchase's whole trace", Duration::from_secs(30), async || {
        let spans = trace(&client, &collector, &trace_id).await?;
        let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let whole = spans.iter().all(|s| s.parent == client_span || ids.contains(&s.parent.as_str()));
        (whole && spans.iter().any(|s| s.name == "catalog apply change")).then_some(spans)
    })
    .await;
    let by_id: HashMap<&str, &SpanSeen> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let root = spans.iter().find(|s| s.parent == client_span).expect("a span whose parent is the client's");
    assert_eq!((root.service.as_str(), root.name.as_str()), ("gateway", "POST /api/orders"));
    for span in &spans {
        assert!(span.parent == client_span || by_id.contains_key(span.parent.as_str()), "orphan: {span:?}");
    }
    // Each step's parent, walking up from the standby to the gateway.
    let parent_of = |s: &SpanSeen| by_id.get(s.parent.as_str()).copied();
    let server = |service: &str, name: &str| {
        spans.iter().find(|s| s.service == service && s.name == name).unwrap_or_else(|| panic!("{service} {name}"))
    };
    let orders = server("orders", "POST /api/orders");
    let reserve = server("catalog", "POST /api/products/reservations");
    assert_eq!(reserve.instance, primary, "the write went to the primary");
    let standby = server("catalog", "catalog apply change");
    assert_ne!(standby.instance, primary, "the standby applied it");
    let mut up = Some(standby);
    let mut chain = Vec::new();
    while let Some(s) = up {
        chain.push(format!("{} {}", s.instance, s.name));
        up = parent_of(s);
    }
    assert!(chain.iter().any(|c| c.ends_with("POST /api/products/reservations")), "{chain:?}");
    assert!(chain.iter().any(|c| c.starts_with("orders") && c.ends_with("POST /api/orders")), "{chain:?}");
    assert_eq!(chain.last().map(String::as_str), Some(format!("{} POST /api/orders", root.instance).as_str()));
    // Semantic conventions on the way: the route and status, the database calls.
    assert_eq!(orders.attributes.get("http.route"), Some(&json!("/api/orders")));
    assert_eq!(orders.attributes.get("http.response.status_code").and_then(Value::as_str), Some("201"));
    let insert = server("orders", "INSERT orders");
    assert_eq!(insert.attributes.get("db.system.name"), Some(&json!("sqlite")));
    assert_eq!(insert.attributes.get("db.operation.name"), Some(&json!("INSERT")));

    // By search: Tempo's tags and TraceQL.
    let found = |s: &TraceSearch| s.traces.iter().any(|t| t.trace_id == trace_id);
    let by_tags =
        search(&client, &collector, &[("tags", "service.name=orders name=\"POST /api/orders\""), ("limit", "500")]);
    assert!(by_tags.await.is_some_and(|s| found(&s)), "found by service and operation");
    let q = format!("{{ resource.service.instance.id = \"{}\" && name = \"catalog apply change\" }}", standby.instance);
    let by_traceql = search(&client, &collector, &[("q", q.as_str()), ("limit", "500")]).await.expect("search");
    assert!(found(&by_traceql), "found by TraceQL: {by_traceql:?}");

    // The order's log lines carry the trace's id.
    let lines = eventually("the order's log lines, by trace id", Duration::from_secs(30), async || {
        let url = format!("{collector}/api/v1/logs");
        let lines: Vec<LogLine> = common::get_data(&client, &url, &[("trace_id", trace_id.as_str())]).await?;
        lines.iter().any(|l| l.service == "orders" && l.message == "order placed").then_some(lines)
    })
    .await;
    assert!(lines.iter().all(|l| l.trace_id == trace_id));
    assert!(lines.iter().any(|l| l.service == "catalog"), "the catalog's lines too");

    // A latency exemplar of the orders service (from the scrape, through remote_write)
    // points at a stored trace.
    let exemplar = eventually("an exemplar of orders' latency", Duration::from_secs(30), async || {
        let url = format!("{collector}/api/v1/query_exemplars");
        let q = "histogram_quantile(0.99, rate(http_server_request_duration_seconds_bucket{service=\"orders\"}[5m]))";
        let series: Vec<ExemplarSeries> = common::get_data(&client, &url, &[("query", q)]).await?;
        series.into_iter().flat_map(|s| s.exemplars).find_map(|e| e.labels.get("trace_id").cloned())
    })
    .await;
    assert!(trace(&client, &collector, &exemplar).await.is_some(), "exemplar {exemplar} names a stored trace");

    // Span-derived RED metrics, through PromQL.
    eventually("span metrics of orders", Duration::from_secs(30), async || {
        let q = "sum(traces_span_metrics_calls_total{service_name=\"orders\",span_name=\"POST /api/orders\"})";
        (common::query_value(&client, &collector, q).await? > 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_fault_shows_as_slow_traces_and_the_healers_restart_is_a_trace() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(tmp.path(), 10, &[]).await;
    let collector = cluster.collector();
    let config = effective_config(&cluster.data_dir);
    let healer = format!("http://{}", config.healer.listen);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    // 300 ms on every request of search-1: slow, though not so slow that its probes fail.
    chaos(&cluster.data_dir, &["latency", "search-1", "--ms", "300", "--duration", "30s"]);
    // Shoppers' searches, traced from their client (sampled), half of them to search-1.
    let gateway = cluster.gateway();
    for _ in 0..20 {
        let traceparent = format!("00-{}-{}-01", random_id(16), random_id(8));
        let r = client.get(format!("{gateway}/api/search?q=lamp")).header("traceparent", traceparent).send().await;
        assert!(r.is_ok_and(|r| r.status().is_success()));
    }
    let q = "{ resource.service.instance.id = \"search-1\" && duration > 250ms }";
    let slow = eventually("slow traces of search-1", Duration::from_secs(60), async || {
        let found = search(&client, &collector, &[("q", q), ("limit", "50")]).await?;
        // A shopper's request through the gateway (search's own change-feed long-polls
        // wait on purpose and are no evidence).
        found.traces.iter().any(|t| t.root_service_name == "gateway").then_some(found)
    })
    .await;
    assert!(slow.traces.iter().all(|t| t.duration_ms >= 250), "{slow:?}");
    for found in slow.traces.iter().filter(|t| t.root_service_name == "gateway") {
        let spans = trace(&client, &collector, &found.trace_id).await.expect("a found trace is stored");
        let own = spans.iter().find(|s| s.instance == "search-1").expect("a span of search-1");
        assert_eq!(own.name, "GET /api/search", "{spans:?}");
    }
    let others = "{ resource.service.instance.id = \"search-2\" && name = \"GET /api/search\" && duration > 250ms }";
    let fast = search(&client, &collector, &[("q", others), ("limit", "20")]).await.expect("search");
    assert!(fast.traces.is_empty(), "the other replica is not slow: {fast:?}");

    // A hung replica: the healer restarts it, and the repair is one trace. Seen ready
    // first, so its failure is a ReplicaDown.
    eventually("search-2 seen ready", Duration::from_secs(60), async || {
        let q = "max_over_time(probe_success{probe=\"readyz\",instance=\"search-2\"}[1h])";
        (common::query_value(&client, &collector, q).await? == 1.0).then_some(())
    })
    .await;
    chaos(&cluster.data_dir, &["hang", "search-2", "--duration", "120s"]);
    let action: Action = eventually("a verified restart of search-2", Duration::from_secs(90), async || {
        let list: hale_core::api::ActionList =
            client.get(format!("{healer}/api/v1/actions")).send().await.ok()?.json().await.ok()?;
        list.actions
            .into_iter()
            .find(|a| a.target.instance.as_deref() == Some("search-2") && a.status == ActionStatus::Succeeded)
    })
    .await;
    let repair = action.trace_id.clone().expect("the action names its trace");
    let audit = std::fs::read_to_string(cluster.data_dir.join("healer").join("audit.jsonl")).expect("audit");
    let records: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action_id"] == action.id.as_str())
        .collect();
    assert!(!records.is_empty() && records.iter().all(|r| r["trace_id"] == repair.as_str()), "{records:?}");
    let spans = eventually("the repair's trace", Duration::from_secs(30), async || {
        let spans = trace(&client, &collector, &repair).await?;
        // The root ends last, so it may come in a later batch than its steps.
        let has = |name: &str| spans.iter().any(|s| s.name == name);
        (has("verify repair") && has("heal ReplicaDown")).then_some(spans)
    })
    .await;
    let root = spans.iter().find(|s| s.parent.is_empty()).expect("the repair's root");
    assert_eq!((root.service.as_str(), root.name.as_str()), ("hale-healer", "heal ReplicaDown"));
    assert_eq!(root.attributes.get("hale.outcome"), Some(&json!("succeeded")));
    for step in ["safety checks", "restart instance/search-2", "verify repair"] {
        let span = spans.iter().find(|s| s.name == step).unwrap_or_else(|| panic!("{step} in {spans:?}"));
        assert_eq!(span.parent, root.span_id, "{step}");
    }
}
