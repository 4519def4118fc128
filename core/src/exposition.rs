//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0: parsing what
//! services expose, and writing what the agent serves.
//!
//! The parser reads types (`# TYPE`) and help text, resolves escapes, keeps OpenMetrics
//! exemplars (`… # {trace_id=\"…\"} 0.31 1700000000.5`) with their sample,
//! drops OpenMetrics' `_created` series of typed families (as Prometheus does by default;
//! a gauge that happens to end in `_created` is kept), and names the line of every error.
//! The encoder writes the text format 0.0.4.
//!
//! Written here rather than taken from a crate because the available parsers fold
//! histograms into their own structures or lose OpenMetrics counter types, while a
//! scraper has to keep every series exactly as exposed.

use crate::metrics::{Exemplar, Family, Labels, MetricKind, Sample};

/// Which dialect a body is in; decided by the `Content-Type` of the scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps are integer milliseconds.
    Text,
    /// `application/openmetrics-text`: timestamps are float seconds, `# EOF` ends it.
    OpenMetrics,
}

impl Format {
    /// The dialect named by a `Content-Type` header.
    pub fn from_content_type(content_type: &str) -> Self {
        if content_type.trim_start().starts_with("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// A line that is not valid exposition, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Suffixes a sample may add to its family's name, by family type.
fn belongs(family: &Family, sample_name: &str) -> bool {
    let Some(rest) = sample_name.strip_prefix(family.name.as_str()) else { return false };
    match family.kind {
        _ if rest.is_empty() => true,
        MetricKind::Counter => matches!(rest, "_total" | "_created"),
        MetricKind::Histogram => matches!(rest, "_bucket" | "_sum" | "_count" | "_created"),
        MetricKind::Summary => matches!(rest, "_sum" | "_count" | "_created"),
        _ => false,
    }
}

/// Parses an exposition body into families, in order. `_created` series of OpenMetrics
/// are dropped (as Prometheus does by default).
pub fn parse(body: &str, format: Format) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    for (index, raw) in body.lines().enumerate() {
        let line_no = index + 1;
        let err = |message: String| ParseError { line: line_no, message };
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment == "EOF" {
                break;
            }
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue; // UNIT and free comments carry nothing a scraper keeps.
            }
            let name = parts.next().ok_or_else(|| err(format!("# {keyword} without a metric name")))?;
            if !valid_metric_name(name) {
                return Err(err(format!("invalid metric name {name:?}")));
            }
            let rest = parts.next().unwrap_or("");
            if families.last().is_none_or(|f| f.name != name) {
                families.push(Family::new(name, "", MetricKind::Untyped));
            }
            let family = families.last_mut().ok_or_else(|| err("no family".into()))?;
            if keyword == "HELP" {
                family.help = unescape_help(rest);
            } else {
                family.kind = match rest.trim() {
                    "counter" => MetricKind::Counter,
                    "gauge" => MetricKind::Gauge,
                    "histogram" | "gaugehistogram" => MetricKind::Histogram,
                    "summary" => MetricKind::Summary,
                    "untyped" | "unknown" | "info" | "stateset" => MetricKind::Untyped,
                    other => return Err(err(format!("unknown metric type {other:?}"))),
                };
            }
            continue;
        }
        let sample = parse_sample(line, format).map_err(err)?;
        let is_created_of_family = families.last().is_some_and(|f| {
            f.kind != MetricKind::Untyped && sample.name.strip_prefix(f.name.as_str()) == Some("_created")
        });
        if is_created_of_family {
            continue;
        }
        match families.last_mut() {
            Some(f) if belongs(f, &sample.name) => f.samples.push(sample),
            _ => {
                let mut f = Family::new(sample.name.clone(), "", MetricKind::Untyped);
                f.samples.push(sample);
                families.push(f);
            }
        }
    }
    Ok(families)
}

/// A metric name as Prometheus defines it: `[a-zA-Z_:][a-zA-Z0-9_:]*`. Every reader of
/// names from outside (exposition, remote_write, rule files) checks with this one.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

fn parse_sample(line: &str, format: Format) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remaining;
    }
    // An exemplar (OpenMetrics) follows a ` # `.
    let (rest, exemplar) = match rest.split_once(" # ") {
        Some((sample, exemplar)) => (sample, Some(exemplar)),
        None => (rest, None),
    };
    let (value, timestamp_ms) = value_and_time(name, rest, format)?;
    let exemplar = match exemplar {
        Some(text) if format == Format::OpenMetrics => Some(Box::new(parse_exemplar(name, text)?)),
        // The text format has no exemplars: what follows ` # ` is a comment.
        _ => None,
    };
    Ok(Sample { name: name.to_string(), labels, value, timestamp_ms, exemplar })
}

/// OpenMetrics caps an exemplar's label names and values together at 128 characters.
pub const MAX_EXEMPLAR_LABEL_CHARS: usize = 128;

/// `{trace_id="…"} 0.31 [1700000000.5]`, what follows a sample's ` # `.
fn parse_exemplar(name: &str, text: &str) -> Result<Exemplar, String> {
    let after_brace =
        text.trim_start().strip_prefix('{').ok_or_else(|| format!("{name}: an exemplar starts with '{{'"))?;
    let (labels, rest) = parse_labels(after_brace).map_err(|e| format!("{name}: exemplar: {e}"))?;
    let chars: usize = labels.iter().map(|(k, v)| k.chars().count() + v.chars().count()).sum();
    if chars > MAX_EXEMPLAR_LABEL_CHARS {
        return Err(format!(
            "{name}: exemplar labels have {chars} characters, more than OpenMetrics' {MAX_EXEMPLAR_LABEL_CHARS}"
        ));
    }
    let (value, timestamp_ms) =
        value_and_time(name, rest, Format::OpenMetrics).map_err(|e| format!("exemplar: {e}"))?;
    Ok(Exemplar { labels, value, timestamp_ms })
}

/// `<value> [<timestamp>]`, the timestamp in the format's unit.
fn value_and_time(name: &str, text: &str, format: Format) -> Result<(f64, Option<i64>), String> {
    let mut fields = text.split_whitespace();
    let value_text = fields.next().ok_or_else(|| format!("{name}: missing value"))?;
    let value = parse_value(value_text).ok_or_else(|| format!("{name}: invalid value {value_text:?}"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(ts) => Some(match format {
            Format::Text => ts.parse::<i64>().map_err(|_| format!("{name}: invalid timestamp {ts:?}"))?,
            Format::OpenMetrics => {
                let secs: f64 = ts.parse().map_err(|_| format!("{name}: invalid timestamp {ts:?}"))?;
                if !secs.is_finite() {
                    return Err(format!("{name}: invalid timestamp {ts:?}"));
                }
                (secs * 1000.0).round() as i64
            }
        }),
    };
    if fields.next().is_some() {
        return Err(format!("{name}: unexpected text after the timestamp"));
    }
    Ok((value, timestamp_ms))
}

/// Parses `a="x",b="y"}` (after the opening brace); returns the labels and what follows
/// the closing brace.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = text.find('=').ok_or("label without '='")?;
        let name = text[..eq].trim();
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        let after = text[eq + 1..].trim_start();
        let mut chars = after.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name}: value must be quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(|| format!("label {name}: unterminated value"))?;
        if labels.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(format!("label {name} appears twice"));
        }
        labels.push((name.to_string(), value));
        text = after[end + 1..].trim_start();
        if let Some(rest) = text.strip_prefix(',') {
            text = rest;
        } else if !text.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(value: f64, out: &mut String) {
    use std::fmt::Write;
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Writes families in the text format 0.0.4 (what `promtool check metrics` reads).
pub fn encode_text(families: &[Family]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for family in families {
        if family.samples.is_empty() {
            continue;
        }
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {} {help}", family.name);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            out.push_str(&sample.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(name);
                    out.push_str("=\"");
                    escape_label_value(value, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(sample.value, &mut out);
            if let Some(ts) = sample.timestamp_ms {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = r#"# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
# UNIT http_server_request_duration_seconds seconds
http_server_request_duration_seconds_sum{http_route="/a",code="200"} 0.5
http_server_request_duration_seconds_count{http_route="/a",code="200"} 3
http_server_request_duration_seconds_bucket{le="0.1",http_route="/a",code="200"} 2
http_server_request_duration_seconds_bucket{le="+Inf",http_route="/a",code="200"} 3 # {trace_id="abc"} 0.05 1.5
# HELP orders Orders by outcome.
# TYPE orders counter
orders_total{outcome="placed"} 7 1700000000.5
orders_created{outcome="placed"} 1700000000
# HELP up_ish A gauge.
# TYPE up_ish gauge
up_ish 1
# EOF
ignored_after_eof 1
"#;

    #[test]
    fn parses_openmetrics_families_types_and_timestamps() {
        let families = parse(OPENMETRICS, Format::OpenMetrics).expect("parse");
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["http_server_request_duration_seconds", "orders", "up_ish"]);
        assert_eq!(families[0].kind, MetricKind::Histogram);
        assert_eq!(families[0].samples.len(), 4);
        assert_eq!(families[0].samples[3].value, 3.0, "the exemplar is not the value");
        let exemplar = families[0].samples[3].exemplar.as_deref().expect("the bucket's exemplar");
        assert_eq!(exemplar.labels, [("trace_id".to_string(), "abc".to_string())]);
        assert_eq!((exemplar.value, exemplar.timestamp_ms), (0.05, Some(1500)));
        assert!(families[0].samples[2].exemplar.is_none());
        assert_eq!(families[1].kind, MetricKind::Counter);
        assert_eq!(families[1].samples.len(), 1, "_created dropped");
        assert_eq!(families[1].samples[0].name, "orders_total");
        assert_eq!(families[1].samples[0].timestamp_ms, Some(1_700_000_000_500));
        assert_eq!(families[2].help, "A gauge.");
    }

    #[test]
    fn parses_text_format_with_escapes_and_special_values() {
        let body = "# HELP node_x_total Help with \\\\ and \\n.\n# TYPE node_x_total counter\nnode_x_total{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\"} 12 1700000000000\nnan_metric NaN\nneg -Inf\n";
        let families = parse(body, Format::Text).expect("parse");
        assert_eq!(families[0].help, "Help with \\ and \n.");
        let s = &families[0].samples[0];
        assert_eq!(s.labels, vec![("path".into(), "C:\\dir".into()), ("q".into(), "say \"hi\"".into())]);
        assert_eq!(s.timestamp_ms, Some(1_700_000_000_000));
        assert!(families[1].samples[0].value.is_nan());
        assert_eq!(families[2].samples[0].value, f64::NEG_INFINITY);
        assert_eq!(families[1].kind, MetricKind::Untyped);
    }

    #[test]
    fn a_gauge_named_created_is_kept() {
        let families = parse("# TYPE job_created gauge\njob_created 1\n", Format::Text).expect("parse");
        assert_eq!(families[0].samples.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        for (body, line) in [
            ("ok 1\nbad{ 1\n", 2),
            ("a 1\nb{x=\"1\",x=\"2\"} 1\n", 2),
            ("1bad 1\n", 1),
            ("a{x=1} 1\n", 1),
            ("a notanumber\n", 1),
            ("# TYPE a wrong\n", 1),
            ("a 1 2 3\n", 1),
        ] {
            let err = parse(body, Format::Text).expect_err(body);
            assert_eq!(err.line, line, "{body:?}: {err}");
        }
    }

    #[test]
    fn bad_exemplars_are_errors_naming_the_line() {
        let long = format!("a_bucket{{le=\"1\"}} 1 # {{trace_id=\"{}\"}} 0.5\n", "x".repeat(121));
        for body in [
            "a_bucket{le=\"1\"} 1 # trace_id=\"x\" 0.5\n",
            "a_bucket{le=\"1\"} 1 # {trace_id=\"x\"}\n",
            "a_bucket{le=\"1\"} 1 # {trace_id=\"x\"} 0.5 1 2\n",
            "a_bucket{le=\"1\"} 1 # {trace_id=\"x} 0.5\n",
            long.as_str(),
        ] {
            let err = parse(&format!("# TYPE a histogram\n{body}"), Format::OpenMetrics).expect_err(body);
            assert_eq!(err.line, 2, "{body:?}: {err}");
        }
        // 128 characters exactly is allowed; a text-format ` # ` is not an exemplar.
        let at_limit = format!("a_bucket{{le=\"1\"}} 1 # {{trace_id=\"{}\"}} 0.5\n", "x".repeat(120));
        assert!(parse(&at_limit, Format::OpenMetrics).expect("parse")[0].samples[0].exemplar.is_some());
        let text = parse("a 1 # {trace_id=\"x\"} 0.5\n", Format::Text).expect("parse");
        assert!(text[0].samples[0].exemplar.is_none());
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let mut counter =
            Family::new("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", MetricKind::Counter);
        counter.push(&[("cpu", "0"), ("mode", "idle")], 1234.5).push(&[("cpu", "0"), ("mode", "user")], 0.25);
        let mut odd = Family::new("weird", "quotes \" and \\ and\nnewline", MetricKind::Gauge);
        odd.push(&[("v", "a\"b\\c\nd")], f64::INFINITY);
        let families = vec![counter, odd];
        let text = encode_text(&families);
        let back = parse(&text, Format::Text).expect("parse");
        assert_eq!(back, families);
    }

    #[test]
    fn content_type_selects_the_dialect() {
        assert_eq!(Format::from_content_type("application/openmetrics-text; version=1.0.0"), Format::OpenMetrics);
        assert_eq!(Format::from_content_type("text/plain; version=0.0.4"), Format::Text);
    }
}
