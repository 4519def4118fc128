//! PromQL answers: `/api/v1/query`, `/api/v1/query_range` and `/api/v1/query_exemplars`.

use serde::{Deserialize, Serialize};

use super::Labels;

/// One point of a PromQL answer: Unix seconds, and the value as Prometheus writes it (a
/// string, so `NaN` and `+Inf` survive JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point(pub f64, pub String);

impl Point {
    /// The value, if it parses.
    pub fn value(&self) -> Option<f64> {
        self.1.parse().ok()
    }
}

/// Calls `f` with `v` as Prometheus writes sample values (Go's `FormatFloat(v, 'f', -1,
/// 64)`): the shortest decimal that reads back as `v`, never in exponent form; `NaN`,
/// `+Inf`, `-Inf`. Formatted on the stack (only numbers beyond 1e16 or under 1e-5 take
/// an allocation), since a range query's answer writes one per point.
pub fn with_value_text<R>(v: f64, f: impl FnOnce(&str) -> R) -> R {
    if v.is_nan() {
        return f("NaN");
    }
    if v.is_infinite() {
        return f(if v > 0.0 { "+Inf" } else { "-Inf" });
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    match text.split_once('e') {
        None => f(text.strip_suffix(".0").unwrap_or(text)),
        Some((mantissa, exp)) => f(&without_exponent(mantissa, exp.parse().unwrap_or(0))),
    }
}

/// [`with_value_text`] as a `String`.
pub fn value_text(v: f64) -> String {
    with_value_text(v, str::to_string)
}

/// `mantissa`e`exp` (ryu's scientific form, one digit before any point) written out.
fn without_exponent(mantissa: &str, exp: i32) -> String {
    let (sign, m) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    let digits = format!("{int}{frac}");
    let point = int.len() as i32 + exp;
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{sign}{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (whole, rest) = digits.split_at(point as usize);
        format!("{sign}{whole}.{rest}")
    }
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorSample {
    pub metric: Labels,
    pub value: Point,
}

/// One series of a range query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixSeries {
    pub metric: Labels,
    pub values: Vec<Point>,
}

/// `/api/v1/query` and `/api/v1/query_range`'s `data`: Prometheus's
/// `{"resultType": …, "result": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
pub enum QueryResult {
    Vector(Vec<VectorSample>),
    Matrix(Vec<MatrixSeries>),
    Scalar(Point),
    String(Point),
}

/// One series' exemplars, as `/api/v1/query_exemplars` answers (Prometheus's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExemplarSeries {
    #[serde(rename = "seriesLabels")]
    pub series_labels: Labels,
    pub exemplars: Vec<ExemplarPoint>,
}

/// An exemplar: its labels (`trace_id`…), the observed value as text, and its time in
/// Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExemplarPoint {
    pub labels: Labels,
    pub value: String,
    pub timestamp: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_go_writes_them() {
        for (v, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (0.25, "0.25"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (-1.2345678901234567e20, "-123456789012345670000"),
            (1_658_206_780_088_562.0 + 0.25, "1658206780088562.2"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(value_text(v), want, "{v:e}");
        }
        // As short as Rust's `Display` (shortest, no exponent) and reading back the same;
        // on an exact tie between two shortest forms, Ryū (Go's and this) rounds to even
        // where `Display` rounds up, so the digits themselves are not compared.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_finite() {
                let text = value_text(v);
                assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()), "{v:e}");
                assert_eq!(text.len(), format!("{v}").len(), "{v:e}: {text}");
            }
        }
    }
    use crate::api::{Envelope, test_support::round_trip};

    #[test]
    fn query_results_round_trip_and_parse_as_the_collector_writes_them() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"node":"node-1"},"value":[1700000000.5,"0.25"]},
            {"metric":{},"value":[1700000000.5,"NaN"]}]}}"#;
        let parsed: Envelope<QueryResult> = serde_json::from_str(vector).expect("vector");
        let QueryResult::Vector(samples) = parsed.clone().into_data().expect("data") else { panic!("not a vector") };
        assert_eq!(samples[0].value.value(), Some(0.25));
        assert!(samples[1].value.value().is_some_and(f64::is_nan));
        round_trip(&parsed);
        let matrix =
            r#"{"resultType":"matrix","result":[{"metric":{"node":"node-1"},"values":[[1.0,"1"],[2.0,"+Inf"]]}]}"#;
        let parsed: QueryResult = serde_json::from_str(matrix).expect("matrix");
        assert_eq!(
            serde_json::to_value(&parsed).expect("json"),
            serde_json::from_str::<serde_json::Value>(matrix).expect("json")
        );
        let scalar: QueryResult =
            serde_json::from_str(r#"{"resultType":"scalar","result":[1.0,"2"]}"#).expect("scalar");
        assert_eq!(scalar, QueryResult::Scalar(Point(1.0, "2".into())));
        round_trip(&QueryResult::String(Point(1.0, "text".into())));
    }
}
