//! Writes the seed corpora (`hale-fuzz-seeds [DIR]`, default `fuzz/corpus`): the repo's
//! own config files, and inputs of every wire and disk format made by the code that
//! writes them (so the fuzzer starts from valid inputs and mutates from there). The
//! seeds are committed; run this again when a format changes.

use std::path::{Path, PathBuf};

use hale_core::remote_write::{self, Exemplar, Label, Sample, TimeSeries, WriteRequest};
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut written = 0;
    let mut seed = |target: &str, name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        written += 1;
        Ok(())
    };
    for (i, text) in EXPOSITION.iter().enumerate() {
        seed("exposition", &i.to_string(), text.as_bytes())?;
    }
    seed("remote_write", "series", &remote_write::encode(&write_request()))?;
    seed("remote_write", "empty", &remote_write::encode(&WriteRequest::default()))?;
    let logs = logs_request();
    seed("otlp_logs", "protobuf", &logs.encode_to_vec())?;
    seed("otlp_logs", "json", &serde_json::to_vec(&logs)?)?;
    let traces = traces_request();
    seed("otlp_traces", "protobuf", &traces.encode_to_vec())?;
    seed("otlp_traces", "json", &serde_json::to_vec(&traces)?)?;
    seed("wal", "segment", &wal_segment()?)?;
    seed("agent_queue", "segment", &queue_segment()?)?;
    let body = br#"{"version":"4","groupKey":"{}:{alertname=\"ReplicaDown\"}","status":"firing","receiver":"hale","groupLabels":{"alertname":"ReplicaDown"},"commonLabels":{"alertname":"ReplicaDown","service":"search"},"commonAnnotations":{},"externalURL":"http://127.0.0.1:9464","alerts":[{"status":"firing","labels":{"alertname":"ReplicaDown","service":"search","instance":"search-1","node":"node-1"},"annotations":{"summary":"search-1 fails its probe"},"startsAt":"2026-12-07T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"4f1c"}]}"#;
    let header = hale_core::webhook::sign(b"fuzzing-secret", 1_800_000_000, body);
    seed("webhook", "signed", &[header.as_bytes(), b"\n", body].concat())?;
    seed("webhook", "unsigned", body)?;
    for (target, file) in [
        ("cluster_toml", "config/cluster.toml"),
        ("agent_toml", "config/examples/agent.toml"),
        ("healer_toml", "config/examples/healer.toml"),
        ("rules", "config/rules.yml"),
        ("slo", "config/slo.yaml"),
        ("policies", "config/policies.yaml"),
    ] {
        seed(target, file.rsplit('/').next().unwrap_or(file), &std::fs::read(repo.join(file))?)?;
    }
    seed("collector_toml", "collector.toml", COLLECTOR_TOML.as_bytes())?;
    for (i, query) in PROMQL.iter().enumerate() {
        seed("promql", &i.to_string(), query.as_bytes())?;
    }
    println!("{written} seeds written under {}", out.display());
    Ok(())
}

const EXPOSITION: &[&str] = &[
    "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\",code=\"200\"} 1027 1395066363000\nhttp_requests_total{method=\"POST\",code=\"400\"} 3\n# TYPE temp gauge\ntemp{room=\"a \\\"b\\\" \\\\ c\\n\"} -1.5e3\n# TYPE lat histogram\nlat_bucket{le=\"0.1\"} 5\nlat_bucket{le=\"+Inf\"} 9\nlat_sum 3.2\nlat_count 9\n# TYPE q summary\nq{quantile=\"0.5\"} NaN\nq_sum 1\nq_count 2\n",
    "# TYPE shop_request_duration_seconds histogram\n# HELP shop_request_duration_seconds Latency.\n# UNIT shop_request_duration_seconds seconds\nshop_request_duration_seconds_bucket{le=\"0.005\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\",span_id=\"00f067aa0ba902b7\"} 0.004 1.7e9\nshop_request_duration_seconds_bucket{le=\"+Inf\"} 4\nshop_request_duration_seconds_sum 0.02\nshop_request_duration_seconds_count 4\nshop_request_duration_seconds_created 1.7e9\n# TYPE up gauge\nup 1\n# EOF\n",
    "# TYPE info_thing info\ninfo_thing_info{version=\"1.2\"} 1\n# TYPE s stateset\ns{s=\"a\"} 1\ns{s=\"b\"} 0\n# EOF\n",
];

const COLLECTOR_TOML: &str = "listen = \"127.0.0.1:9464\"\ndata_dir = \"/var/lib/hale-collector\"\nretention = \"15d\"\n\
    retention_bytes = 0\nmin_free_bytes = 268435456\ncheckpoint_interval = \"5m\"\nrule_files = [\"rules.yml\"]\n\
    evaluation_interval = \"15s\"\nslo_files = [\"slo.yaml\"]\n[external_labels]\ncluster = \"prod\"\n[notify]\n\
    webhooks = [\"http://127.0.0.1:9465/hooks/alertmanager\"]\ngroup_wait = \"1s\"\n[[forward]]\n\
    url = \"http://127.0.0.1:8428/api/v1/write\"\n";

const PROMQL: &[&str] = &[
    "requests_total",
    "sum by (instance) (rate(requests_total{code=~\"5..\"}[1m])) / sum by (instance) (rate(requests_total[1m]))",
    "histogram_quantile(0.99, sum by (le) (rate(latency_seconds_bucket[5m])))",
    "max_over_time(temperature[10m]) - min_over_time(temperature[10m] offset 1m)",
    "predict_linear(temperature[5m], 3600) > 25 and on (instance) temperature",
    "topk(1, increase(requests_total[5m])) unless requests_total{code=\"500\"}",
    "count_values(\"v\", temperature)",
    "absent(nothing_here{job=\"x\"})",
    "label_replace(temperature, \"host\", \"$1\", \"instance\", \"(.*)\")",
    "avg_over_time(rate(requests_total[1m])[5m:30s])",
    "quantile_over_time(0.9, temperature[10m]) * on (instance) group_left requests_total",
    "sort_desc(sum without (code) (requests_total)) @ 1790000000",
    "vector(1) + scalar(sum(temperature))",
    "clamp(temperature, 0, 21) or time()",
    "-(temperature ^ 2) % 7 atan2 temperature",
    "{__name__=~\"req.*\", code!=\"200\"}[2m:15s]",
];

fn write_request() -> WriteRequest {
    let label = |n: &str, v: &str| Label { name: n.into(), value: v.into() };
    let mut series = TimeSeries::new(
        vec![label("__name__", "http_requests_total"), label("instance", "a"), label("job", "shop")],
        vec![Sample { value: 1.0, timestamp: 1_790_000_000_000 }, Sample { value: 2.0, timestamp: 1_790_000_015_000 }],
    );
    series.exemplars.push(Exemplar {
        labels: vec![label("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
        value: 0.004,
        timestamp: 1_790_000_000_000,
    });
    WriteRequest { timeseries: vec![series], metadata: Vec::new() }
}

fn string_value(s: &str) -> opentelemetry_proto::tonic::common::v1::AnyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    AnyValue { value: Some(any_value::Value::StringValue(s.into())) }
}

fn attribute(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    opentelemetry_proto::tonic::common::v1::KeyValue {
        key: key.into(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

fn resource() -> opentelemetry_proto::tonic::resource::v1::Resource {
    opentelemetry_proto::tonic::resource::v1::Resource {
        attributes: vec![attribute("service.name", "orders"), attribute("service.instance.id", "orders-1")],
        ..Default::default()
    }
}

fn logs_request() -> opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let record = LogRecord {
        time_unix_nano: 1_790_000_000_000_000_000,
        severity_text: "ERROR".into(),
        body: Some(string_value("payment failed")),
        attributes: vec![attribute("order_id", "o-1")],
        trace_id: vec![0x4b; 16],
        span_id: vec![0x00; 8],
        ..Default::default()
    };
    opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![ScopeLogs { log_records: vec![record], ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn traces_request() -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    let span = Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![0x01; 8],
        parent_span_id: vec![0x02; 8],
        name: "POST /api/orders".into(),
        kind: 2,
        start_time_unix_nano: 1_790_000_000_000_000_000,
        end_time_unix_nano: 1_790_000_000_012_000_000,
        attributes: vec![attribute("http.route", "/api/orders")],
        events: vec![span::Event { name: "retry".into(), ..Default::default() }],
        status: Some(Status { code: 2, message: "503".into() }),
        ..Default::default()
    };
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// A WAL segment as the collector writes it: series, samples and a batch id.
fn wal_segment() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use hale_collector::store::wal::{Record, Wal};
    let dir = tempfile::tempdir()?;
    let wal = Wal::open(dir.path())?;
    let records = [
        Record::Series { r: 1, labels: vec![("__name__".into(), "up".into()), ("job".into(), "shop".into())] },
        Record::Samples(vec![(1, 1_790_000_000_000, 1.0), (1, 1_790_000_015_000, 0.0)]),
        Record::BatchSeen { source: "node-1-abc.metrics".into(), seq: 7 },
    ];
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(wal.write(&records))?;
    drop(wal);
    Ok(std::fs::read(dir.path().join("00000001.wal"))?)
}

/// An agent queue segment as the agent writes it: three records.
fn queue_segment() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use hale_agent::config::QueueConfig;
    use hale_agent::queue::DiskQueue as Queue;
    let dir = tempfile::tempdir()?;
    let (queue, _) = Queue::open(dir.path(), QueueConfig::metrics(), &["r"])?;
    for body in [&b"first"[..], b"second", &[0u8; 300]] {
        queue.push(body)?;
    }
    drop(queue);
    let segment = hale_fuzz::corpus(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .ok_or("the queue wrote no segment")?;
    Ok(std::fs::read(segment)?)
}
