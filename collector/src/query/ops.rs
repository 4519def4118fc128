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

/// The labels a sample is grouped by under `by (...)` / `without (...)`.
pub fn grouping(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Vec::new(),
        Some(LabelModifier::Include(keep)) => labels.iter().filter(|(n, _)| keep.labels.contains(n)).cloned().collect(),
        Some(LabelModifier::Exclude(drop)) => {
            labels.iter().filter(|(n, _)| n != "__name__" && !drop.labels.contains(n)).cloned().collect()
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

/// One group's value under a [`REDUCERS`] aggregation; `q` is `quantile`'s parameter.
pub fn reduce(op: &str, values: &mut [f64], q: f64) -> f64 {
    let n = values.len() as f64;
    match op {
        "sum" => values.iter().sum(),
        "avg" => {
            let mut mean: f64 = 0.0;
            for (i, v) in values.iter().enumerate() {
                let count = (i + 1) as f64;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (*v > 0.0) {
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
        "min" => values.iter().copied().fold(f64::NAN, |m, v| if m.is_nan() || v < m { v } else { m }),
        "max" => values.iter().copied().fold(f64::NAN, |m, v| if m.is_nan() || v > m { v } else { m }),
        "count" => n,
        "group" => 1.0,
        "stddev" | "stdvar" => {
            let (mut count, mut mean, mut aux) = (0.0, 0.0, 0.0);
            for v in values.iter() {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                aux += delta * (v - mean);
            }
            if op == "stddev" { (aux / count).sqrt() } else { aux / count }
        }
        _ => quantile(q, values),
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
                // NaN sorts last for both directions, as in Prometheus.
                members.sort_by(|a, b| {
                    let (x, y) = (a.value, b.value);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if op == "topk" => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
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
                    labels.push((label.clone(), text));
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

/// The labels two samples are matched on.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.iter().filter(|(n, _)| on.labels.contains(n)).cloned().collect(),
        Some(LabelModifier::Exclude(ign)) => {
            labels.iter().filter(|(n, _)| n != "__name__" && !ign.labels.contains(n)).cloned().collect()
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
    let card = bin.modifier.as_ref().map(|m| m.card.clone()).unwrap_or(VectorMatchCardinality::OneToOne);
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
    let (many, one, swapped, include) = match &card {
        VectorMatchCardinality::OneToMany(inc) => (right, left, true, inc.labels.clone()),
        VectorMatchCardinality::ManyToOne(inc) => (left, right, false, inc.labels.clone()),
        _ => (left, right, false, Vec::new()),
    };
    let mut one_by_sig: HashMap<Labels, Sample> = HashMap::new();
    for s in one {
        let sig = signature(&s.labels, &matching);
        if one_by_sig.insert(sig, s).is_some() {
            let side = if swapped { "left" } else { "right" };
            return Err(exec(format!(
                "found duplicate series for the match group on the {side} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
    }
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut seen_many: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut result_sigs = std::collections::HashSet::new();
    for s in many {
        let sig = signature(&s.labels, &matching);
        let Some(other) = one_by_sig.get(&sig) else { continue };
        let (a, b) = if swapped { (other.value, s.value) } else { (s.value, other.value) };
        let (keep, value) = match compare(&op, a, b) {
            Some(r) => {
                if return_bool {
                    (true, if r { 1.0 } else { 0.0 })
                } else {
                    (r, a)
                }
            }
            None => (true, arith(&op, a, b).ok_or_else(|| bad(format!("operator {op}")))?),
        };
        if !keep {
            continue;
        }
        // As in Prometheus, only matches that survive a comparison count as duplicates.
        if one_to_one && !seen_many.insert(sig.clone()) {
            return Err(exec(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
            ));
        }
        // Result labels: from the "many" side (or the left one for one-to-one).
        let mut labels = s.labels.clone();
        if !is_cmp || return_bool {
            labels = drop_name(labels);
        }
        if one_to_one {
            // One-to-one results keep only what identified the match.
            match &matching {
                Some(LabelModifier::Include(on)) => labels.retain(|(n, _)| on.labels.contains(n)),
                Some(LabelModifier::Exclude(ign)) => labels.retain(|(n, _)| !ign.labels.contains(n)),
                None => {}
            }
        } else {
            for name in &include {
                labels.retain(|(n, _)| n != name);
                if let Some((_, v)) = other.labels.iter().find(|(n, _)| n == name) {
                    labels.push((name.clone(), v.clone()));
                }
            }
            labels.sort();
        }
        if !one_to_one && !result_sigs.insert(labels.clone()) {
            return Err(exec("multiple matches for labels: grouping labels must ensure unique matches"));
        }
        out.push(Sample { labels, value });
    }
    Ok(Value::Vector(out))
}
