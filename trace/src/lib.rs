//! # hale-trace
//!
//! OpenTelemetry traces for every Hale process and shop service, one pipeline for all:
//! spans are made through `tracing` (its spans become OpenTelemetry spans through
//! `tracing-opentelemetry`), W3C `traceparent`/`tracestate` carry the context on every
//! HTTP hop ([`inject`], [`extract`], the server middleware [`server_span`]), and finished
//! spans go as OTLP/HTTP protobuf to a collector's `/v1/traces`.
//!
//! Sampling, decided where a trace starts and kept by every hop after (parent-based):
//! a `ratio` of new traces is sampled. Spans of the rest are still recorded, and one that
//! ends in error or lasts at least `slow` is exported anyway, at most `max_kept_per_sec`
//! of those a second: the requests an on-call engineer looks for are kept even at a low
//! ratio. Such a span's trace is partial (only the hops that were themselves slow or
//! failed).
//!
//! Export runs on the SDK's batch thread; the HTTP POST itself on the process's tokio
//! runtime, through Hale's TLS client ([`hale_client::tls::builder`]), so traces go over
//! the same mutual TLS as everything else. A full queue or a collector away drops spans
//! (counted by the SDK's own logs), never blocks a request.

mod export;
mod propagation;
mod sampling;
mod server;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};

pub use propagation::{extract, inject, trace_ids};
pub use server::server_span;

/// Where spans go and which are kept.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `service.name` of every span.
    pub service: String,
    /// The `service.instance.id` (a replica's name).
    pub instance: String,
    /// The OTLP/HTTP traces endpoint (`http://collector:9464/v1/traces`).
    pub endpoint: String,
    /// Bearer token for the endpoint (the collector's ingest token).
    pub token: Option<String>,
    /// Share of new traces sampled, 0..=1.
    pub ratio: f64,
    /// A span at least this long is kept even if its trace was not sampled.
    pub slow: Duration,
    /// Unsampled spans kept for being slow or failed, at most this many a second.
    pub max_kept_per_sec: u32,
}

impl Config {
    /// The defaults for `service`, sending to `endpoint`: 10 % of traces, and every
    /// request of 500 ms or more or in error, up to 100 a second.
    pub fn new(service: &str, instance: &str, endpoint: &str) -> Self {
        Config {
            service: service.into(),
            instance: instance.into(),
            endpoint: endpoint.into(),
            token: None,
            ratio: 0.1,
            slow: Duration::from_millis(500),
            max_kept_per_sec: 100,
        }
    }
}

/// The running pipeline. Dropping it flushes what is queued (bounded by the export timeout).
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Starts the pipeline. Call inside a tokio runtime: the export task runs on it.
    pub fn start(config: Config) -> Tracing {
        let resource = Resource::builder()
            .with_service_name(config.service.clone())
            .with_attribute(opentelemetry::KeyValue::new("service.instance.id", config.instance.clone()))
            .build();
        let exporter = export::OtlpHttp::start(&config);
        let batch = BatchSpanProcessor::builder(exporter).build();
        let keeper = sampling::KeepInteresting::new(batch, config.slow, config.max_kept_per_sec);
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampling::sampler(config.ratio))
            .with_span_processor(keeper)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        Tracing { provider }
    }

    /// The tracer to give `tracing_opentelemetry::layer().with_tracer(..)`.
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        self.provider.tracer(scope)
    }

    /// A `tracing` layer that turns spans into OpenTelemetry spans of this pipeline.
    pub fn layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer("hale")).with_error_records_to_exceptions(true)
    }

    /// Exports what is queued now.
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}
