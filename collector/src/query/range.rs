//! Whole-range evaluation: a range query's expression is evaluated once over all its
//! steps instead of once per step. A selector's series are walked once with a cursor; a
//! window function (`rate`, `*_over_time`, …) slides each series' window over the steps
//! (`rate`/`increase`/`delta` reading only the resets inside it); an aggregation groups
//! each series once and feeds its steps in a row into per-step accumulators; `topk`,
//! `bottomk` and `histogram_quantile` work per step over groups numbered once;
//! vector-to-vector operators match numbered signatures; operators with a scalar map each
//! series' steps. Large selections are split over the cores ([`par_map`]).
//!
//! The answers are the instant evaluator's at every step, by construction: the window
//! functions, reducers and operators are the very functions the instant path calls
//! ([`functions::over_window`], [`functions::sliding_rate`], [`ops::Running`],
//! [`ops::Pairing`], [`ops::with_scalar`], [`ops::rank`]), and what has no whole-range form
//! here — subqueries, `count_values`, label functions, `absent` and the rarer functions —
//! runs the instant path per step, over operands evaluated here where it can
//! ([`Evaluator::per_step`]), or entirely ([`Evaluator::stepwise`]). Unit tests compare
//! both paths on ~100 expressions over six grids.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, BinaryExpr, Call, Expr, MatrixSelector, VectorSelector};

use crate::parallel::par_map;

use super::{
    Evaluator, LOOKBACK_MS, Labels, QueryError, Sample, Series, Value, drop_name, exec, functions, is_stale, millis,
    ops,
};

/// The instants of a range query: `n` steps from `start`, `step` ms apart.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub start: i64,
    pub step: i64,
    pub n: usize,
}

impl Grid {
    fn at(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }

    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.n).map(|i| self.at(i))
    }
}

/// One series over the grid: its value at each step where it has one.
#[derive(Debug, Clone)]
pub struct Track {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// What an expression evaluates to over the grid.
#[derive(Debug)]
pub enum Steps {
    Scalar(Vec<f64>),
    Vector(Vec<Track>),
    /// A string literal (`count_values`' label, `label_replace`'s arguments).
    String(String),
}

impl Steps {
    /// The instant value at step `i`, as the instant evaluator would hold it.
    fn at(&self, i: usize) -> Value {
        match self {
            Steps::Scalar(v) => Value::Scalar(v[i]),
            Steps::String(s) => Value::String(s.clone()),
            Steps::Vector(tracks) => Value::Vector(
                tracks.iter().filter_map(|t| Some(Sample { labels: t.labels.clone(), value: t.values[i]? })).collect(),
            ),
        }
    }

    /// Points held: what counts against the query's samples limit.
    fn points(&self) -> usize {
        match self {
            Steps::Scalar(v) => v.len(),
            Steps::String(_) => 0,
            Steps::Vector(tracks) => tracks.iter().map(|t| t.values.iter().flatten().count()).sum(),
        }
    }
}

/// Per-step instant values gathered into tracks. The k-th sample with a label set at a
/// step lands in the k-th track of that set, so a step's duplicates stay apart as they
/// are in its vector.
struct Gather {
    n: usize,
    scalar: Option<Vec<f64>>,
    tracks: Vec<Track>,
    by_labels: HashMap<Labels, Vec<usize>>,
}

impl Gather {
    fn new(n: usize) -> Self {
        Gather { n, scalar: None, tracks: Vec::new(), by_labels: HashMap::new() }
    }

    fn push(&mut self, i: usize, value: Value) -> Result<(), QueryError> {
        match value {
            Value::Scalar(v) => self.scalar.get_or_insert_with(|| vec![f64::NAN; self.n])[i] = v,
            Value::Vector(samples) => {
                for s in samples {
                    let new = self.tracks.len();
                    let k = match self.by_labels.get_mut(&s.labels) {
                        Some(ks) => match ks.iter().copied().find(|&k| self.tracks[k].values[i].is_none()) {
                            Some(k) => k,
                            None => {
                                ks.push(new);
                                new
                            }
                        },
                        None => {
                            self.by_labels.insert(s.labels.clone(), vec![new]);
                            new
                        }
                    };
                    if k == new {
                        self.tracks.push(Track { labels: s.labels, values: vec![None; self.n] });
                    }
                    self.tracks[k].values[i] = Some(s.value);
                }
            }
            _ => return Err(QueryError::BadData("range queries need an instant vector or a scalar".into())),
        }
        Ok(())
    }

    fn finish(self) -> Steps {
        match self.scalar {
            Some(v) => Steps::Scalar(v),
            None => Steps::Vector(self.tracks),
        }
    }
}

/// The query's answer: every track as a series of its points, tracks with the same
/// labels merged; two of them with a value at the same step is Prometheus's error.
pub fn into_matrix(steps: Steps, grid: Grid) -> Result<Value, QueryError> {
    let tracks = match steps {
        Steps::Scalar(v) => vec![Track { labels: Vec::new(), values: v.into_iter().map(Some).collect() }],
        Steps::Vector(tracks) => tracks,
        Steps::String(_) => {
            return Err(QueryError::BadData("range queries need an instant vector or a scalar".into()));
        }
    };
    let mut merged: Vec<Track> = Vec::with_capacity(tracks.len());
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(tracks.len());
    for track in tracks {
        match index.get(&track.labels) {
            Some(&k) => {
                let into = &mut merged[k].values;
                for (slot, v) in into.iter_mut().zip(track.values) {
                    if v.is_some() {
                        if slot.is_some() {
                            return Err(exec("vector cannot contain metrics with the same labelset"));
                        }
                        *slot = v;
                    }
                }
            }
            None => {
                index.insert(track.labels.clone(), merged.len());
                merged.push(track);
            }
        }
    }
    let mut series: Vec<Series> = merged
        .into_iter()
        .map(|t| {
            let points = t.values.iter().enumerate().filter_map(|(i, v)| Some((grid.at(i), (*v)?))).collect();
            Series { labels: t.labels, points }
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(Value::Matrix(series))
}

fn timed_out(deadline: Option<std::time::Instant>) -> bool {
    deadline.is_some_and(|d| std::time::Instant::now() > d)
}

impl Evaluator<'_> {
    /// Evaluates `expr` over every step of `grid` (the stack grows as [`Evaluator::eval`]'s
    /// does), counting what it holds against the samples limit.
    pub fn eval_range(&mut self, expr: &Expr, grid: Grid) -> Result<Steps, QueryError> {
        let steps = stacker::maybe_grow(super::STACK_RED_ZONE, super::STACK_GROWTH, || self.range_node(expr, grid))?;
        self.account(steps.points())?;
        Ok(steps)
    }

    fn range_node(&mut self, expr: &Expr, grid: Grid) -> Result<Steps, QueryError> {
        self.check_deadline()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Steps::Scalar(vec![n.val; grid.n])),
            Expr::StringLiteral(s) => Ok(Steps::String(s.val.clone())),
            Expr::Paren(p) => self.range_node(&p.expr, grid),
            Expr::VectorSelector(vs) => {
                Ok(Steps::Vector(self.selector_range(vs, grid, |_, v| v, |labels| labels.clone())?))
            }
            Expr::Unary(u) => match self.eval_range(&u.expr, grid)? {
                Steps::Scalar(v) => Ok(Steps::Scalar(v.into_iter().map(|x| -x).collect())),
                Steps::String(_) => Err(QueryError::BadData("unary minus needs a scalar or an instant vector".into())),
                Steps::Vector(tracks) => Ok(Steps::Vector(
                    tracks
                        .into_iter()
                        .map(|t| Track {
                            labels: drop_name(t.labels),
                            values: t.values.into_iter().map(|v| v.map(|x| -x)).collect(),
                        })
                        .collect(),
                )),
            },
            Expr::Call(call) => self.call_range(expr, call, grid),
            Expr::Aggregate(agg) => self.aggregate_range(agg, grid),
            Expr::Binary(bin) => self.binary_range(bin, grid),
            // Subqueries, and what only the instant path answers (or refuses).
            _ => self.stepwise(expr, grid),
        }
    }

    /// `expr` by the instant evaluator at every step.
    fn stepwise(&mut self, expr: &Expr, grid: Grid) -> Result<Steps, QueryError> {
        let mut gather = Gather::new(grid.n);
        for i in 0..grid.n {
            self.check_deadline()?;
            let value = self.eval(expr, grid.at(i))?;
            gather.push(i, value)?;
        }
        Ok(gather.finish())
    }

    /// `apply` (an instant operation on already evaluated operands) at every step.
    fn per_step(
        &self,
        grid: Grid,
        mut apply: impl FnMut(usize) -> Result<Value, QueryError>,
    ) -> Result<Steps, QueryError> {
        let mut gather = Gather::new(grid.n);
        for i in 0..grid.n {
            self.check_deadline()?;
            gather.push(i, apply(i)?)?;
        }
        Ok(gather.finish())
    }

    /// A scalar operand over the grid; `None` when it is not a scalar (the instant path
    /// then says why).
    fn scalar_range(&mut self, expr: &Expr, grid: Grid) -> Result<Option<Vec<f64>>, QueryError> {
        Ok(match self.eval_range(expr, grid)? {
            Steps::Scalar(v) => Some(v),
            Steps::Vector(_) | Steps::String(_) => None,
        })
    }

    /// An instant selector at every step: the newest sample within the lookback that is
    /// not a staleness marker, its (timestamp, value) mapped by `value`, its labels by
    /// `labels`.
    fn selector_range(
        &mut self,
        vs: &VectorSelector,
        grid: Grid,
        value: impl Fn(i64, f64) -> f64 + Sync,
        labels: impl Fn(&Labels) -> Labels + Sync,
    ) -> Result<Vec<Track>, QueryError> {
        let selected = self.fetch(vs, 0)?;
        let times: Vec<i64> = grid.times().map(|t| self.selector_time(t, &vs.at, &vs.offset)).collect();
        let work = selected.series.iter().map(|s| s.1.len() + times.len()).sum();
        let deadline = self.deadline;
        let tracks = par_map(&selected.series, work, |(l, samples)| {
            if timed_out(deadline) {
                return None;
            }
            let mut values = vec![None; times.len()];
            let mut any = false;
            // Steps only move forward: the newest sample at or before each is a cursor.
            let mut idx = 0;
            for (slot, &at) in values.iter_mut().zip(&times) {
                while idx < samples.len() && samples[idx].0 <= at {
                    idx += 1;
                }
                let Some(&(ts, v)) = idx.checked_sub(1).and_then(|i| samples.get(i)) else { continue };
                // Prometheus 2.42 still counts a sample exactly at the lookback's edge.
                if ts >= at - LOOKBACK_MS && !is_stale(v) {
                    *slot = Some(value(ts, v));
                    any = true;
                }
            }
            any.then(|| Track { labels: labels(l), values })
        });
        self.check_deadline()?;
        Ok(tracks.into_iter().flatten().collect())
    }

    /// A window function of a range selector at every step: each series' samples
    /// (staleness markers left out) are cut into the step's window `[t - range, t]` and
    /// reduced by [`functions::over_window`].
    fn window_range(
        &mut self,
        name: &str,
        ms: &MatrixSelector,
        param: Option<Vec<f64>>,
        grid: Grid,
    ) -> Result<Vec<Track>, QueryError> {
        let range = millis(ms.range);
        let selected = self.fetch(&ms.vs, range)?;
        let windows: Vec<(i64, i64, i64)> = grid
            .times()
            .map(|t| {
                let end = self.selector_time(t, &ms.vs.at, &ms.vs.offset);
                (end - range, end, t)
            })
            .collect();
        let work = selected.series.iter().map(|s| s.1.len() + windows.len()).sum();
        let keep_name = name == "last_over_time";
        let sliding = matches!(name, "rate" | "increase" | "delta");
        let deadline = self.deadline;
        let tracks = par_map(&selected.series, work, |(labels, samples)| {
            if timed_out(deadline) {
                return None;
            }
            let fresh: Vec<(i64, f64)>;
            let samples: &[(i64, f64)] = if samples.iter().any(|s| is_stale(s.1)) {
                fresh = samples.iter().copied().filter(|s| !is_stale(s.1)).collect();
                &fresh
            } else {
                samples
            };
            // Windows only move forward, so their bounds are two cursors, not searches.
            let resets = if sliding { functions::counter_resets(samples) } else { Vec::new() };
            let (mut lo, mut hi) = (0, 0);
            let mut values = vec![None; windows.len()];
            let mut any = false;
            for (i, &(start, end, t)) in windows.iter().enumerate() {
                while lo < samples.len() && samples[lo].0 < start {
                    lo += 1;
                }
                hi = hi.max(lo);
                while hi < samples.len() && samples[hi].0 <= end {
                    hi += 1;
                }
                if lo == hi {
                    continue;
                }
                values[i] = if sliding {
                    functions::sliding_rate(name, samples, (lo, hi), &resets, (start, end))
                } else {
                    let param = param.as_ref().map(|p| p[i]);
                    functions::over_window(name, &samples[lo..hi], start, end, t, param)
                };
                any |= values[i].is_some();
            }
            any.then(|| Track { labels: if keep_name { labels.clone() } else { drop_name(labels.clone()) }, values })
        });
        self.check_deadline()?;
        Ok(tracks.into_iter().flatten().collect())
    }

    fn call_range(&mut self, expr: &Expr, call: &Call, grid: Grid) -> Result<Steps, QueryError> {
        let name = call.func.name;
        let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
        if functions::WINDOW_FUNCTIONS.contains(&name) {
            let (series, param) = match name {
                "quantile_over_time" => (args.get(1), args.first()),
                "predict_linear" => (args.first(), args.get(1)),
                _ => (args.first(), None),
            };
            if let Some(Expr::MatrixSelector(ms)) = series.copied() {
                let param = match param {
                    Some(p) => match self.scalar_range(p, grid)? {
                        Some(v) => Some(v),
                        None => return self.stepwise(expr, grid),
                    },
                    None => None,
                };
                return Ok(Steps::Vector(self.window_range(name, ms, param, grid)?));
            }
            return self.stepwise(expr, grid);
        }
        if let Some((_, f)) = functions::MATH.iter().find(|(n, _)| *n == name)
            && let [arg] = args[..]
        {
            return self.map_range(arg, grid, |v, _| Some(f(v)));
        }
        match (name, &args[..]) {
            ("time", []) => Ok(Steps::Scalar(grid.times().map(|t| t as f64 / 1000.0).collect())),
            ("vector", [arg]) => match self.scalar_range(arg, grid)? {
                Some(v) => {
                    Ok(Steps::Vector(vec![Track { labels: Vec::new(), values: v.into_iter().map(Some).collect() }]))
                }
                None => self.stepwise(expr, grid),
            },
            ("scalar", [arg]) => match self.eval_range(arg, grid)? {
                Steps::Vector(tracks) => Ok(Steps::Scalar(
                    (0..grid.n)
                        .map(|i| {
                            let mut present = tracks.iter().filter_map(|t| t.values[i]);
                            match (present.next(), present.next()) {
                                (Some(v), None) => v,
                                _ => f64::NAN,
                            }
                        })
                        .collect(),
                )),
                Steps::Scalar(_) | Steps::String(_) => self.stepwise(expr, grid),
            },
            ("timestamp", [Expr::VectorSelector(vs)]) => Ok(Steps::Vector(self.selector_range(
                vs,
                grid,
                |ts, _| ts as f64 / 1000.0,
                |labels| drop_name(labels.clone()),
            )?)),
            ("round", [arg]) => self.map_range(arg, grid, |v, _| Some((v + 0.5).floor())),
            ("clamp" | "clamp_min" | "clamp_max" | "round", [arg, bounds @ ..]) if !bounds.is_empty() => {
                let mut params = Vec::new();
                for b in bounds {
                    match self.scalar_range(b, grid)? {
                        Some(v) => params.push(v),
                        None => return self.stepwise(expr, grid),
                    }
                }
                self.map_range(arg, grid, |v, i| {
                    // NaN stays NaN, as in Prometheus (Rust's max/min would drop it).
                    let keep = |x: f64| if v.is_nan() { v } else { x };
                    match name {
                        "clamp" if params[0][i] > params[1][i] => None,
                        "clamp" => Some(keep(v.max(params[0][i]).min(params[1][i]))),
                        "clamp_min" => Some(keep(v.max(params[0][i]))),
                        "clamp_max" => Some(keep(v.min(params[0][i]))),
                        _ => {
                            // Prometheus: floor(v * (1/to) + 0.5) / (1/to)
                            let inv = 1.0 / params[0][i];
                            Some((v * inv + 0.5).floor() / inv)
                        }
                    }
                })
            }
            ("histogram_quantile", [q, buckets]) => {
                let Some(q) = self.scalar_range(q, grid)? else { return self.stepwise(expr, grid) };
                match self.eval_range(buckets, grid)? {
                    Steps::Vector(tracks) => Ok(Steps::Vector(histogram_quantile_range(&q, tracks, grid))),
                    Steps::Scalar(_) | Steps::String(_) => self.stepwise(expr, grid),
                }
            }
            _ => self.stepwise(expr, grid),
        }
    }

    /// `f` of each sample's value (and the step) for an instant-vector operand, the metric
    /// name dropped; `None` from `f` leaves the step out.
    fn map_range(
        &mut self,
        arg: &Expr,
        grid: Grid,
        f: impl Fn(f64, usize) -> Option<f64>,
    ) -> Result<Steps, QueryError> {
        match self.eval_range(arg, grid)? {
            Steps::Vector(tracks) => Ok(Steps::Vector(
                tracks
                    .into_iter()
                    .map(|t| Track {
                        labels: drop_name(t.labels),
                        values: t.values.iter().enumerate().map(|(i, v)| f((*v)?, i)).collect(),
                    })
                    .collect(),
            )),
            Steps::Scalar(_) | Steps::String(_) => Err(QueryError::BadData("expected an instant vector".into())),
        }
    }

    fn aggregate_range(&mut self, agg: &AggregateExpr, grid: Grid) -> Result<Steps, QueryError> {
        let op = agg.op.to_string();
        let param = match &agg.param {
            Some(p) => Some(self.eval_range(p, grid)?),
            None => None,
        };
        let input = self.eval_range(&agg.expr, grid)?;
        let ranked = matches!(op.as_str(), "topk" | "bottomk") && matches!(param, Some(Steps::Scalar(_)));
        let (Steps::Vector(tracks), true) = (&input, ranked || ops::REDUCERS.contains(&op.as_str())) else {
            // count_values, and whatever the instant aggregation refuses: at every step.
            return self.per_step(grid, |i| ops::apply_aggregate(agg, param.as_ref().map(|p| p.at(i)), input.at(i)));
        };
        let q = match (&param, op.as_str()) {
            (Some(Steps::Scalar(q)), "quantile") => Some(q),
            (_, "quantile") => return Err(QueryError::BadData("quantile: expected a scalar parameter".into())),
            _ => None,
        };
        // Each series is grouped once; groups keep first-seen order.
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
        for (k, track) in tracks.iter().enumerate() {
            let key = ops::grouping(&track.labels, &agg.modifier);
            match index.get(&key) {
                Some(&g) => groups[g].1.push(k),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push((key, vec![k]));
                }
            }
        }
        if let (true, Some(Steps::Scalar(k))) = (ranked, &param) {
            return Ok(Steps::Vector(ranked_range(&op, k, tracks, &groups, grid)));
        }
        let work = tracks.len() * grid.n;
        let deadline = self.deadline;
        let reducer = ops::Reducer::of(&op).unwrap_or(ops::Reducer::Quantile);
        // Series by series (each one's steps in a row), into one accumulator per step.
        let out = par_map(&groups, work, |(key, members)| {
            if timed_out(deadline) {
                return None;
            }
            let values = if let Some(q) = q {
                let mut by_step: Vec<Vec<f64>> = vec![Vec::new(); grid.n];
                for &m in members {
                    for (step, v) in by_step.iter_mut().zip(&tracks[m].values) {
                        step.extend(*v);
                    }
                }
                by_step
                    .into_iter()
                    .zip(q)
                    .map(|(mut values, q)| (!values.is_empty()).then(|| functions::quantile(*q, &mut values)))
                    .collect()
            } else {
                let mut acc = vec![ops::Running::new(reducer); grid.n];
                for &m in members {
                    for (running, v) in acc.iter_mut().zip(&tracks[m].values) {
                        if let Some(v) = v {
                            running.push(reducer, *v);
                        }
                    }
                }
                acc.iter().map(|r| (r.count > 0.0).then(|| r.value(reducer))).collect()
            };
            Some(Track { labels: key.clone(), values })
        });
        self.check_deadline()?;
        Ok(Steps::Vector(out.into_iter().flatten().collect()))
    }

    fn binary_range(&mut self, bin: &BinaryExpr, grid: Grid) -> Result<Steps, QueryError> {
        let lhs = self.eval_range(&bin.lhs, grid)?;
        let rhs = self.eval_range(&bin.rhs, grid)?;
        let (tracks, scalar, scalar_left) = match (lhs, rhs) {
            (Steps::Vector(v), Steps::Scalar(s)) => (v, s, false),
            (Steps::Scalar(s), Steps::Vector(v)) => (v, s, true),
            (Steps::Vector(left), Steps::Vector(right)) => return vectors_range(bin, left, right, grid),
            (lhs, rhs) => return self.per_step(grid, |i| ops::apply_binary(bin, lhs.at(i), rhs.at(i))),
        };
        let op = bin.op.to_string();
        if bin.op.is_set_operator() {
            return Err(QueryError::BadData(format!("set operator {op} not allowed in binary scalar expression")));
        }
        let return_bool = bin.modifier.as_ref().is_some_and(|m| m.return_bool);
        let keeps_name = bin.op.is_comparison_operator() && !return_bool;
        let mut out = Vec::with_capacity(tracks.len());
        for track in tracks {
            let mut values = Vec::with_capacity(grid.n);
            for (v, s) in track.values.iter().zip(&scalar) {
                values.push(match v {
                    Some(v) => ops::with_scalar(&op, *v, *s, scalar_left, return_bool)?,
                    None => None,
                });
            }
            let labels = if keeps_name { track.labels } else { drop_name(track.labels) };
            out.push(Track { labels, values });
        }
        Ok(Steps::Vector(out))
    }
}

/// A vector-to-vector operator at every step, as [`ops::apply_binary`] answers each: each
/// series' signature is computed once (as a number), each step's matches are found by
/// number, each result's labels once per pair of series.
fn vectors_range(bin: &BinaryExpr, left: Vec<Track>, right: Vec<Track>, grid: Grid) -> Result<Steps, QueryError> {
    let matching = bin.modifier.as_ref().and_then(|m| m.matching.clone());
    let mut ids: HashMap<Labels, usize> = HashMap::new();
    let mut sig_of = |t: &Track| {
        let next = ids.len();
        *ids.entry(ops::signature(&t.labels, &matching)).or_insert(next)
    };
    let left_sig: Vec<usize> = left.iter().map(&mut sig_of).collect();
    let right_sig: Vec<usize> = right.iter().map(&mut sig_of).collect();
    // The last step each signature was seen at, on the side that decides.
    let mut seen = vec![usize::MAX; ids.len()];
    if bin.op.is_set_operator() {
        let op = bin.op.to_string();
        // `and` keeps a left sample with a match, `unless` one without; `or` adds a right
        // sample whose signature no left sample has.
        let mut filter =
            |mut kept: Vec<Track>, kept_sig: &[usize], decider: &[Track], decider_sig: &[usize], with: bool| {
                for i in 0..grid.n {
                    for (t, &sig) in decider.iter().zip(decider_sig) {
                        if t.values[i].is_some() {
                            seen[sig] = i;
                        }
                    }
                    for (t, &sig) in kept.iter_mut().zip(kept_sig) {
                        if t.values[i].is_some() && (seen[sig] == i) != with {
                            t.values[i] = None;
                        }
                    }
                }
                kept
            };
        return Ok(Steps::Vector(match op.as_str() {
            "or" => {
                let added = filter(right, &right_sig, &left, &left_sig, false);
                let mut out = left;
                out.extend(added);
                out
            }
            _ => filter(left, &left_sig, &right, &right_sig, op == "and"),
        }));
    }
    let pairing = ops::Pairing::new(bin);
    let (many, many_sig, one, one_sig) =
        if pairing.swapped { (right, right_sig, left, left_sig) } else { (left, left_sig, right, right_sig) };
    let mut one_at: Vec<(usize, usize)> = vec![(usize::MAX, 0); ids.len()];
    let mut results: HashMap<(usize, usize), usize> = HashMap::new();
    let mut out: Vec<((usize, usize), Track)> = Vec::new();
    let mut label_ids: HashMap<Labels, usize> = HashMap::new();
    let mut out_label: Vec<usize> = Vec::new();
    let mut label_seen: Vec<usize> = Vec::new();
    for i in 0..grid.n {
        for (o, (t, &sig)) in one.iter().zip(&one_sig).enumerate() {
            if t.values[i].is_some() {
                if one_at[sig].0 == i {
                    return Err(pairing.duplicate_one());
                }
                one_at[sig] = (i, o);
            }
        }
        for (m, (t, &sig)) in many.iter().zip(&many_sig).enumerate() {
            // Only a "one" series seen at this step is read: one never seen (an empty
            // side, or no partner for this signature) has no index to read.
            let (Some(v), (step, o)) = (t.values[i], one_at[sig]) else { continue };
            if step != i {
                continue;
            }
            let Some(other) = one[o].values[i] else { continue };
            let Some(value) = pairing.value(v, other)? else { continue };
            if pairing.one_to_one {
                if seen[sig] == i {
                    return Err(ops::Pairing::duplicate_many());
                }
                seen[sig] = i;
            }
            let k = match results.get(&(m, o)) {
                Some(&k) => k,
                None => {
                    let labels = pairing.result_labels(&t.labels, &one[o].labels);
                    let next = label_ids.len();
                    let id = *label_ids.entry(labels.clone()).or_insert(next);
                    if id == label_seen.len() {
                        label_seen.push(usize::MAX);
                    }
                    out_label.push(id);
                    out.push(((m, o), Track { labels, values: vec![None; grid.n] }));
                    results.insert((m, o), out.len() - 1);
                    out.len() - 1
                }
            };
            if !pairing.one_to_one {
                if label_seen[out_label[k]] == i {
                    return Err(ops::Pairing::duplicate_result());
                }
                label_seen[out_label[k]] = i;
            }
            out[k].1.values[i] = Some(value);
        }
    }
    // The order each step's instant answer has: by the "many" sample.
    out.sort_by_key(|(pair, _)| *pair);
    Ok(Steps::Vector(out.into_iter().map(|(_, t)| t).collect()))
}

/// `topk` / `bottomk` at every step: each step's present members of a group ranked as
/// the instant path ranks them ([`ops::rank`], stable), the first `k` kept with their own
/// labels. A member's track holds the steps it made the cut.
fn ranked_range(op: &str, k: &[f64], tracks: &[Track], groups: &[(Labels, Vec<usize>)], grid: Grid) -> Vec<Track> {
    let mut kept: Vec<Option<Vec<Option<f64>>>> = vec![None; tracks.len()];
    let mut present: Vec<(usize, f64)> = Vec::new();
    for (_, members) in groups {
        for (i, &k) in k.iter().enumerate().take(grid.n) {
            if k.is_nan() || k < 1.0 {
                continue;
            }
            present.clear();
            present.extend(members.iter().filter_map(|&m| Some((m, tracks[m].values[i]?))));
            present.sort_by(|a, b| ops::rank(op, a.1, b.1));
            for &(m, v) in present.iter().take(k as usize) {
                kept[m].get_or_insert_with(|| vec![None; grid.n])[i] = Some(v);
            }
        }
    }
    kept.into_iter()
        .zip(tracks)
        .filter_map(|(values, t)| Some(Track { labels: t.labels.clone(), values: values? }))
        .collect()
}

/// `histogram_quantile` at every step: buckets grouped by their labels without `le` (once
/// per series), each step's buckets of a group reduced as the instant path does.
fn histogram_quantile_range(q: &[f64], tracks: Vec<Track>, grid: Grid) -> Vec<Track> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    for (k, track) in tracks.iter().enumerate() {
        let Some(le) = track.labels.iter().find(|(n, _)| n == "le").and_then(|(_, v)| functions::parse_float(v)) else {
            continue;
        };
        let key: Labels = track.labels.iter().filter(|(n, _)| n != "le" && n != "__name__").cloned().collect();
        match index.get(&key) {
            Some(&g) => groups[g].1.push((le, k)),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![(le, k)]));
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, members)| {
            let values = (0..grid.n)
                .map(|i| {
                    let buckets: Vec<(f64, f64)> =
                        members.iter().filter_map(|&(le, k)| Some((le, tracks[k].values[i]?))).collect();
                    (!buckets.is_empty()).then(|| functions::bucket_quantile(q[i], buckets))
                })
                .collect();
            Track { labels, values }
        })
        .collect()
}

#[cfg(test)]
mod tests;
