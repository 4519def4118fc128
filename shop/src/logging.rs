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

/// A `tracing` layer that writes each event as one JSON line.
pub struct JsonLines<W: Write + Send + 'static> {
    service: String,
    instance: String,
    out: Mutex<W>,
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
        JsonLines { service: service.into(), instance: instance.into(), out: Mutex::new(out) }
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

impl<S: Subscriber, W: Write + Send + 'static> Layer<S> for JsonLines<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
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
        if !line.contains_key("trace_id")
            && let Some(ids) = hale_trace::active_ids()
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
}
