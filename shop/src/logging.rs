//! JSON-lines logs, one object per line, to `<log-dir>/<instance>.log`:
//! `{"timestamp","level","message","service","instance","target", ...event fields}`, and
//! `trace_id`/`span_id` (hex, W3C) when the event happens inside a traced span: the agent
//! turns them into the OTLP record's own trace fields, so a trace's log lines are found
//! by its id.
//! Request bodies are never logged, so secrets and personal data cannot leak through here.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A `tracing` layer that writes each event as one JSON line.
pub struct JsonLines<W: Write + Send + 'static> {
    service: String,
    instance: String,
    out: Mutex<W>,
    /// The subscriber this layer is part of, to ask the tracing layer for a span's ids.
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl JsonLines<LineWriter<File>> {
    /// Appends to `path`, creating it and its folder.
    pub fn open(path: &Path, service: &str, instance: &str) -> std::io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(LineWriter::new(file), service, instance))
    }
}

impl<W: Write + Send + 'static> JsonLines<W> {
    pub fn new(out: W, service: &str, instance: &str) -> Self {
        JsonLines {
            service: service.into(),
            instance: instance.into(),
            out: Mutex::new(out),
            dispatch: std::sync::OnceLock::new(),
        }
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().into(), Value::String(s));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: Write + Send + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string().into(),
        );
        line.insert("level".into(), level_name(event.metadata().level()).into());
        line.insert("message".into(), fields.0.remove("message").unwrap_or(Value::String(String::new())));
        line.insert("service".into(), self.service.clone().into());
        line.insert("instance".into(), self.instance.clone().into());
        line.insert("target".into(), event.metadata().target().into());
        line.extend(fields.0);
        let ids = || match (ctx.event_span(event), self.dispatch.get()) {
            (Some(span), Some(dispatch)) => hale_trace::ids_in(dispatch, &span.id()),
            // An unsampled request has no span, but its ids.
            _ => hale_trace::request_ids(),
        };
        if !line.contains_key("trace_id")
            && let Some(ids) = ids()
        {
            line.insert("trace_id".into(), ids.trace_id.into());
            line.insert("span_id".into(), ids.span_id.into());
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A full disk must not take the service down; the line is lost, the request is not.
        let _ = out.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_json_object_per_event() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(buf.clone(), "search", "search-2"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(route = "/api/search", status = 429u64, latency_ms = 1.5, "request refused");
        });
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        let line: Value = serde_json::from_str(text.trim_end()).expect("one JSON line");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "request refused");
        assert_eq!(line["service"], "search");
        assert_eq!(line["instance"], "search-2");
        assert_eq!(line["route"], "/api/search");
        assert_eq!(line["status"], 429);
        assert!(line["timestamp"].as_str().expect("ts").ends_with('Z'));
    }

    /// A line logged inside a traced span names the span; one outside names none. Both
    /// sampled and unsampled traces: the line of an unsampled one still finds its trace
    /// if a later hop keeps it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_line_inside_a_traced_span_carries_its_trace_and_span_ids() {
        // Another dispatcher alive, so callsite interest is not decided for this one only.
        let _other = tracing::Dispatch::new(tracing_subscriber::registry());
        for ratio in [1.0, 0.0] {
            let buf = Buf::default();
            let mut config = hale_trace::Config::new("orders", "orders-1", "http://127.0.0.1:9/v1/traces");
            config.ratio = ratio;
            let pipeline = hale_trace::Tracing::start(config);
            let subscriber = tracing_subscriber::registry()
                .with(JsonLines::new(buf.clone(), "orders", "orders-1"))
                .with(pipeline.layer());
            let (ids, child_ids) = tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("request", otel.kind = "server");
                let _entered = span.enter();
                tracing::info!("order placed");
                let child = hale_trace::db_span("sqlite", "INSERT", "orders");
                let _in_child = child.enter();
                tracing::info!("row written");
                let ids = (hale_trace::trace_ids_of(&span), hale_trace::trace_ids_of(&child));
                drop(_in_child);
                drop(_entered);
                tracing::info!("outside");
                ids
            });
            let (ids, child_ids) = (ids.expect("a traced span"), child_ids.expect("a traced child"));
            let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
            let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
            assert_eq!(lines.len(), 3, "{text}");
            assert_eq!(lines[0]["trace_id"], ids.trace_id.as_str(), "ratio {ratio}: {text}");
            assert_eq!(lines[0]["span_id"], ids.span_id.as_str());
            assert_eq!(lines[1]["trace_id"], ids.trace_id.as_str());
            assert_eq!(lines[1]["span_id"], child_ids.span_id.as_str(), "the innermost span");
            assert!(lines[2].get("trace_id").is_none(), "outside every span: {text}");
        }
    }
}
