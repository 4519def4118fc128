//! Aggregations and binary operators.
//!
//! Aggregations: `sum`, `avg`, `min`, `max`, `count`, `group`, `stddev`, `stdvar`,
//! `quantile`, `topk`, `bottomk` and `count_values`, with `by`/`without`. Binary
//! operators: arithmetic, comparisons (filtering, or 0/1 with `bool`), and `and`/`or`/
//! `unless`, matched with `on`/`ignoring` and `group_left`/`group_right`. Label dropping
//! and the errors for ambiguous matches follow Prometheus.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::functions::quantile;
use super::{Evaluator, Labels, QueryError, Sample, Value, drop_name, exec};

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::BadData(msg.into())
}

/// Whether `name` is one of `names` (a `by`, `on` or `ignoring` list).
fn listed(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == name)
}

/// The labels a sample is grouped by under `by (...)` / `without (...)`.
pub fn grouping(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Vec::new(),
        Some(LabelModifier::Include(keep)) => labels.iter().filter(|(n, _)| listed(&keep.labels, n)).cloned().collect(),
        Some(LabelModifier::Exclude(drop)) => {
            labels.iter().filter(|(n, _)| n != "__name__" && !listed(&drop.labels, n)).cloned().collect()
        }
    }
}

pub fn aggregate(ev: &mut Evaluator<'_>, agg: &AggregateExpr, t: i64) -> Result<Value, QueryError> {
    let param = match &agg.param {
        Some(p) => Some(ev.eval(p, t)?),
        None => None,
    };
    let input = ev.eval(&agg.expr, t)?;
    apply_aggregate(agg, param, input)
}

/// The aggregations that reduce a group's values to one number: [`reduce`].
pub const REDUCERS: &[&str] = &["sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile"];

/// The order `topk` (or `bottomk`) keeps values in: largest (smallest) first, NaN last
/// either way, as in Prometheus. Sorting is stable, so ties keep the input's order.
pub fn rank(op: &str, x: f64, y: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if op == "topk" => y.total_cmp(&x),
        _ => x.total_cmp(&y),
    }
}

/// A [`REDUCERS`] aggregation, named once rather than compared as text per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reducer {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    Quantile,
}

impl Reducer {
    pub fn of(op: &str) -> Option<Self> {
        Some(match op {
            "sum" => Reducer::Sum,
            "avg" => Reducer::Avg,
            "min" => Reducer::Min,
            "max" => Reducer::Max,
            "count" => Reducer::Count,
            "group" => Reducer::Group,
            "stddev" => Reducer::Stddev,
            "stdvar" => Reducer::Stdvar,
            "quantile" => Reducer::Quantile,
            _ => return None,
        })
    }
}

/// One group's aggregation at one instant, fed its values in order. [`reduce`] feeds it a
/// whole group at once; the whole-range evaluator feeds it series by series (each
/// series' steps in a row, which keeps memory access sequential), so both do the same
/// arithmetic in the same order. `quantile` needs every value and is not fed here.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub count: f64,
    /// The sum, mean, minimum or maximum so far.
    a: f64,
    /// The running sum of squared deviations (`stddev`, `stdvar`).
    b: f64,
}

impl Running {
    pub fn new(r: Reducer) -> Self {
        let a = match r {
            // Whatever an empty sum is, as `Iterator::sum` starts from it.
            Reducer::Sum => std::iter::empty::<f64>().sum(),
            Reducer::Min | Reducer::Max => f64::NAN,
            _ => 0.0,
        };
        Running { count: 0.0, a, b: 0.0 }
    }

    #[inline]
    pub fn push(&mut self, r: Reducer, v: f64) {
        self.count += 1.0;
        match r {
            Reducer::Sum => self.a += v,
            Reducer::Avg => {
                if self.a.is_infinite() {
                    if v.is_infinite() && (self.a > 0.0) == (v > 0.0) {
                        return;
                    }
                    if !v.is_infinite() && !v.is_nan() {
                        return;
                    }
                }
                self.a += v / self.count - self.a / self.count;
            }
            Reducer::Min => {
                if self.a.is_nan() || v < self.a {
                    self.a = v;
                }
            }
            Reducer::Max => {
                if self.a.is_nan() || v > self.a {
                    self.a = v;
                }
            }
            Reducer::Stddev | Reducer::Stdvar => {
                let delta = v - self.a;
                self.a += delta / self.count;
                self.b += delta * (v - self.a);
            }
            Reducer::Count | Reducer::Group | Reducer::Quantile => {}
        }
    }

    pub fn value(&self, r: Reducer) -> f64 {
        match r {
            Reducer::Count => self.count,
            Reducer::Group => 1.0,
            Reducer::Stddev => (self.b / self.count).sqrt(),
            Reducer::Stdvar => self.b / self.count,
            _ => self.a,
        }
    }
}

/// One group's value under a [`REDUCERS`] aggregation; `q` is `quantile`'s parameter.
pub fn reduce(op: &str, values: &mut [f64], q: f64) -> f64 {
    match Reducer::of(op) {
        None | Some(Reducer::Quantile) => quantile(q, values),
        Some(r) => {
            let mut running = Running::new(r);
            for v in values.iter() {
                running.push(r, *v);
            }
            running.value(r)
        }
    }
}

/// An aggregation of `input` (an instant vector), its parameter already evaluated.
pub fn apply_aggregate(agg: &AggregateExpr, param: Option<Value>, input: Value) -> Result<Value, QueryError> {
    let op = agg.op.to_string();
    let Value::Vector(input) = input else {
        return Err(bad(format!("{op}: expected an instant vector")));
    };
    // Groups in first-seen order.
    let mut order: Vec<Labels> = Vec::new();
    let mut groups: HashMap<Labels, Vec<Sample>> = HashMap::new();
    for s in input {
        let key = grouping(&s.labels, &agg.modifier);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(s);
    }
    let scalar_param = |what: &str| match &param {
        Some(Value::Scalar(v)) => Ok(*v),
        _ => Err(bad(format!("{what}: expected a scalar parameter"))),
    };
    let mut out = Vec::new();
    for key in order {
        let members = groups.remove(&key).unwrap_or_default();
        let mut values: Vec<f64> = members.iter().map(|s| s.value).collect();
        let value = match op.as_str() {
            "quantile" => reduce("quantile", &mut values, scalar_param("quantile")?),
            _ if REDUCERS.contains(&op.as_str()) => reduce(&op, &mut values, f64::NAN),
            "topk" | "bottomk" => {
                let k = scalar_param(&op)?;
                if k.is_nan() || k < 1.0 {
                    continue;
                }
                let mut members = members;
                members.sort_by(|a, b| rank(&op, a.value, b.value));
                out.extend(members.into_iter().take(k as usize));
                continue;
            }
            "count_values" => {
                let label = match &param {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(bad("count_values: expected a string parameter")),
                };
                let mut counts: Vec<(String, f64)> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                for v in values {
                    let text = hale_core::api::value_text(v);
                    match index.get(&text) {
                        Some(i) => counts[*i].1 += 1.0,
                        None => {
                            index.insert(text.clone(), counts.len());
                            counts.push((text, 1.0));
                        }
                    }
                }
                for (text, c) in counts {
                    let mut labels = key.clone();
                    labels.retain(|(n, _)| *n != label);
                    labels.push((label.as_str().into(), text.into()));
                    labels.sort();
                    out.push(Sample { labels, value: c });
                }
                continue;
            }
            other => return Err(exec(format!("aggregation {other} is not supported"))),
        };
        out.push(Sample { labels: key, value });
    }
    Ok(Value::Vector(out))
}

pub fn arith(op: &str, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        "%" => a % b,
        "^" => a.powf(b),
        "atan2" => a.atan2(b),
        _ => return None,
    })
}

pub fn compare(op: &str, a: f64, b: f64) -> Option<bool> {
    Some(match op {
        "==" => a == b,
        "!=" => a != b,
        ">" => a > b,
        "<" => a < b,
        ">=" => a >= b,
        "<=" => a <= b,
        _ => return None,
    })
}

/// A vector sample's value `v` under `op` with the scalar `s` (on the left when
/// `scalar_left`): `None` when a comparison filters it out. A filtering comparison keeps
/// the vector's own value (and its metric name); everything else drops the name.
pub fn with_scalar(op: &str, v: f64, s: f64, scalar_left: bool, return_bool: bool) -> Result<Option<f64>, QueryError> {
    let (a, b) = if scalar_left { (s, v) } else { (v, s) };
    Ok(match compare(op, a, b) {
        Some(keep) if return_bool => Some(if keep { 1.0 } else { 0.0 }),
        Some(keep) => keep.then_some(v),
        None => Some(arith(op, a, b).ok_or_else(|| bad(format!("operator {op}")))?),
    })
}

/// How a vector-to-vector arithmetic or comparison pairs samples and labels its results
/// (`on`/`ignoring`, `group_left`/`group_right`, `bool`): one definition for the instant
/// evaluator and the whole-range one.
pub struct Pairing {
    op: String,
    matching: Option<LabelModifier>,
    /// Labels copied from the "one" side (`group_left(...)`).
    include: Vec<String>,
    /// The "many" side is the right one (`group_right`).
    pub swapped: bool,
    pub one_to_one: bool,
    return_bool: bool,
    is_cmp: bool,
}

impl Pairing {
    pub fn new(bin: &BinaryExpr) -> Self {
        let card = bin.modifier.as_ref().map(|m| m.card.clone()).unwrap_or(VectorMatchCardinality::OneToOne);
        let (swapped, include) = match &card {
            VectorMatchCardinality::OneToMany(inc) => (true, inc.labels.clone()),
            VectorMatchCardinality::ManyToOne(inc) => (false, inc.labels.clone()),
            _ => (false, Vec::new()),
        };
        Pairing {
            op: bin.op.to_string(),
            matching: bin.modifier.as_ref().and_then(|m| m.matching.clone()),
            include,
            swapped,
            one_to_one: matches!(card, VectorMatchCardinality::OneToOne),
            return_bool: bin.modifier.as_ref().is_some_and(|m| m.return_bool),
            is_cmp: bin.op.is_comparison_operator(),
        }
    }

    /// What a sample is matched on.
    pub fn signature(&self, labels: &Labels) -> Labels {
        signature(labels, &self.matching)
    }

    /// The result of a "many" sample's value with its match's; `None` when a comparison
    /// filters it out.
    pub fn value(&self, many: f64, one: f64) -> Result<Option<f64>, QueryError> {
        let (a, b) = if self.swapped { (one, many) } else { (many, one) };
        Ok(match compare(&self.op, a, b) {
            Some(r) if self.return_bool => Some(if r { 1.0 } else { 0.0 }),
            Some(r) => r.then_some(a),
            None => Some(arith(&self.op, a, b).ok_or_else(|| bad(format!("operator {}", self.op)))?),
        })
    }

    /// A result's labels: the "many" sample's (the left one's for one-to-one), without the
    /// name unless a comparison filters, narrowed to what identified a one-to-one match,
    /// or given the `group_left(...)` labels of its match.
    pub fn result_labels(&self, many: &Labels, one: &Labels) -> Labels {
        let mut labels = many.clone();
        if !self.is_cmp || self.return_bool {
            labels = drop_name(labels);
        }
        if self.one_to_one {
            match &self.matching {
                Some(LabelModifier::Include(on)) => labels.retain(|(n, _)| listed(&on.labels, n)),
                Some(LabelModifier::Exclude(ign)) => labels.retain(|(n, _)| !listed(&ign.labels, n)),
                None => {}
            }
        } else {
            for name in &self.include {
                labels.retain(|(n, _)| n != name);
                if let Some((_, v)) = one.iter().find(|(n, _)| n == name) {
                    labels.push((name.into(), v.clone()));
                }
            }
            labels.sort();
        }
        labels
    }

    /// Two samples of the "one" side with one signature.
    pub fn duplicate_one(&self) -> QueryError {
        let side = if self.swapped { "left" } else { "right" };
        exec(format!(
            "found duplicate series for the match group on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
        ))
    }

    /// Two one-to-one matches with one signature.
    pub fn duplicate_many() -> QueryError {
        exec("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")
    }

    /// Two results with one label set.
    pub fn duplicate_result() -> QueryError {
        exec("multiple matches for labels: grouping labels must ensure unique matches")
    }
}

/// The labels two samples are matched on.
pub fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.iter().filter(|(n, _)| listed(&on.labels, n)).cloned().collect(),
        Some(LabelModifier::Exclude(ign)) => {
            labels.iter().filter(|(n, _)| n != "__name__" && !listed(&ign.labels, n)).cloned().collect()
        }
        None => labels.iter().filter(|(n, _)| n != "__name__").cloned().collect(),
    }
}

pub fn binary(ev: &mut Evaluator<'_>, bin: &BinaryExpr, t: i64) -> Result<Value, QueryError> {
    let lhs = ev.eval(&bin.lhs, t)?;
    let rhs = ev.eval(&bin.rhs, t)?;
    apply_binary(bin, lhs, rhs)
}

/// A binary operation on its evaluated operands.
pub fn apply_binary(bin: &BinaryExpr, lhs: Value, rhs: Value) -> Result<Value, QueryError> {
    let op = bin.op.to_string();
    let return_bool = bin.modifier.as_ref().is_some_and(|m| m.return_bool);
    let is_cmp = bin.op.is_comparison_operator();
    // Scalar op scalar.
    if let (Value::Scalar(a), Value::Scalar(b)) = (&lhs, &rhs) {
        let v = match compare(&op, *a, *b) {
            Some(r) => {
                if !return_bool {
                    return Err(bad("comparisons between scalars must use BOOL modifier"));
                }
                if r { 1.0 } else { 0.0 }
            }
            None => arith(&op, *a, *b).ok_or_else(|| bad(format!("operator {op} needs vectors")))?,
        };
        return Ok(Value::Scalar(v));
    }
    // Vector op scalar, scalar op vector.
    let scalar_side = match (&lhs, &rhs) {
        (Value::Vector(v), Value::Scalar(s)) => Some((v.clone(), *s, false)),
        (Value::Scalar(s), Value::Vector(v)) => Some((v.clone(), *s, true)),
        _ => None,
    };
    if let Some((vector, s, scalar_left)) = scalar_side {
        if bin.op.is_set_operator() {
            return Err(bad(format!("set operator {op} not allowed in binary scalar expression")));
        }
        let keeps_name = is_cmp && !return_bool;
        let mut out = Vec::new();
        for sample in vector {
            if let Some(value) = with_scalar(&op, sample.value, s, scalar_left, return_bool)? {
                let labels = if keeps_name { sample.labels } else { drop_name(sample.labels) };
                out.push(Sample { labels, value });
            }
        }
        return Ok(Value::Vector(out));
    }
    let (Value::Vector(left), Value::Vector(right)) = (lhs, rhs) else {
        return Err(bad(format!("operator {op} needs instant vectors or scalars")));
    };
    let matching = bin.modifier.as_ref().and_then(|m| m.matching.clone());
    if bin.op.is_set_operator() {
        let right_sigs: std::collections::HashSet<Labels> =
            right.iter().map(|s| signature(&s.labels, &matching)).collect();
        return Ok(Value::Vector(match op.as_str() {
            "and" => left.into_iter().filter(|s| right_sigs.contains(&signature(&s.labels, &matching))).collect(),
            "unless" => left.into_iter().filter(|s| !right_sigs.contains(&signature(&s.labels, &matching))).collect(),
            _ => {
                let left_sigs: std::collections::HashSet<Labels> =
                    left.iter().map(|s| signature(&s.labels, &matching)).collect();
                let mut out = left;
                out.extend(right.into_iter().filter(|s| !left_sigs.contains(&signature(&s.labels, &matching))));
                out
            }
        }));
    }
    // One-to-one or many-to-one / one-to-many: the "one" side must be unique per signature.
    let pairing = Pairing::new(bin);
    let (many, one) = if pairing.swapped { (right, left) } else { (left, right) };
    let mut one_by_sig: HashMap<Labels, Sample> = HashMap::new();
    for s in one {
        if one_by_sig.insert(pairing.signature(&s.labels), s).is_some() {
            return Err(pairing.duplicate_one());
        }
    }
    let mut seen_many: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut result_sigs = std::collections::HashSet::new();
    for s in many {
        let sig = pairing.signature(&s.labels);
        let Some(other) = one_by_sig.get(&sig) else { continue };
        let Some(value) = pairing.value(s.value, other.value)? else { continue };
        // As in Prometheus, only matches that survive a comparison count as duplicates.
        if pairing.one_to_one && !seen_many.insert(sig) {
            return Err(Pairing::duplicate_many());
        }
        let labels = pairing.result_labels(&s.labels, &other.labels);
        if !pairing.one_to_one && !result_sigs.insert(labels.clone()) {
            return Err(Pairing::duplicate_result());
        }
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}
