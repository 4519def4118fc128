//! Loki's read API as the collector answers it (`/loki/api/v1/query_range`, `/query`,
//! `/labels`, `/label/<name>/values`, `/series`, `/tail`), so Grafana's Loki datasource
//! shows Hale's logs. Query answers sit in the usual [`Envelope`](super::Envelope);
//! metric results reuse the Prometheus shapes, as Loki does.

use serde::{Deserialize, Serialize};

use super::{Labels, MatrixSeries, VectorSample};

/// `data` of a query answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LokiData {
    #[serde(rename = "resultType")]
    pub result_type: LokiResultType,
    pub result: LokiResult,
    /// Loki's query statistics; Hale reports none.
    #[serde(default)]
    pub stats: LokiStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiResultType {
    Streams,
    Matrix,
    Vector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LokiResult {
    Streams(Vec<LokiStream>),
    Matrix(Vec<MatrixSeries>),
    Vector(Vec<VectorSample>),
}

/// One stream: its labels and its lines, each `[ns since the epoch as text, line]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LokiStream {
    pub stream: Labels,
    pub values: Vec<[String; 2]>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LokiStats {}

/// One message of `/loki/api/v1/tail` (a WebSocket text frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LokiTail {
    pub streams: Vec<LokiStream>,
    #[serde(default)]
    pub dropped_entries: Vec<LokiDropped>,
}

/// Lines the tail could not deliver (it fell behind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LokiDropped {
    pub labels: Labels,
    pub timestamp: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_matrices_read_as_loki_writes_them() {
        let streams = r#"{"resultType":"streams","result":[{"stream":{"service":"orders"},"values":[["1700000000000000000","boom"]]}],"stats":{}}"#;
        let data: LokiData = serde_json::from_str(streams).expect("streams");
        assert_eq!(data.result_type, LokiResultType::Streams);
        let LokiResult::Streams(s) = &data.result else { panic!("streams") };
        assert_eq!(s[0].values[0][1], "boom");
        let matrix = r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"3"]]}]}"#;
        let data: LokiData = serde_json::from_str(matrix).expect("matrix");
        assert!(matches!(data.result, LokiResult::Matrix(_)));
        let tail = LokiTail { streams: s.clone(), dropped_entries: Vec::new() };
        assert_eq!(serde_json::from_str::<LokiTail>(&serde_json::to_string(&tail).expect("json")).expect("back"), tail);
    }
}
