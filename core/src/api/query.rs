//! PromQL answers: `/api/v1/query` and `/api/v1/query_range`.

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

#[cfg(test)]
mod tests {
    use super::*;
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
