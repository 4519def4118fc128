//! LogQL, the subset Grafana's Loki datasource needs to show Hale's logs beside its
//! metrics: stream selectors (`{service="search", level=~"warn|error"}`), line filters
//! (`|=`, `!=`, `|~`, `!~`), `| json` (a line's attributes as labels), label filters
//! (`| status >= 500`, `| user="ann"`), and the metric forms `count_over_time`, `rate`,
//! `bytes_over_time`, `bytes_rate` over a log query, under `sum`, `count`, `min`, `max`
//! or `avg` with `by`/`without`. Anything else is refused with a message that says what
//! is supported.
//!
//! Hand-written: the one maintained LogQL parser crate is AGPL-3.0, which Hale (Apache-2.0)
//! cannot take. The stream labels of a line are `service`, `instance`, `node` and `level`.

use std::collections::BTreeMap;
use std::time::Duration;

use hale_core::api::{AttributeValue, LogLine};

/// A parse or evaluation error, said as Loki says them (a 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct LogqlError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, LogqlError> {
    Err(LogqlError(message.into()))
}

/// The labels a line is selected, grouped and returned by.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    Nre,
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<regex::Regex>,
}

impl Matcher {
    fn new(name: String, op: MatchOp, value: String) -> Result<Matcher, LogqlError> {
        let regex = match op {
            MatchOp::Re | MatchOp::Nre => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| LogqlError(format!("invalid regular expression {value:?}: {e}")))?,
            ),
            _ => None,
        };
        Ok(Matcher { name, op, value, regex })
    }

    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::Nre => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Stage {
    /// `|= "x"`, `!= "x"`, `|~ "re"`, `!~ "re"` on the line.
    Line { keep: bool, text: String, regex: Option<regex::Regex> },
    /// `| json`: the line's attributes become labels.
    Json,
    /// `| name op value`: string matchers, or a number comparison.
    Label(LabelFilter),
}

#[derive(Debug, Clone)]
pub enum LabelFilter {
    Text(Matcher),
    Number { name: String, cmp: Cmp, value: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// A log query: a stream selector and its pipeline.
#[derive(Debug, Clone)]
pub struct LogQuery {
    pub selector: Vec<Matcher>,
    pub pipeline: Vec<Stage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFn {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum MetricQuery {
    Range { func: RangeFn, query: LogQuery, range: Duration },
    Aggregate { op: AggOp, grouping: Option<Grouping>, inner: Box<MetricQuery> },
}

#[derive(Debug, Clone)]
pub enum Query {
    Log(LogQuery),
    Metric(MetricQuery),
}

impl Query {
    /// The log query a metric query counts over (the one whose lines must be read).
    pub fn log_query(&self) -> &LogQuery {
        match self {
            Query::Log(q) => q,
            Query::Metric(m) => m.log_query(),
        }
    }
}

impl MetricQuery {
    pub fn log_query(&self) -> &LogQuery {
        match self {
            MetricQuery::Range { query, .. } => query,
            MetricQuery::Aggregate { inner, .. } => inner.log_query(),
        }
    }

    /// How far back from the first step lines are needed.
    pub fn range(&self) -> Duration {
        match self {
            MetricQuery::Range { range, .. } => *range,
            MetricQuery::Aggregate { inner, .. } => inner.range(),
        }
    }
}

// ---- lexing and parsing ----

/// The most a query may be: Grafana's are a line; a megabyte is an attack.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), LogqlError> {
        if self.eat(token) { Ok(()) } else { err(format!("expected {token:?} at {:?}", self.context())) }
    }

    fn context(&self) -> String {
        let rest = self.rest();
        if rest.is_empty() { "the end of the query".into() } else { rest.chars().take(24).collect() }
    }

    fn ident(&mut self) -> Result<String, LogqlError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .take_while(|(i, c)| c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && c.is_ascii_digit()))
            .count();
        if len == 0 {
            return err(format!("expected a name at {:?}", self.context()));
        }
        self.pos += len;
        Ok(rest[..len].to_string())
    }

    /// A double-quoted string with Go's escapes, or a backquoted raw string.
    fn string(&mut self) -> Result<String, LogqlError> {
        self.skip_ws();
        let rest = self.rest();
        if let Some(raw) = rest.strip_prefix('`') {
            let end = raw.find('`').ok_or_else(|| LogqlError("unterminated `string`".into()))?;
            self.pos += end + 2;
            return Ok(raw[..end].to_string());
        }
        let Some(body) = rest.strip_prefix('"') else {
            return err(format!("expected a quoted string at {:?}", self.context()));
        };
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 2;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        err("unterminated \"string\"")
    }

    fn number(&mut self) -> Result<f64, LogqlError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest.chars().take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')).count();
        let n = rest[..len].parse().map_err(|_| LogqlError(format!("expected a number at {:?}", self.context())))?;
        self.pos += len;
        Ok(n)
    }

    fn duration(&mut self) -> Result<Duration, LogqlError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).count();
        let d = humantime::parse_duration(&rest[..len])
            .map_err(|_| LogqlError(format!("expected a duration such as 5m at {:?}", self.context())))?;
        if d.is_zero() {
            return err("a range must be longer than zero");
        }
        self.pos += len;
        Ok(d)
    }

    fn match_op(&mut self) -> Result<MatchOp, LogqlError> {
        for (token, op) in [("=~", MatchOp::Re), ("!~", MatchOp::Nre), ("!=", MatchOp::Ne), ("=", MatchOp::Eq)] {
            if self.eat(token) {
                return Ok(op);
            }
        }
        err(format!("expected =, !=, =~ or !~ at {:?}", self.context()))
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, LogqlError> {
        self.expect("{")?;
        let mut matchers = Vec::new();
        if !self.eat("}") {
            loop {
                let name = self.ident()?;
                let op = self.match_op()?;
                let value = self.string()?;
                matchers.push(Matcher::new(name, op, value)?);
                if self.eat("}") {
                    break;
                }
                self.expect(",")?;
            }
        }
        // Loki's rule: a selector must name at least one stream positively.
        if !matchers.iter().any(|m| !m.matches(Some(""))) {
            return err(
                "queries require at least one matcher that does not match the empty string, such as {service=\"search\"}",
            );
        }
        Ok(matchers)
    }

    fn log_query(&mut self) -> Result<LogQuery, LogqlError> {
        let selector = self.selector()?;
        let mut pipeline = Vec::new();
        loop {
            let line = [("|=", true, false), ("!=", false, false), ("|~", true, true), ("!~", false, true)]
                .into_iter()
                .find(|(token, _, _)| self.eat(token));
            if let Some((_, keep, is_regex)) = line {
                let text = self.string()?;
                let regex = if is_regex {
                    Some(
                        regex::Regex::new(&text)
                            .map_err(|e| LogqlError(format!("invalid regular expression {text:?}: {e}")))?,
                    )
                } else {
                    None
                };
                pipeline.push(Stage::Line { keep, text, regex });
                continue;
            }
            if !self.eat("|") {
                break;
            }
            let name = self.ident()?;
            if name == "json" {
                pipeline.push(Stage::Json);
                continue;
            }
            if ["logfmt", "pattern", "regexp", "unpack", "line_format", "label_format", "unwrap", "drop", "keep"]
                .contains(&name.as_str())
            {
                return err(format!(
                    "`| {name}` is not supported; the stages are line filters, `| json` and label filters"
                ));
            }
            pipeline.push(Stage::Label(self.label_filter(name)?));
        }
        Ok(LogQuery { selector, pipeline })
    }

    fn label_filter(&mut self, name: String) -> Result<LabelFilter, LogqlError> {
        for (token, cmp) in [(">=", Cmp::Ge), ("<=", Cmp::Le), (">", Cmp::Gt), ("<", Cmp::Lt), ("==", Cmp::Eq)] {
            if self.eat(token) {
                return Ok(LabelFilter::Number { name, cmp, value: self.number()? });
            }
        }
        let op = self.match_op()?;
        self.skip_ws();
        if !self.rest().starts_with(['"', '`']) {
            let cmp = match op {
                MatchOp::Eq => Cmp::Eq,
                MatchOp::Ne => Cmp::Ne,
                _ => return err("=~ and !~ take a quoted regular expression"),
            };
            return Ok(LabelFilter::Number { name, cmp, value: self.number()? });
        }
        Ok(LabelFilter::Text(Matcher::new(name, op, self.string()?)?))
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, LogqlError> {
        let by = if self.eat("by") {
            true
        } else if self.eat("without") {
            false
        } else {
            return Ok(None);
        };
        self.expect("(")?;
        let mut labels = Vec::new();
        if !self.eat(")") {
            loop {
                labels.push(self.ident()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(Some(if by { Grouping::By(labels) } else { Grouping::Without(labels) }))
    }

    fn metric(&mut self) -> Result<MetricQuery, LogqlError> {
        let name = self.ident()?;
        let range_fn = match name.as_str() {
            "count_over_time" => Some(RangeFn::CountOverTime),
            "rate" => Some(RangeFn::Rate),
            "bytes_over_time" => Some(RangeFn::BytesOverTime),
            "bytes_rate" => Some(RangeFn::BytesRate),
            _ => None,
        };
        if let Some(func) = range_fn {
            self.expect("(")?;
            let query = self.log_query()?;
            self.expect("[")?;
            let range = self.duration()?;
            self.expect("]")?;
            self.expect(")")?;
            return Ok(MetricQuery::Range { func, query, range });
        }
        let op = match name.as_str() {
            "sum" => AggOp::Sum,
            "count" => AggOp::Count,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "avg" => AggOp::Avg,
            other => {
                return err(format!(
                    "{other}() is not supported; use count_over_time, rate, bytes_over_time or bytes_rate, under sum, count, min, max or avg"
                ));
            }
        };
        let mut grouping = self.grouping()?;
        self.expect("(")?;
        let inner = self.metric()?;
        self.expect(")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        Ok(MetricQuery::Aggregate { op, grouping, inner: Box::new(inner) })
    }
}

/// Parses a LogQL query of the supported subset.
pub fn parse(text: &str) -> Result<Query, LogqlError> {
    if text.len() > MAX_QUERY_BYTES {
        return err(format!("the query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    let mut p = Parser { text, pos: 0 };
    p.skip_ws();
    let query = if p.rest().starts_with('{') { Query::Log(p.log_query()?) } else { Query::Metric(p.metric()?) };
    p.skip_ws();
    if !p.rest().is_empty() {
        return err(format!("unexpected {:?} after the query", p.context()));
    }
    Ok(query)
}

// ---- evaluation ----

/// A line's stream labels.
pub fn stream_labels(line: &LogLine) -> Labels {
    let mut labels = Labels::new();
    for (k, v) in
        [("service", &line.service), ("instance", &line.instance), ("node", &line.node), ("level", &line.level)]
    {
        if !v.is_empty() {
            labels.insert(k.to_string(), v.clone());
        }
    }
    labels
}

/// A label name from an attribute key: what Loki's `json` stage makes of it.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// The attributes as `json` extracts them: nested objects flattened with `_`; a name the
/// stream already has gets `_extracted`.
fn extract(attrs: &BTreeMap<String, AttributeValue>, prefix: &str, labels: &mut Labels, stream: &Labels) {
    for (k, v) in attrs {
        let name = if prefix.is_empty() { sanitize(k) } else { format!("{prefix}_{}", sanitize(k)) };
        let text = match v {
            AttributeValue::Object(inner) => {
                extract(inner, &name, labels, stream);
                continue;
            }
            AttributeValue::Null => String::new(),
            AttributeValue::Bool(b) => b.to_string(),
            AttributeValue::Int(i) => i.to_string(),
            AttributeValue::Double(d) => d.to_string(),
            AttributeValue::String(s) => s.clone(),
            AttributeValue::Array(_) => serde_json::to_string(v).unwrap_or_default(),
        };
        let name = if stream.contains_key(&name) { format!("{name}_extracted") } else { name };
        labels.insert(name, text);
    }
}

impl LogQuery {
    /// The line's labels after the pipeline, or `None` when the pipeline drops it.
    pub fn process(&self, line: &LogLine) -> Option<Labels> {
        let stream = stream_labels(line);
        if !self.selector.iter().all(|m| m.matches(stream.get(&m.name).map(String::as_str))) {
            return None;
        }
        let mut labels = stream.clone();
        for stage in &self.pipeline {
            let keep = match stage {
                Stage::Line { keep, text, regex } => {
                    let hit = match regex {
                        Some(r) => r.is_match(&line.message),
                        None => line.message.contains(text.as_str()),
                    };
                    hit == *keep
                }
                Stage::Json => {
                    extract(&line.attributes, "", &mut labels, &stream);
                    true
                }
                Stage::Label(LabelFilter::Text(m)) => {
                    m.matches(labels.get(&m.name).map(String::as_str).or_else(|| {
                        // The record's own trace fields, as Loki's structured metadata: filtered
                        // on without being stream labels (`| trace_id="4bf9…"`).
                        let own = match m.name.as_str() {
                            "trace_id" => &line.trace_id,
                            "span_id" => &line.span_id,
                            _ => return None,
                        };
                        (!own.is_empty()).then_some(own.as_str())
                    }))
                }
                Stage::Label(LabelFilter::Number { name, cmp, value }) => {
                    labels.get(name).and_then(|v| v.parse::<f64>().ok()).is_some_and(|n| match cmp {
                        Cmp::Gt => n > *value,
                        Cmp::Ge => n >= *value,
                        Cmp::Lt => n < *value,
                        Cmp::Le => n <= *value,
                        Cmp::Eq => n == *value,
                        Cmp::Ne => n != *value,
                    })
                }
            };
            if !keep {
                return None;
            }
        }
        Some(labels)
    }

    /// Equality matchers on `service`, `instance` and `level`, for the store to narrow
    /// its scan by (every stage still runs on what it returns).
    pub fn pushdown(&self) -> (Option<String>, Option<String>, Option<String>) {
        let eq =
            |name: &str| self.selector.iter().find(|m| m.name == name && m.op == MatchOp::Eq).map(|m| m.value.clone());
        (eq("service"), eq("instance"), eq("level"))
    }
}

/// One series of a metric query: its labels and a value per step (`None`: no data).
pub type MetricSeries = (Labels, Vec<Option<f64>>);

impl MetricQuery {
    /// Evaluates at each of `steps` (ns), over `lines` (any order) already read for the
    /// window `[steps[0] - range, last step]`.
    pub fn evaluate(&self, lines: &[LogLine], steps: &[u64]) -> Vec<MetricSeries> {
        match self {
            MetricQuery::Range { func, query, range } => {
                let range_ns = range.as_nanos() as u64;
                // Per label set, the (time, bytes) of its lines, sorted.
                let mut by_labels: BTreeMap<Labels, Vec<(u64, usize)>> = BTreeMap::new();
                for l in lines {
                    if let Some(labels) = query.process(l) {
                        by_labels.entry(labels).or_default().push((l.time_unix_nano, l.message.len()));
                    }
                }
                by_labels
                    .into_iter()
                    .map(|(labels, mut points)| {
                        points.sort_unstable();
                        let values = steps
                            .iter()
                            .map(|&t| {
                                let from = points.partition_point(|p| p.0 <= t.saturating_sub(range_ns));
                                let to = points.partition_point(|p| p.0 <= t);
                                let window = &points[from..to];
                                if window.is_empty() {
                                    return None;
                                }
                                let secs = range.as_secs_f64();
                                let bytes = window.iter().map(|p| p.1).sum::<usize>() as f64;
                                Some(match func {
                                    RangeFn::CountOverTime => window.len() as f64,
                                    RangeFn::Rate => window.len() as f64 / secs,
                                    RangeFn::BytesOverTime => bytes,
                                    RangeFn::BytesRate => bytes / secs,
                                })
                            })
                            .collect();
                        (labels, values)
                    })
                    .filter(|(_, values): &MetricSeries| values.iter().any(Option::is_some))
                    .collect()
            }
            MetricQuery::Aggregate { op, grouping, inner } => {
                let series = inner.evaluate(lines, steps);
                let key = |labels: &Labels| -> Labels {
                    match grouping {
                        None => Labels::new(),
                        Some(Grouping::By(names)) => labels
                            .iter()
                            .filter(|(k, _)| names.contains(k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        Some(Grouping::Without(names)) => labels
                            .iter()
                            .filter(|(k, _)| !names.contains(k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    }
                };
                let mut groups: BTreeMap<Labels, Vec<Vec<f64>>> = BTreeMap::new();
                for (labels, values) in &series {
                    let group = groups.entry(key(labels)).or_insert_with(|| vec![Vec::new(); steps.len()]);
                    for (slot, v) in group.iter_mut().zip(values) {
                        slot.extend(*v);
                    }
                }
                groups
                    .into_iter()
                    .map(|(labels, per_step)| {
                        let values = per_step
                            .into_iter()
                            .map(|vs| {
                                (!vs.is_empty()).then(|| match op {
                                    AggOp::Sum => vs.iter().sum(),
                                    AggOp::Count => vs.len() as f64,
                                    AggOp::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                                    AggOp::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                                    AggOp::Avg => vs.iter().sum::<f64>() / vs.len() as f64,
                                })
                            })
                            .collect();
                        (labels, values)
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t_s: u64, service: &str, level: &str, message: &str, attrs: &[(&str, AttributeValue)]) -> LogLine {
        LogLine {
            time_unix_nano: t_s * 1_000_000_000,
            service: service.into(),
            instance: format!("{service}-1"),
            node: "node-1".into(),
            level: level.into(),
            message: message.into(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            trace_id: String::new(),
            span_id: String::new(),
        }
    }

    fn log(text: &str) -> LogQuery {
        match parse(text).unwrap_or_else(|e| panic!("{text}: {e}")) {
            Query::Log(q) => q,
            Query::Metric(_) => panic!("{text}: a metric query"),
        }
    }

    #[test]
    fn selectors_filters_json_and_label_filters() {
        let lines = [
            line(1, "orders", "error", "payment failed for order 7", &[("status", AttributeValue::Int(502))]),
            line(2, "orders", "info", "order 8 placed", &[("status", AttributeValue::Int(201))]),
            line(
                3,
                "search",
                "warn",
                "slow query",
                &[("http", AttributeValue::Object([("route".into(), "/api/search".into())].into()))],
            ),
        ];
        let mut lines = lines;
        lines[1].trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        let kept = |q: &str| lines.iter().filter(|l| log(q).process(l).is_some()).count();
        assert_eq!(kept(r#"{service="orders"}"#), 2);
        assert_eq!(
            kept(r#"{service=~".+"} | trace_id="4bf92f3577b34da6a3ce929d0e0e4736""#),
            1,
            "the record's own field"
        );
        assert_eq!(kept(r#"{service=~".+"} | trace_id!="""#), 1);
        assert_eq!(kept(r#"{service=~"orders|search", level!="info"}"#), 2);
        assert_eq!(kept(r#"{service="orders"} |= "order" != "placed""#), 1);
        assert_eq!(kept(r#"{service="orders"} |~ "order \\d+""#), 2);
        assert_eq!(kept(r#"{service="orders"} | json | status >= 500"#), 1);
        assert_eq!(kept(r#"{service="orders"} | json | status = 201"#), 1);
        assert_eq!(kept(r#"{level=~".+"} | json | http_route="/api/search""#), 1);
        assert_eq!(kept(r#"{service="orders"} | status >= 500"#), 0, "without json there is no status label");
        let labels = log(r#"{service="search"} | json"#).process(&lines[2]).expect("kept");
        assert_eq!(labels.get("http_route").map(String::as_str), Some("/api/search"));
        assert_eq!(labels.get("service").map(String::as_str), Some("search"));
    }

    #[test]
    fn metric_queries_count_per_window_and_aggregate() {
        let lines: Vec<LogLine> = (0..10)
            .map(|i| line(100 + i, if i % 2 == 0 { "orders" } else { "search" }, "error", "boom", &[]))
            .collect();
        let steps: Vec<u64> = [104, 109].iter().map(|s| s * 1_000_000_000).collect();
        let Query::Metric(m) = parse(r#"sum by (service) (count_over_time({level="error"}[5s]))"#).expect("parse")
        else {
            panic!("metric")
        };
        let result = m.evaluate(&lines, &steps);
        let orders =
            result.iter().find(|(l, _)| l.get("service").map(String::as_str) == Some("orders")).expect("orders");
        // (99, 104]: 100, 102, 104 → 3; (104, 109]: 106, 108 → 2.
        assert_eq!(orders.1, [Some(3.0), Some(2.0)]);
        let Query::Metric(rate) = parse(r#"sum(rate({service="orders"}[5s]))"#).expect("parse") else { panic!() };
        assert_eq!(rate.evaluate(&lines, &steps)[0].1, [Some(0.6), Some(0.4)]);
        assert_eq!(rate.range(), Duration::from_secs(5));
    }

    #[test]
    fn what_is_not_supported_says_so() {
        for (q, says) in [
            (r#"{service="a"} | logfmt"#, "not supported"),
            (r#"{service=~".*"}"#, "at least one matcher"),
            (r#"topk(3, count_over_time({service="a"}[1m]))"#, "not supported"),
            (r#"{service="a""#, "expected"),
            (r#"count_over_time({service="a"}[0s])"#, "longer than zero"),
            (r#"{service="a"} |~ "(""#, "invalid regular expression"),
        ] {
            let e = parse(q).expect_err(q);
            assert!(e.0.contains(says), "{q}: {e}");
        }
        assert!(parse(&format!("{{service=\"{}\"}}", "a".repeat(MAX_QUERY_BYTES))).is_err());
    }
}
