//! Requests whose trace is not sampled make no spans.
//!
//! Nine in ten requests (at the default ratio) are in traces that will not be stored, yet
//! a `tracing` span turned into an OpenTelemetry span costs a request tens of
//! microseconds in a busy service (builders, attributes, contexts, cross-thread frees),
//! sampled or not: measured with `hale bench tracing`, that was most of what tracing cost
//! the shop. So [`crate::server_span`] decides first, and an unsampled request runs inside
//! a task-local [`Unsampled`] instead of a span: its trace and span ids (what the next hop
//! continues, and what log lines carry), and whether it is a long-poll. Calls and queries
//! inside make no spans either ([`crate::send`], [`crate::db_span`], [`crate::child_span`]).
//! If the request fails or is slow, its server span is made afterwards, with the same ids,
//! start and end (see `server.rs`), and kept as any failed or slow entry span is.
//!
//! The ids the SDK gives a span come from its id generator: [`ChosenIds`] lets the code
//! building a span on this thread choose them (the synthesized server span must have the
//! span id the next hop already names as its parent; a sampled root must have the trace
//! id its sampling was drawn on).

use std::cell::Cell;

use opentelemetry::trace::{SpanContext, SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// An unsampled request in progress.
pub(crate) struct Unsampled {
    pub context: SpanContext,
    pub long_poll: Cell<bool>,
}

tokio::task_local! {
    static REQUEST: Unsampled;
}

/// Runs `work` as the unsampled request `context`; returns its output and whether it
/// said it is a long-poll.
pub(crate) async fn run<F: Future>(context: SpanContext, work: F) -> (F::Output, bool) {
    REQUEST
        .scope(Unsampled { context, long_poll: Cell::new(false) }, async {
            let output = work.await;
            (output, REQUEST.try_with(|r| r.long_poll.get()).unwrap_or(false))
        })
        .await
}

/// The unsampled request this task is serving, if it is.
pub(crate) fn context() -> Option<SpanContext> {
    REQUEST.try_with(|r| r.context.clone()).ok()
}

/// Marks this task's unsampled request, if any, as a long-poll.
pub(crate) fn mark_long_poll() {
    let _ = REQUEST.try_with(|r| r.long_poll.set(true));
}

/// Whether this task serves a request whose trace is not sampled, where no span is
/// made: a span made anyway would start a trace of its own.
pub fn in_unsampled_request() -> bool {
    REQUEST.try_with(|_| ()).is_ok()
}

thread_local! {
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
    static NEXT_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, unless the code building a span on this thread chose them with
/// [`with_ids`].
#[derive(Debug, Default)]
pub(crate) struct ChosenIds(RandomIdGenerator);

impl IdGenerator for ChosenIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID.with(Cell::take).unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN_ID.with(Cell::take).unwrap_or_else(|| self.0.new_span_id())
    }
}

/// Runs `build` (which builds one span on this thread) with its trace id (used only if
/// it is a root) and span id chosen.
pub(crate) fn with_ids<T>(trace_id: Option<TraceId>, span_id: Option<SpanId>, build: impl FnOnce() -> T) -> T {
    NEXT_TRACE_ID.with(|c| c.set(trace_id));
    NEXT_SPAN_ID.with(|c| c.set(span_id));
    let built = build();
    NEXT_TRACE_ID.with(|c| c.set(None));
    NEXT_SPAN_ID.with(|c| c.set(None));
    built
}

/// Fresh random ids.
pub(crate) fn random_ids() -> (TraceId, SpanId) {
    let ids = RandomIdGenerator::default();
    (ids.new_trace_id(), ids.new_span_id())
}
