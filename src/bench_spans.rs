//! `hale bench spans`: how fast a collector stores spans, and what a span costs on disk.
//!
//! A collector of this binary is started pinned to one core (`taskset -c 0`); the bench
//! sends it OTLP/protobuf requests built beforehand (shop-like server spans: a route name,
//! the HTTP attributes, ids of their own), several at once from the other cores, and
//! reports spans stored a second, spans a second per CPU-second of the collector (what
//! one core sustains), and bytes on disk per stored span. Every request is fsynced
//! before it is answered, as in production.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message;

use crate::bench_query::{free_addr, spawn, wait_ready};

#[derive(Debug, clap::Args)]
pub struct SpansArgs {
    /// Spans to send.
    #[arg(long, default_value_t = 500_000)]
    pub spans: usize,
    /// Spans per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Pin the collector to this CPU (`taskset -c`); `none` leaves it free.
    #[arg(long, default_value = "0")]
    pub cpu: String,
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

/// One request of `n` spans from request number `r`: five services, each span a server
/// span of a shop route with the attributes the shop's spans carry, ten spans a trace.
fn request(r: usize, n: usize) -> Vec<u8> {
    const ROUTES: [(&str, &str); 4] =
        [("GET", "/api/products"), ("GET", "/api/products/{id}"), ("GET", "/api/search"), ("POST", "/api/orders")];
    let service = ["gateway", "catalog", "search", "orders", "auth"][r % 5];
    let base_ns = 1_796_000_000_000_000_000u64 + r as u64 * 1_000_000_000;
    let spans = (0..n)
        .map(|i| {
            let (method, route) = ROUTES[i % ROUTES.len()];
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(r as u64).to_be_bytes());
            // Ten spans a trace, as a request through a few services makes.
            trace_id[8..].copy_from_slice(&(i as u64 / 10 + 1).to_be_bytes());
            let start = base_ns + i as u64 * 1_000;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: ((r * n + i) as u64 + 1).to_be_bytes().to_vec(),
                name: format!("{method} {route}"),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000 + (i as u64 % 50) * 100_000,
                attributes: vec![
                    text("http.request.method", method),
                    text("http.route", route),
                    text("url.path", &route.replace("{id}", &(i % 1000).to_string())),
                    kv("http.response.status_code", any_value::Value::IntValue(if i % 50 == 0 { 500 } else { 200 })),
                    kv(hale_trace::ADJUSTED_COUNT, any_value::Value::DoubleValue(10.0)),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", service),
                    text("service.instance.id", &format!("{service}-{}", r % 3 + 1)),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The value of a metric (its first sample) in a `/metrics` text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(0.0)
}

pub async fn spans(args: SpansArgs) -> Result<()> {
    if args.batch == 0 || args.spans < args.batch {
        bail!("--spans must be at least --batch, and --batch more than 0");
    }
    let dir = tempfile::tempdir()?;
    let addr = free_addr()?;
    let program = std::env::current_exe()?.display().to_string();
    let collector_args = [
        "collector".to_string(),
        "--insecure-open-ingest".into(),
        "--listen".into(),
        addr.to_string(),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ];
    let started = if args.cpu == "none" {
        spawn(&program, &collector_args)?
    } else {
        let mut pinned = vec!["-c".to_string(), args.cpu.clone(), program];
        pinned.extend(collector_args);
        spawn("taskset", &pinned).context("taskset (util-linux) pins the collector to one core")?
    };
    let pid = started.0.id();
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    wait_ready(&client, &format!("{base}/-/ready")).await?;

    let requests = args.spans / args.batch;
    eprintln!("building {requests} requests of {} spans…", args.batch);
    let bodies: Vec<bytes::Bytes> = (0..requests).map(|r| request(r, args.batch).into()).collect();
    let wire: usize = bodies.iter().map(|b| b.len()).sum();
    let (cpu_before, _) = crate::bench_logs::cpu_seconds(pid)?;
    let t = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = std::sync::Arc::new(bodies);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, url, next, bodies) = (client.clone(), format!("{base}/v1/traces"), next.clone(), bodies.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return Ok::<(), anyhow::Error>(()) };
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("the collector answered {}", r.status());
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let wall = t.elapsed();
    let (cpu_after, _) = crate::bench_logs::cpu_seconds(pid)?;
    let cpu = cpu_after - cpu_before;
    let text = client.get(format!("{base}/metrics")).send().await?.text().await?;
    let stored = metric(&text, "hale_collector_spans_stored_total");
    let bytes = metric(&text, "hale_collector_trace_bytes");
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let sent = (requests * args.batch) as f64;
    println!(
        "spans sent            {sent:>12.0}  ({requests} requests of {}, {} at once)",
        args.batch, args.concurrency
    );
    println!("spans stored          {stored:>12.0}");
    println!("wall                  {:>12.2} s", wall.as_secs_f64());
    println!("stored / s            {:>12.0}", stored / wall.as_secs_f64());
    println!("collector CPU         {cpu:>12.2} s  (pinned to cpu {})", args.cpu);
    println!("stored / CPU-second   {:>12.0}  (one core's rate)", stored / cpu.max(1e-9));
    println!("wire bytes / span     {:>12.1}", wire as f64 / sent);
    println!("disk bytes / span     {:>12.1}", bytes / stored.max(1.0));
    println!("collector RSS         {rss:>12}");
    if stored < sent {
        bail!("{} spans were not stored", sent - stored);
    }
    drop(started);
    Ok(())
}
