//! The HTTP server metrics every shop service exposes, named after OpenTelemetry's semantic
//! conventions: `http_server_request_duration_seconds{http_request_method, http_route,
//! http_response_status_code}`. The route is the matched route template, never the raw
//! path, so label cardinality stays bounded. Beside it, `http_server_active_requests` (API
//! requests being worked on) and `shop_requests_shed_total` (API requests refused with 503
//! because the replica's capacity stayed full).
//!
//! Each bucket of the duration histogram keeps an exemplar: the trace id of the last
//! sampled request that fell in it (OpenMetrics exposition: `… # {trace_id="…"} 0.31 …`),
//! so a latency spike on a chart links to a trace the collector holds.

use std::sync::Arc;

use hale_serve::metrics::registered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// OpenTelemetry's recommended boundaries for `http.server.request.duration`.
pub const DURATION_BUCKETS_SECS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub http_request_method: String,
    pub http_route: String,
    pub http_response_status_code: u16,
}

/// An exemplar's labels: the W3C ids of the request's server span.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
    pub span_id: String,
}

pub type DurationHistogram = HistogramWithExemplars<TraceExemplar>;

fn duration_histogram() -> DurationHistogram {
    HistogramWithExemplars::new(DURATION_BUCKETS_SECS.into_iter())
}

#[derive(Clone)]
pub struct HttpMetrics {
    pub duration: Family<HttpLabels, DurationHistogram, fn() -> DurationHistogram>,
    /// API requests being worked on (`http.server.active_requests`).
    pub active: Gauge,
    /// API requests refused because every slot stayed busy (see `ServiceConfig::max_in_flight`).
    pub shed: Counter,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let duration = Family::<HttpLabels, DurationHistogram, fn() -> DurationHistogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests",
            Unit::Seconds,
            duration.clone(),
        );
        let active = registered(registry, "http_server_active_requests", "API requests being worked on");
        let shed = registered(
            registry,
            "shop_requests_shed",
            "API requests refused with 503 because the replica stayed at capacity",
        );
        HttpMetrics { duration, active, shed }
    }
}

/// The registry, frozen once every metric is registered, encoded on `/metrics`.
pub type SharedRegistry = Arc<Registry>;
