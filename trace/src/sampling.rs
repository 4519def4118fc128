//! Which spans are exported: parent-based head sampling by ratio, and of the traces not
//! sampled, the entry span of a request that failed or was slow (rate-bounded).
//!
//! Each exported span says how many spans it stands for, `sampling.adjusted_count`, so
//! counts derived from stored spans (the collector's span metrics) estimate the real
//! ones: a failed or slow entry span is kept whether sampled or not, so it stands for
//! itself (1); any other was kept for being sampled, one in `1/ratio`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Link, SpanContext, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor};

/// The decision a trace's first span takes (a `ratio` of trace ids, as OpenTelemetry's
/// `TraceIdRatioBased` draws them), and every later span of it follows.
///
/// Not sampled, a service's *entry* span — a server or consumer span, or a root — is
/// `RecordOnly`, never `Drop`: it is still recorded, so [`KeepInteresting`] can keep it if
/// the request fails or is slow. The spans inside it (client calls, queries) are dropped:
/// recording them would cost every request, and a failed or slow request is already kept
/// by the entry span of each hop that failed or was slow (each service's own).
#[derive(Debug, Clone)]
pub struct HeadRatio {
    ratio: f64,
}

pub fn sampler(ratio: f64) -> HeadRatio {
    HeadRatio { ratio: ratio.clamp(0.0, 1.0) }
}

/// Whether a span is where a service's work on a trace begins: a server or consumer span,
/// a span whose parent is in another process, or a root (`parent_is_remote` is `None`).
fn is_entry(kind: &SpanKind, parent_is_remote: Option<bool>) -> bool {
    matches!(kind, SpanKind::Server | SpanKind::Consumer) || parent_is_remote.is_none_or(|remote| remote)
}

/// Whether `ratio` of all trace ids include this one (its low 63 bits under a bound).
pub(crate) fn drawn(trace_id: TraceId, ratio: f64) -> bool {
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
        kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent.map(|cx| cx.span().span_context().clone()).filter(|sc| sc.is_valid());
        let sampled = match &parent {
            Some(sc) => sc.is_sampled(),
            None => drawn(trace_id, self.ratio),
        };
        let entry = is_entry(kind, parent.as_ref().map(SpanContext::is_remote));
        SamplingResult {
            decision: match (sampled, entry) {
                (true, _) => SamplingDecision::RecordAndSample,
                (false, true) => SamplingDecision::RecordOnly,
                (false, false) => SamplingDecision::Drop,
            },
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

/// Whether `span` would have been kept had its trace not been sampled: an entry span
/// that failed or was slow.
fn kept_unsampled<P>(keeper: &KeepInteresting<P>, span: &SpanData) -> bool {
    let root = span.parent_span_id == opentelemetry::trace::SpanId::INVALID;
    is_entry(&span.span_kind, (!root).then_some(span.parent_span_is_remote)) && keeper.interesting(span)
}

impl<P: SpanProcessor> SpanProcessor for KeepInteresting<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        // Only entry spans of unsampled traces are recorded (see [`HeadRatio`]).
        let adjusted = match (span.span_context.is_sampled(), kept_unsampled(self, &span)) {
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

    /// A context whose span is `sampled` or not, in this process or another.
    fn parent(sampled: bool, remote: bool) -> Context {
        let flags = if sampled { opentelemetry::trace::TraceFlags::SAMPLED } else { Default::default() };
        let sc = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            opentelemetry::trace::SpanId::from_bytes([3; 8]),
            flags,
            remote,
            Default::default(),
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn unsampled_traces_record_only_their_entry_spans() {
        let decide = |parent: Option<&Context>, kind: SpanKind| {
            sampler(0.0).should_sample(parent, TraceId::from_bytes([7; 16]), "s", &kind, &[], &[]).decision
        };
        use SamplingDecision::{Drop, RecordAndSample, RecordOnly};
        // A root, a request from another process, a server or consumer span: recorded.
        assert_eq!(decide(None, SpanKind::Internal), RecordOnly);
        assert_eq!(decide(Some(&parent(false, true)), SpanKind::Internal), RecordOnly);
        assert_eq!(decide(Some(&parent(false, false)), SpanKind::Server), RecordOnly);
        assert_eq!(decide(Some(&parent(false, false)), SpanKind::Consumer), RecordOnly);
        // Calls and queries inside: not.
        assert_eq!(decide(Some(&parent(false, false)), SpanKind::Client), Drop);
        assert_eq!(decide(Some(&parent(false, false)), SpanKind::Internal), Drop);
        // A sampled trace keeps everything, whatever this process's ratio.
        assert_eq!(decide(Some(&parent(true, false)), SpanKind::Client), RecordAndSample);
        assert_eq!(decide(Some(&parent(true, true)), SpanKind::Server), RecordAndSample);
    }

    #[test]
    fn the_bucket_bounds_the_rate() {
        let mut b = Bucket { per_sec: 5.0, tokens: 5.0, at: Instant::now() };
        let taken = (0..100).filter(|_| b.take()).count();
        assert!((5..=6).contains(&taken), "{taken}");
    }
}
