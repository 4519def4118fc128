//! # hale-trace
//!
//! OpenTelemetry traces for every Hale process and shop service, one pipeline for all:
//! spans are made through `tracing` (its spans become OpenTelemetry spans through
//! `tracing-opentelemetry`), W3C `traceparent`/`tracestate` carry the context on every
//! HTTP hop ([`inject`], [`extract`], the server middleware [`server_span`]), and finished
//! spans go as OTLP/HTTP protobuf to a collector's `/v1/traces`.
//!
//! Sampling, decided where a trace starts and kept by every hop after (parent-based):
//! a `ratio` of new traces is sampled. A request of the rest makes no span at all — its
//! trace and span ids still go on to the next hop and onto its log lines — and if it
//! fails or lasts at least `slow`, its server span is made when it is answered and
//! exported anyway, at most `max_kept_per_sec` of those a second: the requests an
//! on-call engineer looks for are kept even at a low ratio. Such a trace is partial (the
//! server spans of the hops that were themselves slow or failed, parented by the ids
//! each handed on). Spans that are not a request's (an agent's cycle, a rule group's
//! evaluation) are recorded whatever the draw, and kept on the same terms.
//!
//! Export runs on the SDK's batch thread; the HTTP POST itself on the process's tokio
//! runtime, through Hale's TLS client ([`hale_client::tls::builder`]), so traces go over
//! the same mutual TLS as everything else. A full queue or a collector away drops spans
//! (counted by the SDK's own logs), never blocks a request.

mod client;
mod export;
mod propagation;
mod sampling;
mod server;
mod unsampled;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use tracing_subscriber::Layer as _;

pub use client::{child_span, db_span, send, send_long_poll};
pub use propagation::{
    LONG_POLL, TraceIds, context_of, continue_trace, extract, ids_in, inject, mark_long_poll, request_ids, trace_ids,
    trace_ids_of, traceparent,
};
pub use sampling::ADJUSTED_COUNT;
pub use server::server_span;
pub use unsampled::in_unsampled_request;

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

impl Config {
    /// The configuration OpenTelemetry's standard variables give, `None` without an
    /// endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// with `/v1/traces` added), `OTEL_EXPORTER_OTLP_HEADERS` (its `authorization=Bearer
    /// <token>`, values URL-encoded), `OTEL_TRACES_SAMPLER_ARG` (the ratio), and
    /// `HALE_TRACE_SLOW_MS` (what counts as slow).
    pub fn from_env(service: &str, instance: &str) -> Option<Config> {
        Self::from_vars(service, instance, |k| std::env::var(k).ok())
    }

    fn from_vars(service: &str, instance: &str, var: impl Fn(&str) -> Option<String>) -> Option<Config> {
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| {
                var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
            })
            .filter(|e| !e.is_empty())?;
        let mut config = Config::new(service, instance, &endpoint);
        config.token = var("OTEL_EXPORTER_OTLP_HEADERS").and_then(|headers| {
            headers.split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                let v = v.trim().replace("%20", " ");
                (k.trim().eq_ignore_ascii_case("authorization"))
                    .then(|| v.strip_prefix("Bearer ").unwrap_or(&v).to_string())
            })
        });
        if let Some(ratio) = var("OTEL_TRACES_SAMPLER_ARG").and_then(|r| r.parse::<f64>().ok()) {
            config.ratio = ratio.clamp(0.0, 1.0);
        }
        if let Some(ms) = var("HALE_TRACE_SLOW_MS").and_then(|r| r.parse::<u64>().ok()) {
            config.slow = Duration::from_millis(ms);
        }
        Some(config)
    }
}

/// The running pipeline. Dropping it flushes what is queued (bounded by the export timeout).
pub struct Tracing {
    provider: SdkTracerProvider,
    settings: std::sync::Arc<Settings>,
}

/// What [`server_span`] needs of the pipeline serving the current subscriber: whether to
/// sample, what is slow, and the tracer to make a kept unsampled request's span with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub ratio: f64,
    pub slow: Duration,
    pub tracer: SdkTracer,
}

/// A layer that does nothing but hold the pipeline's [`Settings`], found through the
/// dispatcher (`Dispatch::downcast_ref`), so each subscriber — one a process, several in
/// parallel tests — reaches its own pipeline.
pub(crate) struct PipelineLayer(pub std::sync::Arc<Settings>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PipelineLayer {}

/// The settings of the current subscriber's pipeline; `None` without one.
pub(crate) fn settings() -> Option<std::sync::Arc<Settings>> {
    tracing::dispatcher::get_default(|d| d.downcast_ref::<PipelineLayer>().map(|p| p.0.clone()))
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
        let keeper = sampling::KeepInteresting::new(batch, config.slow, config.max_kept_per_sec, config.ratio);
        let provider = SdkTracerProvider::builder()
            .with_id_generator(unsampled::ChosenIds::default())
            .with_sampler(sampling::sampler(config.ratio))
            .with_span_processor(keeper)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let settings =
            std::sync::Arc::new(Settings { ratio: config.ratio, slow: config.slow, tracer: provider.tracer("hale") });
        Tracing { provider, settings }
    }

    /// The tracer to give `tracing_opentelemetry::layer().with_tracer(..)`.
    pub fn tracer(&self, scope: &'static str) -> SdkTracer {
        self.provider.tracer(scope)
    }

    /// A `tracing` layer that turns spans into OpenTelemetry spans of this pipeline.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        // Only what a span's reader needs: the layer's defaults add busy/idle time, thread,
        // source location and target to every span (eight attributes, two clock reads a
        // poll), paid for every request, sampled or not. Nor is an OpenTelemetry context
        // activated each time a span is entered (every poll of every request): Hale's
        // code asks the span itself ([`trace_ids`], [`inject`], [`ids_in`]).
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer("hale"))
            .with_context_activation(false)
            .with_error_records_to_exceptions(true)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_target(false)
            .and_then(PipelineLayer(self.settings.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_variables_configure_the_pipeline() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(Config::from_vars("s", "s-1", vars(&[])).is_none(), "no endpoint, no tracing");
        let c = Config::from_vars(
            "s",
            "s-1",
            vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9464/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=b,Authorization=Bearer%20tok"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("HALE_TRACE_SLOW_MS", "250"),
            ]),
        )
        .expect("configured");
        assert_eq!(c.endpoint, "http://127.0.0.1:9464/v1/traces");
        assert_eq!(c.token.as_deref(), Some("tok"));
        assert_eq!((c.ratio, c.slow), (0.25, Duration::from_millis(250)));
    }
}
