//! Traces as the collector serves them on its Tempo-compatible API, the subset Grafana's
//! Tempo datasource calls: `/api/search` ([`TraceSearch`]), `/api/search/tags` and
//! `/api/v2/search/tags` ([`TagNames`], [`TagScopes`]), the tag values
//! ([`TagValues`], [`TypedTagValues`]). A trace itself is OTLP (`TracesData`), as protobuf
//! or OTLP/JSON. Field names are Tempo's (camelCase); Grafana parses search answers
//! strictly, so nothing here has a field Tempo's `SearchResponse` lacks.

use serde::{Deserialize, Serialize};

/// `/api/search`: the traces that match, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceSearch {
    pub traces: Vec<TraceSummary>,
    pub metrics: SearchMetrics,
}

/// One trace found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// 32 hex digits.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// The root span's service (its resource's `service.name`); the earliest span's while
    /// the root has not arrived.
    pub root_service_name: String,
    /// The root span's name.
    pub root_trace_name: String,
    /// Nanoseconds since the epoch, as a string (a uint64 in Tempo's JSON).
    pub start_time_unix_nano: String,
    /// From the earliest start to the latest end of its spans.
    pub duration_ms: u32,
}

/// What a search looked at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchMetrics {
    pub inspected_traces: u32,
}

/// `/api/search/tags`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagNames {
    pub tag_names: Vec<String>,
}

/// `/api/v2/search/tags`: tag names by scope (`resource`, `span`, `intrinsic`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagScopes {
    pub scopes: Vec<TagScope>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagScope {
    pub name: String,
    pub tags: Vec<String>,
}

/// `/api/search/tag/<name>/values`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagValues {
    pub tag_values: Vec<String>,
}

/// `/api/v2/search/tag/<name>/values`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypedTagValues {
    pub tag_values: Vec<TypedValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TypedValue {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}
