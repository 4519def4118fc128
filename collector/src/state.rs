//! The collector's shared state: what every HTTP handler and background task reads. It
//! sits below the API (`api` reads it and hands route families that need only a part of
//! it a sub-state with `FromRef`); it knows nothing of routes.

use std::sync::Arc;
use std::time::Instant;

use crate::logs::LogStore;
use crate::notify::outbox::Outbox;
use crate::notify::silence::Silences;
use crate::rules::RulesView;
use crate::slo::SloDef;
use crate::sources::Sources;
use crate::store::Store;
use crate::telemetry::Telemetry;

pub struct Collector {
    pub store: Store,
    pub logs: LogStore,
    /// Spans (OTLP), for the Tempo-compatible API.
    pub traces: crate::traces::TraceStore,
    /// The newest exemplars senders attached to their samples.
    pub exemplars: crate::exemplars::ExemplarStore,
    /// Free space under the data dir: ingest is refused below the reserve.
    pub disk: crate::disk::DiskGuard,
    /// Bearer token required on the ingest endpoints; `None` leaves them open.
    pub ingest_token: Option<std::sync::Arc<hale_core::token::Token>>,
    /// A bearer token `/v1/traces` takes besides the ingest token (spans only).
    pub traces_token: Option<std::sync::Arc<hale_core::token::Token>>,
    pub started: Instant,
    /// Counted as requests are served (query latency, refused batches and samples).
    pub telemetry: Telemetry,
    /// What the rule groups found at their last evaluation.
    pub rules: RulesView,
    /// Bearer token for silences; `None` makes them read-only.
    pub admin_token: Option<std::sync::Arc<hale_core::token::Token>>,
    pub silences: Arc<Silences>,
    /// The notification outbox, when notifications are configured.
    pub outbox: Option<Arc<Outbox>>,
    /// The SLOs of the loaded specs.
    pub slos: Vec<SloDef>,
    pub slo_min_events: u64,
    /// Samples one API query may load and produce.
    pub query_max_samples: usize,
    /// The labels notifications group alerts by (the route's `group_by`), so a reader of
    /// `/api/v1/alerts` can group them the same way.
    pub group_by: Vec<String>,
    /// The numbered senders and what they wrote, to end a silent one's series.
    pub sources: Sources,
    /// What senders said of their metric families (type, help), for `/api/v1/metadata`.
    pub metadata: crate::metadata::MetadataStore,
    /// What the Prometheus status endpoints say of this collector.
    pub server: crate::server_info::ServerInfo,
    /// The remote_write backends forwarded to, and how each is doing.
    pub forwarding: crate::forward::Forwarding,
    /// The query backend rules and the query API evaluate through (`--query-url`).
    pub remote: Option<crate::remote::RemoteQuery>,
}

impl AsRef<Store> for Collector {
    fn as_ref(&self) -> &Store {
        &self.store
    }
}

impl Collector {
    /// Every SLO's windows, budget and status at `now`, read from what its rules recorded.
    /// It runs PromQL: call it on the blocking pool.
    pub fn slo_states(&self, now: i64) -> Vec<crate::slo::SloState> {
        crate::slo::state::compute(&self.store, &self.slos, self.slo_min_events, now)
    }
}
