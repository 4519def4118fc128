//! Which spans are exported: parent-based head sampling by ratio, every span recorded,
//! and unsampled spans kept when they failed or were slow (rate-bounded).
//!
//! Each exported span says how many spans it stands for, `sampling.adjusted_count`, so
//! counts derived from stored spans (the collector's span metrics) estimate the real
//! ones: a failed or slow span is kept whether sampled or not, so it stands for itself
//! (1); any other was kept for being sampled, one in `1/ratio`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor};

/// The decision a trace's first span takes (a `ratio` of trace ids, as OpenTelemetry's
/// `TraceIdRatioBased` draws them), and every later span of it follows. Not sampled is
/// `RecordOnly`, never `Drop`: the span is still recorded, so [`KeepInteresting`] can
/// keep it if it fails or is slow.
#[derive(Debug, Clone)]
pub struct HeadRatio {
    ratio: f64,
}

pub fn sampler(ratio: f64) -> HeadRatio {
    HeadRatio { ratio: ratio.clamp(0.0, 1.0) }
}

/// Whether `ratio` of all trace ids include this one (its low 63 bits under a bound).
fn drawn(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let low =
        u64::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]]);
    (low >> 1) < (ratio * (1u64 << 63) as f64) as u64
}

impl ShouldSample for HeadRatio {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent.map(|cx| cx.span().span_context().clone()).filter(|sc| sc.is_valid());
        let sampled = match &parent {
            Some(sc) => sc.is_sampled(),
            None => drawn(trace_id, self.ratio),
        };
        SamplingResult {
            decision: if sampled { SamplingDecision::RecordAndSample } else { SamplingDecision::RecordOnly },
            attributes: Vec::new(),
            trace_state: parent.map(|sc| sc.trace_state().clone()).unwrap_or_default(),
        }
    }
}

/// A token bucket: `per_sec` a second, bursts of as many.
#[derive(Debug)]
struct Bucket {
    per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(self.per_sec);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Passes sampled spans on to `inner`, and unsampled ones that ended in error or lasted
/// at least `slow`, at most `max_per_sec` of those a second.
#[derive(Debug)]
pub struct KeepInteresting<P> {
    inner: P,
    slow: Duration,
    bucket: Mutex<Bucket>,
    /// The head sampling ratio: what a sampled, unremarkable span stands for.
    ratio: f64,
}

/// The attribute saying how many spans an exported span stands for.
pub const ADJUSTED_COUNT: &str = "sampling.adjusted_count";

impl<P> KeepInteresting<P> {
    pub fn new(inner: P, slow: Duration, max_per_sec: u32, ratio: f64) -> Self {
        let per_sec = f64::from(max_per_sec);
        KeepInteresting {
            inner,
            slow,
            bucket: Mutex::new(Bucket { per_sec, tokens: per_sec, at: Instant::now() }),
            ratio: ratio.clamp(0.0, 1.0),
        }
    }

    /// Whether a span failed or was slow (a long-poll never is).
    fn interesting(&self, span: &SpanData) -> bool {
        let long_poll = span.attributes.iter().any(|kv| kv.key.as_str() == crate::LONG_POLL);
        let slow = !long_poll && span.end_time.duration_since(span.start_time).unwrap_or_default() >= self.slow;
        slow || matches!(span.status, opentelemetry::trace::Status::Error { .. })
    }
}

impl<P: SpanProcessor> SpanProcessor for KeepInteresting<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        let interesting = self.interesting(&span);
        let adjusted = match (span.span_context.is_sampled(), interesting) {
            (_, true) => 1.0,
            (true, false) if self.ratio > 0.0 => 1.0 / self.ratio,
            // Sampled by a caller at another ratio while this one samples nothing.
            (true, false) => 1.0,
            (false, false) => return,
        };
        if !span.span_context.is_sampled() && !self.bucket.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return;
        }
        span.attributes.push(KeyValue::new(ADJUSTED_COUNT, adjusted));
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_draws_about_its_share_of_trace_ids() {
        let mut hits = 0;
        for i in 0..20_000u128 {
            // Spread ids as random ones are.
            let id = TraceId::from_bytes((i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_be_bytes());
            hits += usize::from(drawn(id, 0.1));
        }
        assert!((1_700..2_300).contains(&hits), "{hits} of 20,000 at 10 %");
        assert!(drawn(TraceId::from_bytes([0xff; 16]), 1.0));
        assert!(!drawn(TraceId::from_bytes([0xff; 16]), 0.0));
    }

    #[test]
    fn the_bucket_bounds_the_rate() {
        let mut b = Bucket { per_sec: 5.0, tokens: 5.0, at: Instant::now() };
        let taken = (0..100).filter(|_| b.take()).count();
        assert!((5..=6).contains(&taken), "{taken}");
    }
}
