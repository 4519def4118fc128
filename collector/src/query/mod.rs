//! PromQL evaluation over the store, with Prometheus's semantics: a 5-minute lookback for
//! instant selectors, staleness markers ending a series, `offset` and `@`, extrapolated
//! `rate`, label dropping by functions and operators. Parsing is promql-parser's; the
//! evaluator is ours.
//!
//! A range query is evaluated over the whole range at once ([`range`]), giving at every
//! step exactly what an instant query gives there. Each selector's series are fetched
//! once per query, over the widest range any use of it reads and the whole reach of any
//! nested subquery, and cached. Subquery steps are aligned to multiples of the step, as
//! Prometheus does. A query's samples (loaded and produced) are bounded by
//! [`Limits::max_samples`], its time by [`Limits::deadline`].
//!
//! Limits, each refused as bad input rather than risking memory or the stack:
//! [`MAX_POINTS`] (11,000) points per series of a range query, [`MAX_SUBQUERY_STEPS`]
//! (11,000) steps per subquery, 64 KiB of query text, and [`MAX_DEPTH`] (256) levels of
//! nesting, bounded from the text ([`depth_bound`]) before the parser, which recurses,
//! sees it. The evaluator grows its stack on the heap (`stacker`), so any accepted depth
//! runs on a 2 MiB thread; a parser panic is caught as bad input. A label value built by
//! a label function is cut at 64 KiB. Rule files and SLO specs parse through the same
//! [`parse`].
//!
//! `tests/promql.rs` checks the answers against a real Prometheus over a corpus of
//! expressions, at several instants and over a range.

mod functions;
mod ops;
mod range;

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::MatchOp;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, AtModifier, Expr, Offset, VectorSelector};

use crate::store::Store;
use crate::store::head::Matcher;

/// Instant selectors look this far back for a sample.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// Prometheus's staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
/// Points per series a query may produce; more is refused rather than risking memory.
pub const MAX_POINTS: usize = 11_000;
/// Samples one query may load and produce unless configured otherwise (Prometheus's
/// `--query.max-samples` default).
pub const MAX_SAMPLES: usize = 50_000_000;

/// What one query may spend.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// When it gives up (its `timeout`); `None`: never.
    pub deadline: Option<std::time::Instant>,
    /// Samples it may load from the store plus points it may produce (Prometheus's
    /// `--query.max-samples`).
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { deadline: None, max_samples: MAX_SAMPLES }
    }
}

pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// Labels of a result series, sorted by name; names and values shared, so copying a
/// series' labels into a result costs no allocation per label.
pub type Labels = Vec<(SharedStr, SharedStr)>;

pub use crate::shared_str::SharedStr;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// (timestamp ms, value)
    pub points: Vec<(i64, f64)>,
}

/// What an expression evaluates to at one instant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    String(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong (Prometheus's `bad_data`).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (Prometheus's `execution`).
    #[error("{0}")]
    Execution(String),
    /// The query ran past its timeout (Prometheus's `timeout`, a 503).
    #[error("{0}")]
    Timeout(String),
}

fn exec(msg: impl Into<String>) -> QueryError {
    QueryError::Execution(msg.into())
}

/// Deepest expression tree a query may build. Prometheus has no such limit, but every
/// stage here (the parser, the evaluator, dropping the tree) recurses once per level, and
/// a 64 KiB query of `-` or `abs(` would otherwise nest tens of thousands of levels deep
/// and overflow a thread's stack — one unauthenticated GET aborting the collector.
pub const MAX_DEPTH: usize = 256;

/// Parses a PromQL expression. The parser can panic on some inputs (a duration like
/// `[1e20]`); that is caught and reported as bad input. Nesting is bounded from the text
/// ([`depth_bound`]) before the parser sees it, since the parser itself recurses.
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    if query.len() > 64 * 1024 {
        return Err(QueryError::BadData("query longer than 64 KiB".into()));
    }
    let depth = depth_bound(query);
    if depth > MAX_DEPTH {
        return Err(QueryError::BadData(format!(
            "the query is nested too deeply (up to {depth} levels of parentheses and operators, at most {MAX_DEPTH}); split it with recording rules"
        )));
    }
    functions::register_extras();
    let expr = std::panic::catch_unwind(|| parser::parse(query))
        .map_err(|_| QueryError::BadData("the query could not be parsed (a number or duration out of range?)".into()))?
        .map_err(QueryError::BadData)?;
    check(&expr)?;
    Ok(expr)
}

/// An upper bound of the depth of the expression tree `query` parses into, read from its
/// text alone: every bracket opens a level, and within a level every operator (each of
/// `+ - * / % ^`, each run of `= ! < >`, `and`, `or`, `unless`, `atan2`) may add one,
/// since an operator chain nests as deep as it is long. Strings, comments and label
/// matchers (`{…}`) add nothing. Over-counting (a `-` in `1e-3`) only makes the bound
/// looser; it never under-counts a real level.
pub fn depth_bound(query: &str) -> usize {
    let b = query.as_bytes();
    // Per open bracket: (operators at this level, deepest bracket closed inside it).
    let mut levels: Vec<(usize, usize)> = vec![(0, 0)];
    let close = |levels: &mut Vec<(usize, usize)>| {
        if levels.len() > 1 {
            let (ops, child) = levels.pop().unwrap_or_default();
            if let Some(parent) = levels.last_mut() {
                parent.1 = parent.1.max(ops + child + 1);
            }
        }
    };
    let (mut i, mut braces) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' && q != b'`' { 2 } else { 1 };
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => braces += 1,
            b'}' => braces = braces.saturating_sub(1),
            _ if braces > 0 => {}
            b'(' | b'[' => levels.push((0, 0)),
            b')' | b']' => close(&mut levels),
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => {
                if let Some(level) = levels.last_mut() {
                    level.0 += 1;
                }
            }
            b'=' | b'!' | b'<' | b'>' => {
                while i + 1 < b.len() && matches!(b[i + 1], b'=' | b'!' | b'<' | b'>') {
                    i += 1;
                }
                if let Some(level) = levels.last_mut() {
                    level.0 += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1].is_ascii_alphanumeric() || matches!(b[i + 1], b'_' | b':')) {
                    i += 1;
                }
                let word = &query[start..=i];
                if ["and", "or", "unless", "atan2"].iter().any(|op| word.eq_ignore_ascii_case(op))
                    && let Some(level) = levels.last_mut()
                {
                    level.0 += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    while levels.len() > 1 {
        close(&mut levels);
    }
    let (ops, child) = levels[0];
    ops + child + 1
}

/// Refuses what the evaluator does not implement rather than answering wrongly.
/// What the parser takes but Prometheus 2.42 (whose answers Hale gives) does not: `or`
/// inside a selector, and functions and aggregations added after it. Refused as a
/// parse error (400), as 2.42 refuses them.
fn check(expr: &Expr) -> Result<(), QueryError> {
    let unsupported = || QueryError::BadData("`or` inside a selector is not supported".into());
    match expr {
        Expr::Call(c) if !functions::FUNCTIONS.contains(&c.func.name) => {
            Err(QueryError::BadData(format!("unknown function with name {:?}", c.func.name)))
        }
        Expr::Aggregate(a) if !AGGREGATIONS.contains(&a.op.to_string().as_str()) => {
            Err(QueryError::BadData(format!("unknown aggregation {:?}", a.op.to_string())))
        }
        Expr::VectorSelector(vs) if !vs.matchers.or_matchers.is_empty() => Err(unsupported()),
        Expr::MatrixSelector(ms) if !ms.vs.matchers.or_matchers.is_empty() => Err(unsupported()),
        Expr::Aggregate(a) => {
            check(&a.expr)?;
            a.param.as_deref().map_or(Ok(()), check)
        }
        Expr::Unary(u) => check(&u.expr),
        Expr::Binary(b) => {
            check(&b.lhs)?;
            check(&b.rhs)
        }
        Expr::Paren(p) => check(&p.expr),
        Expr::Subquery(s) => check(&s.expr),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| check(a)),
        _ => Ok(()),
    }
}

/// Prometheus 2.42's aggregation operators.
const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];

/// When less than this much stack is left, evaluation continues on a new segment of
/// [`STACK_GROWTH`] bytes.
const STACK_RED_ZONE: usize = 128 * 1024;
const STACK_GROWTH: usize = 2 * 1024 * 1024;

/// Most subquery steps one evaluation may take.
pub const MAX_SUBQUERY_STEPS: i64 = 11_000;

fn millis(d: std::time::Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(*d),
        Some(Offset::Neg(d)) => -millis(*d),
    }
}

/// Raw series of one selector, fetched once per query.
struct Selected {
    series: Vec<(Labels, Vec<(i64, f64)>)>,
}

/// One query's evaluation state.
pub struct Evaluator<'a> {
    store: &'a Store,
    /// Query start and end (for `@ start()` / `@ end()`).
    start: i64,
    end: i64,
    cache: HashMap<String, Arc<Selected>>,
    /// How much further back than the query start enclosing subqueries read.
    reach_back: i64,
    /// When the query gives up (its `timeout`); checked at every step of a range query
    /// and of a subquery.
    deadline: Option<std::time::Instant>,
    /// Samples loaded and points produced so far, against `max_samples`.
    samples: usize,
    max_samples: usize,
    /// The widest range each selector (by its text) is read over in the query, so one
    /// fetch serves every use and each chunk is decoded once.
    widest: HashMap<String, i64>,
}

pub fn matchers_of(vs: &VectorSelector) -> Vec<Matcher> {
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(Matcher::Eq("__name__".into(), name.clone()));
    }
    for m in &vs.matchers.matchers {
        out.push(match &m.op {
            MatchOp::Equal => Matcher::Eq(m.name.clone(), m.value.clone()),
            MatchOp::NotEqual => Matcher::Ne(m.name.clone(), m.value.clone()),
            MatchOp::Re(re) => Matcher::Re(m.name.clone(), re.clone()),
            MatchOp::NotRe(re) => Matcher::Nre(m.name.clone(), re.clone()),
        });
    }
    out
}

impl<'a> Evaluator<'a> {
    pub fn new(store: &'a Store, start: i64, end: i64) -> Self {
        Evaluator {
            store,
            start,
            end,
            cache: HashMap::new(),
            reach_back: 0,
            deadline: None,
            samples: 0,
            max_samples: MAX_SAMPLES,
            widest: HashMap::new(),
        }
    }

    /// An evaluator for `expr`: selectors are fetched once, over everything any step of
    /// any subquery in `expr` may read.
    pub fn for_expr(store: &'a Store, start: i64, end: i64, expr: &Expr) -> Self {
        let mut ev = Evaluator::new(store, start, end);
        ev.reach_back = reach_of(expr);
        widest_ranges(expr, &mut ev.widest);
        ev
    }

    /// Spends at most `limits`.
    pub fn within(mut self, limits: Limits) -> Self {
        self.deadline = limits.deadline;
        self.max_samples = limits.max_samples;
        self
    }

    /// Counts `n` more samples held by the query; past the limit, Prometheus's error and
    /// what to change.
    fn account(&mut self, n: usize) -> Result<(), QueryError> {
        self.samples = self.samples.saturating_add(n);
        if self.samples > self.max_samples {
            return Err(exec(format!(
                "query processing would load too many samples into memory in query execution (more than {}): narrow the selectors or the range, use a larger step, or raise --query-max-samples",
                self.max_samples
            )));
        }
        Ok(())
    }

    fn check_deadline(&self) -> Result<(), QueryError> {
        match self.deadline {
            Some(d) if std::time::Instant::now() > d => Err(QueryError::Timeout(
                "query timed out in expression evaluation: narrow the range, use a larger step, or pre-compute it with a recording rule".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The time a selector is evaluated at: `@` pins it, `offset` shifts it.
    fn selector_time(&self, t: i64, at: &Option<AtModifier>, offset: &Option<Offset>) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(time)) => match time.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => millis(d),
                Err(e) => -millis(e.duration()),
            },
        };
        base - offset_ms(offset)
    }

    /// Fetches a selector's series over everything the query may read (cached): the
    /// widest range any use of the same selector asks for, so it is fetched once.
    fn fetch(&mut self, vs: &VectorSelector, range_ms: i64) -> Result<Arc<Selected>, QueryError> {
        let key = vs.to_string();
        if let Some(s) = self.cache.get(&key) {
            return Ok(s.clone());
        }
        let range_ms = range_ms.max(self.widest.get(&key).copied().unwrap_or(0));
        let matchers = matchers_of(vs);
        let (lo, hi) = match &vs.at {
            Some(_) => {
                let t = self.selector_time(self.start, &vs.at, &vs.offset);
                (t, t)
            }
            None => (self.start - offset_ms(&vs.offset), self.end - offset_ms(&vs.offset)),
        };
        let mint = lo.saturating_sub(range_ms.max(LOOKBACK_MS)).saturating_sub(self.reach_back);
        // A subquery pinned with `@` may read after the query's end too.
        let hi = if self.reach_back >= UNBOUNDED { i64::MAX } else { hi };
        let series: Vec<_> =
            self.store.select(&matchers, mint, hi).into_iter().map(|s| (s.labels, s.samples)).collect();
        self.account(series.iter().map(|s| s.1.len()).sum())?;
        let selected = Arc::new(Selected { series });
        self.cache.insert(key, selected.clone());
        Ok(selected)
    }

    /// Evaluates `expr` at instant `t` (ms). The evaluator recurses once per level of the
    /// tree, through frames that are large in debug builds; the stack grows on the heap
    /// when it runs low, so any depth [`parse`] accepts evaluates on any thread.
    pub fn eval(&mut self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        stacker::maybe_grow(STACK_RED_ZONE, STACK_GROWTH, || self.eval_node(expr, t))
    }

    fn eval_node(&mut self, expr: &Expr, t: i64) -> Result<Value, QueryError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant_vector(vs, t)?)),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.range_vector(&ms.vs, millis(ms.range), t)?)),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(samples) => Ok(Value::Vector(
                    samples.into_iter().map(|s| Sample { labels: drop_name(s.labels), value: -s.value }).collect(),
                )),
                _ => Err(QueryError::BadData("unary minus needs a scalar or an instant vector".into())),
            },
            Expr::Subquery(sq) => {
                let range = millis(sq.range);
                let step = sq.step.map(millis).unwrap_or(60_000).max(1);
                if range / step > MAX_SUBQUERY_STEPS {
                    return Err(QueryError::BadData(format!(
                        "subquery of {range} ms at a {step} ms resolution takes more than {MAX_SUBQUERY_STEPS} steps; use a larger step"
                    )));
                }
                let at = self.selector_time(t, &sq.at, &sq.offset);
                // Steps aligned to multiples of the step, as Prometheus does.
                // The first step-aligned instant at or after `at - range`, as Prometheus does.
                let mut ts = (at - range).div_euclid(step) * step;
                if ts < at - range {
                    ts += step;
                }
                let mut by_labels: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
                let mut order: Vec<Labels> = Vec::new();
                while ts <= at {
                    self.check_deadline()?;
                    if let Value::Vector(samples) = self.eval(&sq.expr, ts)? {
                        for s in samples {
                            if !by_labels.contains_key(&s.labels) {
                                order.push(s.labels.clone());
                            }
                            by_labels.entry(s.labels).or_default().push((ts, s.value));
                        }
                    } else {
                        return Err(QueryError::BadData("subqueries need an instant vector".into()));
                    }
                    ts += step;
                }
                Ok(Value::Matrix(
                    order
                        .into_iter()
                        .map(|l| Series { points: by_labels.remove(&l).unwrap_or_default(), labels: l })
                        .collect(),
                ))
            }
            Expr::Call(call) => functions::call(self, call, t),
            Expr::Aggregate(agg) => ops::aggregate(self, agg, t),
            Expr::Binary(bin) => ops::binary(self, bin, t),
            Expr::Extension(_) => Err(QueryError::BadData("extension expressions are not supported".into())),
        }
    }

    /// Latest sample of each series within the lookback, unless it is a staleness marker.
    fn instant_vector(&mut self, vs: &VectorSelector, t: i64) -> Result<Vec<Sample>, QueryError> {
        let at = self.selector_time(t, &vs.at, &vs.offset);
        let selected = self.fetch(vs, 0)?;
        Ok(selected
            .series
            .iter()
            .filter_map(|(labels, samples)| {
                let idx = samples.partition_point(|(ts, _)| *ts <= at);
                let (ts, v) = *samples.get(idx.checked_sub(1)?)?;
                // Prometheus 2.42 still counts a sample exactly at the lookback's edge.
                (ts >= at - LOOKBACK_MS && !is_stale(v)).then(|| Sample { labels: labels.clone(), value: v })
            })
            .collect())
    }

    /// Samples of each series in `[t - range, t]`, staleness markers left out.
    fn range_vector(&mut self, vs: &VectorSelector, range: i64, t: i64) -> Result<Vec<Series>, QueryError> {
        let at = self.selector_time(t, &vs.at, &vs.offset);
        let selected = self.fetch(vs, range)?;
        Ok(selected
            .series
            .iter()
            .filter_map(|(labels, samples)| {
                let lo = samples.partition_point(|(ts, _)| *ts < at - range);
                let hi = samples.partition_point(|(ts, _)| *ts <= at);
                let points: Vec<(i64, f64)> = samples[lo..hi].iter().copied().filter(|(_, v)| !is_stale(*v)).collect();
                (!points.is_empty()).then(|| Series { labels: labels.clone(), points })
            })
            .collect())
    }
}

/// Records in `out` the widest range each selector of `expr` (by its text) is read over.
fn widest_ranges(expr: &Expr, out: &mut HashMap<String, i64>) {
    for_each_selector(expr, &mut |vs, range| {
        let e = out.entry(vs.to_string()).or_insert(0);
        *e = (*e).max(range);
    });
}

/// Calls `f` with every selector of `expr` and the range it is read over (0: instant).
fn for_each_selector(expr: &Expr, f: &mut impl FnMut(&VectorSelector, i64)) {
    match expr {
        Expr::VectorSelector(vs) => f(vs, 0),
        Expr::MatrixSelector(ms) => f(&ms.vs, millis(ms.range)),
        Expr::Aggregate(a) => {
            for_each_selector(&a.expr, f);
            if let Some(p) = &a.param {
                for_each_selector(p, f);
            }
        }
        Expr::Unary(u) => for_each_selector(&u.expr, f),
        Expr::Binary(b) => {
            for_each_selector(&b.lhs, f);
            for_each_selector(&b.rhs, f);
        }
        Expr::Paren(p) => for_each_selector(&p.expr, f),
        Expr::Subquery(s) => for_each_selector(&s.expr, f),
        Expr::Call(c) => c.args.args.iter().for_each(|a| for_each_selector(a, f)),
        _ => {}
    }
}

/// The matchers of every selector in `expr`: which series an expression reads (for its
/// exemplars). `histogram_quantile(0.99, rate(d_bucket[5m]))` reads `d_bucket`.
pub fn selectors_of(expr: &Expr) -> Vec<Vec<Matcher>> {
    let mut out = Vec::new();
    for_each_selector(expr, &mut |vs, _| out.push(matchers_of(vs)));
    out
}

/// A reach meaning "anywhere in time".
const UNBOUNDED: i64 = i64::MAX / 4;

/// How far before the query start subqueries in `expr` may read: the sum of nested
/// subquery ranges, steps and offsets. A subquery pinned with `@` may read anywhere.
fn reach_of(expr: &Expr) -> i64 {
    fn children(e: &Expr) -> Vec<&Expr> {
        match e {
            Expr::Aggregate(a) => std::iter::once(a.expr.as_ref()).chain(a.param.as_deref()).collect(),
            Expr::Unary(u) => vec![&u.expr],
            Expr::Binary(b) => vec![&b.lhs, &b.rhs],
            Expr::Paren(p) => vec![&p.expr],
            Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
            _ => Vec::new(),
        }
    }
    match expr {
        Expr::Subquery(sq) => {
            if sq.at.is_some() {
                return UNBOUNDED;
            }
            let own = millis(sq.range) + sq.step.map(millis).unwrap_or(60_000) + offset_ms(&sq.offset).max(0);
            own.saturating_add(reach_of(&sq.expr)).min(UNBOUNDED)
        }
        other => children(other).into_iter().map(reach_of).max().unwrap_or(0),
    }
}

pub fn drop_name(mut labels: Labels) -> Labels {
    labels.retain(|(n, _)| n != "__name__");
    labels
}

/// Evaluates an instant query.
pub fn instant_query(store: &Store, query: &str, t: i64) -> Result<Value, QueryError> {
    eval_instant(store, &parse(query)?, t)
}

/// [`instant_query`] within `limits`.
pub fn instant_query_within(store: &Store, query: &str, t: i64, limits: Limits) -> Result<Value, QueryError> {
    let expr = parse(query)?;
    let mut ev = Evaluator::for_expr(store, t, t, &expr).within(limits);
    let value = ev.eval(&expr, t)?;
    check_unique(&value)?;
    Ok(value)
}

/// Evaluates a parsed expression at one instant (rules parse once, evaluate often).
pub fn eval_instant(store: &Store, expr: &Expr, t: i64) -> Result<Value, QueryError> {
    let mut ev = Evaluator::for_expr(store, t, t, expr);
    let value = ev.eval(expr, t)?;
    check_unique(&value)?;
    Ok(value)
}

/// Evaluates a range query: a matrix of the expression at every step.
pub fn range_query(store: &Store, query: &str, start: i64, end: i64, step: i64) -> Result<Value, QueryError> {
    range_query_within(store, query, start, end, step, Limits::default())
}

/// Checks a range query's parameters; the number of steps it takes.
fn range_steps(start: i64, end: i64, step: i64) -> Result<usize, QueryError> {
    if step <= 0 {
        return Err(QueryError::BadData("zero or negative query resolution step widths are not accepted".into()));
    }
    if end < start {
        return Err(QueryError::BadData("end timestamp must not be before start time".into()));
    }
    // Prometheus's bounds on timestamps keep every step computation below from overflowing.
    const MIN_T: i64 = -9_223_372_036_854_775 / 1000 * 1000;
    if start < MIN_T / 2 || end > i64::MAX / 2 {
        return Err(QueryError::BadData("start or end is out of range".into()));
    }
    if (end - start) / step > MAX_POINTS as i64 {
        return Err(QueryError::BadData(format!(
            "exceeded maximum resolution of {MAX_POINTS} points per timeseries; try a bigger step"
        )));
    }
    Ok(((end - start) / step) as usize + 1)
}

/// [`range_query`] within `limits`: the whole range at once ([`range`]), each series'
/// samples walked once over every step.
pub fn range_query_within(
    store: &Store,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
    limits: Limits,
) -> Result<Value, QueryError> {
    let n = range_steps(start, end, step)?;
    let expr = parse(query)?;
    if !matches!(expr.value_type(), ValueType::Vector | ValueType::Scalar) {
        return Err(QueryError::BadData("range queries need an instant vector or a scalar".into()));
    }
    let mut ev = Evaluator::for_expr(store, start, end, &expr).within(limits);
    let grid = range::Grid { start, step, n };
    let steps = ev.eval_range(&expr, grid)?;
    range::into_matrix(steps, grid)
}

/// A range query evaluated as one instant query per step: what [`range_query_within`]
/// must always agree with (the tests compare them).
#[cfg(test)]
fn range_query_stepwise(store: &Store, query: &str, start: i64, end: i64, step: i64) -> Result<Value, QueryError> {
    range_steps(start, end, step)?;
    let expr = parse(query)?;
    let mut ev = Evaluator::for_expr(store, start, end, &expr);
    let mut by_labels: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
    let mut t = start;
    while t <= end {
        match ev.eval(&expr, t)? {
            Value::Scalar(v) => by_labels.entry(Vec::new()).or_default().push((t, v)),
            Value::Vector(samples) => {
                check_unique(&Value::Vector(samples.clone()))?;
                for s in samples {
                    by_labels.entry(s.labels).or_default().push((t, s.value));
                }
            }
            _ => return Err(QueryError::BadData("range queries need an instant vector or a scalar".into())),
        }
        t += step;
    }
    let mut series: Vec<Series> = by_labels.into_iter().map(|(labels, points)| Series { labels, points }).collect();
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(series))
}

fn check_unique(value: &Value) -> Result<(), QueryError> {
    if let Value::Vector(samples) = value {
        let mut seen = std::collections::HashSet::new();
        for s in samples {
            if !seen.insert(&s.labels) {
                return Err(exec("vector cannot contain metrics with the same labelset"));
            }
        }
    }
    Ok(())
}
