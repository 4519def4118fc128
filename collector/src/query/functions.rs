//! PromQL functions: `rate`/`increase`/`delta` with Prometheus's extrapolation,
//! `irate`/`idelta`, `deriv`/`predict_linear` (least squares), every `*_over_time`,
//! `changes`/`resets`, `absent`, `histogram_quantile` (equal bounds coalesced, counts
//! forced monotonic, as Prometheus does), `clamp*`, math, `round`, `time`/`timestamp`,
//! `vector`/`scalar`, `label_replace`/`label_join`, `sort`, `holt_winters`, the date
//! functions (`minute` … `year`, in UTC), trigonometry and `pi`; the native-histogram
//! functions answer nothing, since the store holds classic buckets only. Which functions drop the
//! metric name follows Prometheus. A label value built by a label function is cut at
//! 64 KiB.

use promql_parser::parser::{Call, Expr};

use super::{Evaluator, Labels, QueryError, Sample, Series, Value, drop_name, exec, millis};

/// Every function of Prometheus 2.42, each evaluated by [`call`].
pub const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Teaches the parser what 2.42 has and it does not (`holt_winters`, renamed
/// `double_exponential_smoothing` later); once per process.
pub fn register_extras() {
    use promql_parser::parser::function::{Function, register_extra_functions};
    use promql_parser::parser::value::ValueType;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let holt_winters = Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        // Fails only on a clash with a built-in, which holt_winters is not in 0.11.
        if let Err(e) = register_extra_functions(vec![holt_winters]) {
            tracing::warn!(error = %e, "holt_winters is not available");
        }
    });
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadData(msg.into())
}

/// The `[start, end]` window and range a range-vector argument covers at time `t`.
pub(super) fn window(ev: &Evaluator<'_>, arg: &Expr, t: i64) -> Option<(i64, i64)> {
    match arg {
        Expr::MatrixSelector(ms) => {
            let end = ev.selector_time(t, &ms.vs.at, &ms.vs.offset);
            Some((end - millis(ms.range), end))
        }
        Expr::Subquery(sq) => {
            let end = ev.selector_time(t, &sq.at, &sq.offset);
            Some((end - millis(sq.range), end))
        }
        Expr::Paren(p) => window(ev, &p.expr, t),
        _ => None,
    }
}

fn vector(v: Value, what: &str) -> Result<Vec<Sample>, QueryError> {
    match v {
        Value::Vector(s) => Ok(s),
        _ => Err(bad(format!("{what}: expected an instant vector"))),
    }
}

fn matrix(v: Value, what: &str) -> Result<Vec<Series>, QueryError> {
    match v {
        Value::Matrix(s) => Ok(s),
        _ => Err(bad(format!("{what}: expected a range vector"))),
    }
}

fn scalar(v: Value, what: &str) -> Result<f64, QueryError> {
    match v {
        Value::Scalar(s) => Ok(s),
        _ => Err(bad(format!("{what}: expected a scalar"))),
    }
}

fn string(v: Value, what: &str) -> Result<String, QueryError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(bad(format!("{what}: expected a string"))),
    }
}

/// Prometheus's extrapolated rate/increase/delta.
fn extrapolated(points: &[(i64, f64)], start: i64, end: i64, counter: bool, rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = 0.0;
        for (_, v) in points {
            if *v < prev {
                result += prev;
            }
            prev = *v;
        }
    }
    Some(extrapolate((first, last, points.len()), result, (start, end), counter, rate))
}

/// The indexes `k` of `samples` where a counter resets (`samples[k] < samples[k - 1]`):
/// with them a window's increase needs no walk over the window ([`sliding_rate`]).
pub fn counter_resets(samples: &[(i64, f64)]) -> Vec<usize> {
    (1..samples.len()).filter(|&k| samples[k].1 < samples[k - 1].1).collect()
}

/// `rate`, `increase` or `delta` of the window `samples[lo..hi]` over `[start, end]`,
/// reading only the resets inside it: the same additions, in the same order, as
/// [`extrapolated`] walking the window. `resets` is [`counter_resets`] of `samples`.
pub fn sliding_rate(
    name: &str,
    samples: &[(i64, f64)],
    (lo, hi): (usize, usize),
    resets: &[usize],
    (start, end): (i64, i64),
) -> Option<f64> {
    if hi < lo + 2 {
        return None;
    }
    let counter = name != "delta";
    let (first, last) = (samples[lo], samples[hi - 1]);
    let mut result = last.1 - first.1;
    if counter {
        // The walk compares the first sample with zero.
        if first.1 < 0.0 {
            result += 0.0;
        }
        let from = resets.partition_point(|&k| k <= lo);
        for &k in resets[from..].iter().take_while(|&&k| k < hi) {
            result += samples[k - 1].1;
        }
    }
    Some(extrapolate((first, last, hi - lo), result, (start, end), counter, name == "rate"))
}

/// Extrapolates a window's raw increase `result` (its `first` and `last` samples, `n` in
/// all) to the whole window `[start, end]`, as Prometheus does; per second for a rate.
fn extrapolate(
    (first, last, n): ((i64, f64), (i64, f64), usize),
    mut result: f64,
    (start, end): (i64, i64),
    counter: bool,
    rate: bool,
) -> f64 {
    let mut to_start = (first.0 - start) as f64 / 1000.0;
    let to_end = (end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average = sampled / (n - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { average / 2.0 };
    interval += if to_end < threshold { to_end } else { average / 2.0 };
    result *= interval / sampled;
    if rate {
        result /= (end - start) as f64 / 1000.0;
    }
    result
}

fn linear_regression(points: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sx, mut sy, mut sxy, mut sx2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let init = points[0].1;
    let mut constant = true;
    for (i, (t, v)) in points.iter().enumerate() {
        if constant && i > 0 && *v != init {
            constant = false;
        }
        n += 1.0;
        let x = (*t - intercept_time) as f64 / 1000.0;
        sx += x;
        sy += v;
        sxy += x * v;
        sx2 += x * x;
    }
    if constant {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Prometheus's `quantile` over plain values.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    values[lower] * (1.0 - weight) + values[upper] * weight
}

pub fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds, then force counts to be monotonic.
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (ub, c) in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in &mut merged {
        if b.1 > max {
            max = b.1;
        } else {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..merged.len() - 1].partition_point(|x| x.1 < rank);
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let end = merged[b].0;
    let mut count = merged[b].1;
    let mut start = 0.0;
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

fn over_time(name: &str, points: &[(i64, f64)], param: Option<f64>) -> Option<f64> {
    let values = || points.iter().map(|p| p.1);
    let n = points.len() as f64;
    Some(match name {
        "avg_over_time" => {
            let mut mean: f64 = 0.0;
            let mut count = 0.0;
            for v in values() {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        continue;
                    }
                }
                mean += v / count - mean / count;
            }
            mean
        }
        "sum_over_time" => values().sum(),
        "count_over_time" => n,
        "min_over_time" => values().fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        "max_over_time" => values().fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        "last_over_time" => points.last()?.1,
        "present_over_time" => 1.0,
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut aux) = (0.0, 0.0, 0.0);
            for v in values() {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                aux += delta * (v - mean);
            }
            let var = aux / count;
            if name == "stddev_over_time" { var.sqrt() } else { var }
        }
        "quantile_over_time" => quantile(param?, &mut values().collect::<Vec<_>>()),
        "changes" => {
            points.windows(2).filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan())).count() as f64
        }
        "resets" => points.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64,
        _ => return None,
    })
}

/// The functions of a range vector that reduce each series' window to one value; the
/// whole-range evaluator walks a series' windows over every step with [`over_window`].
pub const WINDOW_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "avg_over_time",
    "sum_over_time",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "last_over_time",
    "present_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
];

/// One window function of the samples `p` (staleness markers left out) of the window
/// `[start, end]` evaluated at `t`; `param` is `quantile_over_time`'s quantile or
/// `predict_linear`'s horizon. `None` where Prometheus gives no sample.
pub fn over_window(name: &str, p: &[(i64, f64)], start: i64, end: i64, t: i64, param: Option<f64>) -> Option<f64> {
    match name {
        "rate" => extrapolated(p, start, end, true, true),
        "increase" => extrapolated(p, start, end, true, false),
        "delta" => extrapolated(p, start, end, false, false),
        "irate" | "idelta" => {
            if p.len() < 2 {
                None
            } else {
                let (a, b) = (p[p.len() - 2], p[p.len() - 1]);
                let diff = if name == "irate" && b.1 < a.1 { b.1 } else { b.1 - a.1 };
                let dt = (b.0 - a.0) as f64 / 1000.0;
                Some(if name == "irate" { if dt == 0.0 { f64::NAN } else { diff / dt } } else { diff })
            }
        }
        "deriv" => (p.len() >= 2).then(|| linear_regression(p, p[0].0).0),
        "predict_linear" => (p.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(p, t);
            intercept + slope * param.unwrap_or(0.0)
        }),
        _ if p.is_empty() => None,
        other => over_time(other, p, param),
    }
}

/// A function of one sample's value.
pub type Math = fn(f64) -> f64;

/// The functions that map each sample's value through one function of it (dropping the
/// metric name): `abs`, `ceil`, `exp`, `sqrt`, `ln`, trigonometry and the like.
pub const MATH: &[(&str, Math)] = &[
    ("deg", f64::to_degrees),
    ("rad", f64::to_radians),
    ("sin", f64::sin),
    ("cos", f64::cos),
    ("tan", f64::tan),
    ("asin", f64::asin),
    ("acos", f64::acos),
    ("atan", f64::atan),
    ("sinh", f64::sinh),
    ("cosh", f64::cosh),
    ("tanh", f64::tanh),
    ("asinh", f64::asinh),
    ("acosh", f64::acosh),
    ("atanh", f64::atanh),
    ("abs", f64::abs),
    ("ceil", f64::ceil),
    ("floor", f64::floor),
    ("exp", f64::exp),
    ("sqrt", f64::sqrt),
    ("ln", f64::ln),
    ("log2", f64::log2),
    ("log10", f64::log10),
    ("sgn", |v| {
        if v > 0.0 {
            1.0
        } else if v < 0.0 {
            -1.0
        } else {
            v
        }
    }),
];

/// Evaluates a function call at `t`.
pub fn call(ev: &mut Evaluator<'_>, call: &Call, t: i64) -> Result<Value, QueryError> {
    let name = call.func.name;
    let args = &call.args.args;
    let arg = |i: usize| -> Result<&Expr, QueryError> {
        args.get(i).map(|b| b.as_ref()).ok_or_else(|| bad(format!("{name}: missing argument {}", i + 1)))
    };
    let simple = |ev: &mut Evaluator<'_>, f: &dyn Fn(f64) -> f64| -> Result<Value, QueryError> {
        let v = vector(ev.eval(arg(0)?, t)?, name)?;
        Ok(Value::Vector(v.into_iter().map(|s| Sample { labels: drop_name(s.labels), value: f(s.value) }).collect()))
    };
    if let Some((_, f)) = MATH.iter().find(|(n, _)| *n == name) {
        return simple(ev, f);
    }
    match name {
        _ if WINDOW_FUNCTIONS.contains(&name) => {
            let (series_arg, param) = if name == "quantile_over_time" {
                (arg(1)?, Some(scalar(ev.eval(arg(0)?, t)?, name)?))
            } else if name == "predict_linear" {
                (arg(0)?, Some(scalar(ev.eval(arg(1)?, t)?, name)?))
            } else {
                (arg(0)?, None)
            };
            let (start, end) =
                window(ev, series_arg, t).ok_or_else(|| bad(format!("{name}: expected a range vector")))?;
            let series = matrix(ev.eval(series_arg, t)?, name)?;
            let mut out = Vec::with_capacity(series.len());
            for s in series {
                if let Some(value) = over_window(name, &s.points, start, end, t, param) {
                    let labels = if name == "last_over_time" { s.labels } else { drop_name(s.labels) };
                    out.push(Sample { labels, value });
                }
            }
            Ok(Value::Vector(out))
        }
        "holt_winters" => {
            let series = matrix(ev.eval(arg(0)?, t)?, name)?;
            let sf = scalar(ev.eval(arg(1)?, t)?, name)?;
            let tf = scalar(ev.eval(arg(2)?, t)?, name)?;
            if !(sf > 0.0 && sf < 1.0) {
                return Err(exec(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}")));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(exec(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf}")));
            }
            let out = series
                .into_iter()
                .filter_map(|s| Some(Sample { value: holt_winters(&s.points, sf, tf)?, labels: drop_name(s.labels) }))
                .collect();
            Ok(Value::Vector(out))
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month" | "month" | "year" => {
            // Without an argument: of `vector(time())`, the evaluation time in whole seconds.
            let samples = match args.first() {
                Some(e) => vector(ev.eval(e, t)?, name)?,
                None => vec![Sample { labels: Vec::new(), value: t.div_euclid(1000) as f64 }],
            };
            let out = samples
                .into_iter()
                .map(|s| Sample { labels: drop_name(s.labels), value: date_part(name, s.value) })
                .collect();
            Ok(Value::Vector(out))
        }
        "histogram_count" | "histogram_sum" | "histogram_fraction" => {
            // Native histograms only; the store holds floats (classic buckets), which these
            // skip, as Prometheus does.
            for e in args {
                ev.eval(e, t)?;
            }
            Ok(Value::Vector(Vec::new()))
        }
        "pi" => Ok(Value::Scalar(std::f64::consts::PI)),
        "round" => {
            let to = match args.get(1) {
                Some(e) => scalar(ev.eval(e, t)?, name)?,
                None => 1.0,
            };
            // Prometheus: floor(v * (1/to) + 0.5) / (1/to)
            let inv = 1.0 / to;
            simple(ev, &move |v: f64| (v * inv + 0.5).floor() / inv)
        }
        "clamp" => {
            let lo = scalar(ev.eval(arg(1)?, t)?, name)?;
            let hi = scalar(ev.eval(arg(2)?, t)?, name)?;
            if lo > hi {
                return Ok(Value::Vector(Vec::new()));
            }
            // NaN stays NaN, as in Prometheus (Rust's max/min would drop it).
            simple(ev, &move |v: f64| if v.is_nan() { v } else { v.max(lo).min(hi) })
        }
        "clamp_min" => {
            let lo = scalar(ev.eval(arg(1)?, t)?, name)?;
            simple(ev, &move |v: f64| if v.is_nan() { v } else { v.max(lo) })
        }
        "clamp_max" => {
            let hi = scalar(ev.eval(arg(1)?, t)?, name)?;
            simple(ev, &move |v: f64| if v.is_nan() { v } else { v.min(hi) })
        }
        "time" => Ok(Value::Scalar(t as f64 / 1000.0)),
        "timestamp" => {
            // The timestamp of the sample the selector picked, not the evaluation time.
            let Expr::VectorSelector(vs) = arg(0)? else {
                let v = vector(ev.eval(arg(0)?, t)?, name)?;
                return Ok(Value::Vector(
                    v.into_iter().map(|s| Sample { labels: drop_name(s.labels), value: t as f64 / 1000.0 }).collect(),
                ));
            };
            let at = ev.selector_time(t, &vs.at, &vs.offset);
            let selected = ev.fetch(vs, 0)?;
            let out = selected
                .series
                .iter()
                .filter_map(|(labels, samples)| {
                    let idx = samples.partition_point(|(ts, _)| *ts <= at);
                    let (ts, v) = *samples.get(idx.checked_sub(1)?)?;
                    (ts >= at - super::LOOKBACK_MS && !super::is_stale(v))
                        .then(|| Sample { labels: drop_name(labels.clone()), value: ts as f64 / 1000.0 })
                })
                .collect();
            Ok(Value::Vector(out))
        }
        "vector" => Ok(Value::Vector(vec![Sample { labels: Vec::new(), value: scalar(ev.eval(arg(0)?, t)?, name)? }])),
        "scalar" => {
            let v = vector(ev.eval(arg(0)?, t)?, name)?;
            Ok(Value::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN }))
        }
        "absent" | "absent_over_time" => {
            let present = match ev.eval(arg(0)?, t)? {
                Value::Vector(v) => !v.is_empty(),
                Value::Matrix(m) => !m.is_empty(),
                _ => return Err(bad(format!("{name}: expected a vector"))),
            };
            if present {
                return Ok(Value::Vector(Vec::new()));
            }
            Ok(Value::Vector(vec![Sample { labels: absent_labels(arg(0)?), value: 1.0 }]))
        }
        "histogram_quantile" => {
            let q = scalar(ev.eval(arg(0)?, t)?, name)?;
            let v = vector(ev.eval(arg(1)?, t)?, name)?;
            let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
            let mut index: std::collections::HashMap<Labels, usize> = std::collections::HashMap::new();
            for s in v {
                let Some(le) = s.labels.iter().find(|(n, _)| n == "le").and_then(|(_, v)| parse_float(v)) else {
                    continue;
                };
                let key: Labels = s.labels.into_iter().filter(|(n, _)| n != "le" && n != "__name__").collect();
                match index.get(&key) {
                    Some(i) => groups[*i].1.push((le, s.value)),
                    None => {
                        index.insert(key.clone(), groups.len());
                        groups.push((key, vec![(le, s.value)]));
                    }
                }
            }
            Ok(Value::Vector(
                groups.into_iter().map(|(labels, b)| Sample { labels, value: bucket_quantile(q, b) }).collect(),
            ))
        }
        "label_replace" => {
            let v = vector(ev.eval(arg(0)?, t)?, name)?;
            let dst = string(ev.eval(arg(1)?, t)?, name)?;
            let replacement = string(ev.eval(arg(2)?, t)?, name)?;
            let src = string(ev.eval(arg(3)?, t)?, name)?;
            let pattern = string(ev.eval(arg(4)?, t)?, name)?;
            let re = regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| bad(format!("invalid regular expression in label_replace(): {e}")))?;
            if !valid_label_name(&dst) {
                return Err(bad(format!("invalid destination label name in label_replace(): {dst}")));
            }
            let out = v
                .into_iter()
                .map(|mut s| {
                    let value = s.labels.iter().find(|(n, _)| *n == src).map_or("", |(_, v)| v.as_str()).to_string();
                    if let Some(caps) = re.captures(&value) {
                        let mut result = String::new();
                        caps.expand(&replacement, &mut result);
                        set_label(&mut s.labels, &dst, result);
                    }
                    s
                })
                .collect();
            Ok(Value::Vector(out))
        }
        "label_join" => {
            let v = vector(ev.eval(arg(0)?, t)?, name)?;
            let dst = string(ev.eval(arg(1)?, t)?, name)?;
            let sep = string(ev.eval(arg(2)?, t)?, name)?;
            if !valid_label_name(&dst) {
                return Err(bad(format!("invalid destination label name in label_join(): {dst}")));
            }
            let mut srcs = Vec::new();
            for e in &args[3..] {
                srcs.push(string(ev.eval(e, t)?, name)?);
            }
            let out = v
                .into_iter()
                .map(|mut s| {
                    let joined: Vec<String> = srcs
                        .iter()
                        .map(|src| {
                            s.labels.iter().find(|(n, _)| n == src).map_or(String::new(), |(_, v)| v.to_string())
                        })
                        .collect();
                    set_label(&mut s.labels, &dst, joined.join(&sep));
                    s
                })
                .collect();
            Ok(Value::Vector(out))
        }
        "sort" | "sort_desc" => {
            let mut v = vector(ev.eval(arg(0)?, t)?, name)?;
            v.sort_by(|a, b| if name == "sort" { a.value.total_cmp(&b.value) } else { b.value.total_cmp(&a.value) });
            Ok(Value::Vector(v))
        }
        other => Err(exec(format!("function {other}() is not supported yet"))),
    }
}

/// Double exponential smoothing of `points` as Prometheus 2.42's `holt_winters`: the
/// last smoothed value, `None` under two points.
fn holt_winters(points: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, points[0].1);
    let mut trend = points[1].1 - points[0].1;
    for (i, &(_, v)) in points.iter().enumerate().skip(1) {
        if i > 1 {
            trend = tf * (s1 - s0) + (1.0 - tf) * trend;
        }
        let next = sf * v + (1.0 - sf) * (s1 + trend);
        (s0, s1) = (s1, next);
    }
    Some(s1)
}

/// One part of the UTC date of `secs` (Unix seconds, the fraction dropped toward zero as
/// Go's `int64()` does): what `minute()`, `hour()`, `month()`, ... answer.
fn date_part(part: &str, secs: f64) -> f64 {
    use chrono::{Datelike, Timelike};
    if !secs.is_finite() {
        return f64::NAN;
    }
    let Some(time) = chrono::DateTime::from_timestamp(secs as i64, 0) else { return f64::NAN };
    let date = time.date_naive();
    f64::from(match part {
        "minute" => time.minute(),
        "hour" => time.hour(),
        "day_of_week" => date.weekday().num_days_from_sunday(),
        "day_of_month" => date.day(),
        "day_of_year" => date.ordinal(),
        "days_in_month" => match date.month() {
            2 if date.leap_year() => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        },
        "month" => date.month(),
        _ => return f64::from(date.year()),
    })
}

pub(super) fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

use hale_core::exposition::valid_label_name;

/// Longest label value label_replace/label_join may build: nesting them must not be a
/// way to grow a value without bound.
const MAX_LABEL_VALUE_BYTES: usize = 64 * 1024;

/// Sets (or, with an empty value, removes) a label, keeping the set sorted. A value
/// longer than [`MAX_LABEL_VALUE_BYTES`] is cut there.
fn set_label(labels: &mut Labels, name: &str, mut value: String) {
    if value.len() > MAX_LABEL_VALUE_BYTES {
        let mut end = MAX_LABEL_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    labels.retain(|(n, _)| n != name);
    if !value.is_empty() {
        labels.push((name.into(), value.into()));
        labels.sort();
    }
}

/// `absent()`'s labels: the equality matchers of the selector (other than the name).
fn absent_labels(expr: &Expr) -> Labels {
    let vs = match expr {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Vec::new(),
    };
    let mut out: Labels = Vec::new();
    let mut seen_twice = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, promql_parser::label::MatchOp::Equal) {
            if out.iter().any(|(n, _)| *n == m.name) {
                seen_twice.insert(m.name.clone());
            }
            out.push((m.name.as_str().into(), m.value.as_str().into()));
        }
    }
    out.retain(|(n, _)| !seen_twice.contains(n.as_str()));
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `query` at `t_ms` on an empty store: the functions of constants.
    fn scalar_of(query: &str, t_ms: i64) -> Result<f64, QueryError> {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, _) = crate::store::Store::open(dir.path()).expect("store");
        match super::super::instant_query(&store, query, t_ms)? {
            Value::Scalar(v) => Ok(v),
            Value::Vector(v) if v.len() == 1 => Ok(v[0].value),
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn date_functions_read_the_utc_date() {
        // 2000-02-29T23:59:59Z, a Tuesday of a leap year.
        let leap = "vector(951868799)";
        for (f, want) in [
            ("year", 2000.0),
            ("month", 2.0),
            ("day_of_month", 29.0),
            ("day_of_week", 2.0),
            ("day_of_year", 60.0),
            ("days_in_month", 29.0),
            ("hour", 23.0),
            ("minute", 59.0),
        ] {
            assert_eq!(scalar_of(&format!("{f}({leap})"), 0).expect(f), want, "{f}");
        }
        assert_eq!(scalar_of("days_in_month(vector(1706745600))", 0).expect("2024-02"), 29.0);
        assert_eq!(scalar_of("days_in_month(vector(1675209600))", 0).expect("2023-02"), 28.0);
        // Without an argument: the evaluation time (1970-01-01 was a Thursday).
        assert_eq!(scalar_of("day_of_week()", 3_600_999).expect("now"), 4.0);
        assert_eq!(scalar_of("hour()", 3_600_999).expect("now"), 1.0);
    }

    #[test]
    fn trigonometry_and_holt_winters() {
        assert_eq!(scalar_of("pi()", 0).expect("pi"), std::f64::consts::PI);
        assert!((scalar_of("deg(vector(pi()))", 0).expect("deg") - 180.0).abs() < 1e-12);
        assert!((scalar_of("sin(rad(vector(90)))", 0).expect("sin") - 1.0).abs() < 1e-12);
        assert!(scalar_of("acos(vector(2))", 0).expect("acos").is_nan());
        // 1, 2, 3, 4: a straight line is smoothed onto itself.
        let points: Vec<(i64, f64)> = (1..=4).map(|i| (i * 1000, i as f64)).collect();
        assert!((holt_winters(&points, 0.5, 0.5).expect("hw") - 4.0).abs() < 1e-12);
        assert_eq!(holt_winters(&points[..1], 0.5, 0.5), None);
    }

    #[test]
    fn what_prometheus_2_42_lacks_is_a_parse_error() {
        for q in ["first_over_time(up[1m])", "sort_by_label(up, \"job\")", "limitk(1, up)", "mad_over_time(up[1m])"] {
            assert!(matches!(scalar_of(q, 0), Err(QueryError::BadData(_))), "{q}");
        }
        assert!(super::super::parse("holt_winters(up[5m], 0.5, 0.5)").is_ok());
        assert!(matches!(scalar_of("holt_winters(vector(1)[5m:1m], 2, 0.5)", 0), Err(QueryError::Execution(_))));
    }

    #[test]
    fn quantiles_match_prometheus_definitions() {
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(1.5, &mut [1.0]), f64::INFINITY);
        let buckets = vec![(0.1, 10.0), (0.5, 30.0), (f64::INFINITY, 40.0)];
        assert!((bucket_quantile(0.5, buckets.clone()) - 0.3).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, buckets), 0.5, "in the +Inf bucket: the largest finite bound");
        assert!(bucket_quantile(0.5, vec![(0.1, 1.0)]).is_nan(), "no +Inf bucket");
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // 0..=4 every 15 s over a 60 s window ending at the last sample.
        let points: Vec<(i64, f64)> = (0..5).map(|i| (i * 15_000, i as f64)).collect();
        let r = extrapolated(&points, 0, 60_000, true, true).expect("rate");
        assert!((r - 4.0 / 60.0).abs() < 1e-12, "{r}");
        let reset = vec![(0, 5.0), (15_000, 10.0), (30_000, 2.0), (45_000, 4.0)];
        let inc = extrapolated(&reset, 0, 45_000, true, false).expect("increase");
        assert!(inc > 8.0, "the reset adds the value before it: {inc}");
    }
}
