//! Fuzz targets: every decoder and parser that takes bytes from outside — over the
//! network (exposition text, remote_write, OTLP logs and traces, webhooks), from disk
//! after a crash (the collector's WAL, an agent's queue), from an operator (every config
//! format) and from a user (PromQL, evaluated on a small fixed store). Each target takes
//! any bytes and must return without panicking, hanging or blowing up memory; what the
//! code under test answers (`Ok` or a clear error) is its own business.
//!
//! The same functions run three ways: under AFL++ (`src/bin/hale-fuzz.rs`, built with
//! `cargo afl build --features afl`), over the committed corpora in `fuzz/corpus/` and the
//! regressions in `fuzz/regressions/` as a plain test (`tests/corpora.rs`, in every CI
//! run), and from the seeds `hale-fuzz-seeds` writes. FUZZING.md says how and what was
//! found.

use std::path::Path;
use std::sync::OnceLock;

/// A target: a name (its corpus directory) and the function that takes the bytes.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order FUZZING.md lists them.
pub const TARGETS: &[Target] = &[
    Target { name: "exposition", run: exposition },
    Target { name: "remote_write", run: remote_write },
    Target { name: "otlp_logs", run: otlp_logs },
    Target { name: "otlp_traces", run: otlp_traces },
    Target { name: "wal", run: wal },
    Target { name: "agent_queue", run: agent_queue },
    Target { name: "webhook", run: webhook },
    Target { name: "cluster_toml", run: cluster_toml },
    Target { name: "agent_toml", run: agent_toml },
    Target { name: "collector_toml", run: collector_toml },
    Target { name: "healer_toml", run: healer_toml },
    Target { name: "rules", run: rules },
    Target { name: "slo", run: slo },
    Target { name: "policies", run: policies },
    Target { name: "promql", run: promql },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Prometheus text and OpenMetrics, as the agent's scraper reads them.
pub fn exposition(data: &[u8]) {
    use hale_core::exposition::{Format, parse};
    if let Some(body) = text(data) {
        let _ = parse(body, Format::Text);
        let _ = parse(body, Format::OpenMetrics);
    }
}

/// A remote_write body: snappy, then protobuf (the collector's `/api/v1/write`).
pub fn remote_write(data: &[u8]) {
    let _ = hale_core::remote_write::decode(data);
}

/// An OTLP logs request, protobuf (pre-scanned, then read in place) and JSON.
pub fn otlp_logs(data: &[u8]) {
    use hale_collector::logs::{check_json_size, check_protobuf_size, lines_of, wire};
    if check_protobuf_size(data).is_ok() {
        let _ = wire::for_each_record(data, |resource, record| {
            let _ = wire::StoredLine::new(resource, record);
            Ok(())
        });
    }
    if check_json_size(data).is_ok()
        && let Ok(request) = serde_json::from_slice(data)
    {
        let _ = lines_of(request);
    }
}

/// An OTLP traces request, protobuf and JSON (checked before decoding).
pub fn otlp_traces(data: &[u8]) {
    let _ = hale_collector::traces::decode_request(data, false);
    let _ = hale_collector::traces::decode_request(data, true);
}

/// The collector's store opened on a WAL segment of arbitrary bytes: replayed into a
/// head (series, samples, batch ids), a torn or damaged tail cut, never a panic.
pub fn wal(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let wal = dir.path().join("wal");
    if std::fs::create_dir_all(&wal).is_err() || std::fs::write(wal.join("00000001.wal"), data).is_err() {
        return;
    }
    let _ = hale_collector::store::Store::open(dir.path());
}

/// An agent's disk queue opened on a segment of arbitrary bytes, then read to its end.
pub fn agent_queue(data: &[u8]) {
    use hale_agent::config::QueueConfig;
    use hale_agent::queue::DiskQueue as Queue;
    let Ok(dir) = tempfile::tempdir() else { return };
    if std::fs::write(dir.path().join(format!("{:020}.seg", 1)), data).is_err() {
        return;
    }
    let Ok((queue, _)) = Queue::open(dir.path(), QueueConfig::metrics(), &["r"]) else { return };
    // Each record once, acknowledged as a shipper would; bounded however the file reads.
    for _ in 0..10_000 {
        match queue.peek("r") {
            Ok(Some(record)) => {
                if queue.ack("r", record.next).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
}

/// A webhook as the healer takes it: the first line is the signature header, the rest
/// the body (verified, then parsed as Alertmanager's payload).
pub fn webhook(data: &[u8]) {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let header = std::str::from_utf8(header).ok();
    let _ = hale_core::webhook::verify(b"fuzzing-secret", header, body, 1_800_000_000);
    let _ = serde_json::from_slice::<hale_core::api::WebhookPayload>(body);
}

/// Runs `parse` on `data` if it is UTF-8 text (every config format is).
fn parse_text(data: &[u8], parse: impl FnOnce(&str)) {
    if let Some(source) = text(data) {
        parse(source);
    }
}

pub fn cluster_toml(data: &[u8]) {
    parse_text(data, |s| drop(hale_core::ClusterConfig::parse(s)));
}

pub fn agent_toml(data: &[u8]) {
    parse_text(data, |s| drop(hale_agent::config::AgentConfig::parse(s)));
}

/// collector.toml, parsed and then merged into a config (durations, routes, forwards).
pub fn collector_toml(data: &[u8]) {
    parse_text(data, |s| {
        if let Ok((file, _)) = hale_collector::config::CollectorFile::parse(s) {
            drop(file.into_config(Path::new("/etc/hale"), Default::default()));
        }
    });
}

pub fn healer_toml(data: &[u8]) {
    parse_text(data, |s| drop(hale_healer::inventory::Inventory::parse(s)));
}

pub fn rules(data: &[u8]) {
    parse_text(data, |s| drop(hale_collector::rules::file::RuleFile::parse(s)));
}

pub fn slo(data: &[u8]) {
    parse_text(data, |s| drop(hale_collector::slo::parse(s)));
}

pub fn policies(data: &[u8]) {
    parse_text(data, |s| drop(hale_healer::policy::PolicyFile::parse(s)));
}

/// The fixed store PromQL is evaluated on: a few counters, gauges and a histogram over
/// ten minutes, every 15 s, ending at [`PROMQL_AT`].
pub fn promql_store() -> &'static hale_collector::store::Store {
    static STORE: OnceLock<(tempfile::TempDir, hale_collector::store::Store)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temp dir for the PromQL store");
            let (store, _) = hale_collector::store::Store::open(dir.path()).expect("the PromQL store");
            let mut series = Vec::new();
            let points = |f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> {
                (0..40).map(|i| (PROMQL_AT - 600_000 + i * 15_000, f(i))).collect()
            };
            for (instance, rate) in [("a", 1.0), ("b", 3.0)] {
                let labels = |name: &str, extra: &[(&str, &str)]| -> Vec<(String, String)> {
                    let mut l = vec![("__name__".to_string(), name.to_string()), ("instance".into(), instance.into())];
                    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                    l.sort();
                    l
                };
                series.push((labels("requests_total", &[("code", "200")]), points(&|i| i as f64 * rate)));
                series.push((labels("requests_total", &[("code", "500")]), points(&|i| (i / 4) as f64)));
                series.push((labels("temperature", &[]), points(&|i| 20.0 + (i % 7) as f64 * rate)));
                for (le, share) in [("0.1", 0.5), ("1", 0.9), ("+Inf", 1.0)] {
                    series.push((
                        labels("latency_seconds_bucket", &[("le", le)]),
                        points(&|i| (i as f64 * 10.0 * share * rate).floor()),
                    ));
                }
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(store.ingest(series, None)).expect("the PromQL store's samples");
            (dir, store)
        })
        .1
}

/// When the PromQL target evaluates (the fixed store's last sample).
pub const PROMQL_AT: i64 = 1_790_000_000_000;

/// A PromQL query parsed, then evaluated at one instant and over a short range, within
/// a sample limit.
pub fn promql(data: &[u8]) {
    use hale_collector::query::{Limits, instant_query_within, range_query_within};
    let Some(query) = text(data) else { return };
    let store = promql_store();
    let limits = || Limits { deadline: None, max_samples: 200_000 };
    let _ = instant_query_within(store, query, PROMQL_AT, limits());
    let _ = range_query_within(store, query, PROMQL_AT - 300_000, PROMQL_AT, 30_000, limits());
}

/// Every file of `dir` (not recursing), sorted: a corpus.
pub fn corpus(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}
