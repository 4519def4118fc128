//! The gateway: the shop's one entry point. Routes by path to the service's pool, balances
//! replicas, checks their readiness actively and ejects failing ones passively, retries an
//! idempotent request once on another replica, and sends catalog writes to the primary
//! with its epoch. `/admin/pool` lets the healer change members and the primary.
//!
//! Readiness is checked every 250 ms ([`CHECK_INTERVAL`]). The gateway's own `/readyz` is
//! ready while every service has a ready replica, and also says whether the catalog
//! primary is ready: reads need any replica, writes the primary, and `hale up` waits for it
//! before seeding. `shop_gateway_catalog_primary_ready` exports the same for the
//! `CatalogPrimaryDown` alert. A catalog replica that reports itself primary under an
//! older epoch than the pool's (an old primary back from a node cut off during a failover)
//! counts as not ready and is fenced with the pool's epoch.
//!
//! A failed attempt (connect error, timeout, 5xx) is retried once on another replica when
//! the method is idempotent, or for any method when the connection was never made. One
//! attempt takes at most 4 s, so a retry fits in the 10 s request timeout.

pub mod pool;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use hale_core::api::{CatalogReadiness, EpochRequest, GatewayReadiness, PoolUpdate, PrimaryReadiness};
use hale_core::{ClusterConfig, Role, ServiceKind};
use hale_serve::metrics::registered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::http::internal::{self, CLIENT_ADDR_HEADER, EPOCH_HEADER};
use crate::http::token::unix_now;
use crate::http::{Admin, ApiJson, AppError, BODY_LIMIT_BYTES, Readiness};
use pool::{Check, Member, Pool, Pools};

/// Interval of the active `/readyz` checks: a lost catalog primary is a failover, and
/// every check interval is time without writes.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// A `/readyz` is answered from memory in a millisecond or two; 400 ms is a replica in
/// trouble (and two in a row, asked back to back, take it out of the pool). A replica
/// that is merely slow (a latency fault of 300 ms) stays in.
const CHECK_TIMEOUT: Duration = Duration::from_millis(400);
/// The catalog's: a catalog primary out of the pool is a failover, and every 100 ms here
/// is 200 ms more without writes when it is lost (two checks); still well above what a
/// live primary takes to answer.
const CATALOG_CHECK_TIMEOUT: Duration = Duration::from_millis(300);

fn check_timeout(service: ServiceKind) -> Duration {
    if service == ServiceKind::Catalog { CATALOG_CHECK_TIMEOUT } else { CHECK_TIMEOUT }
}
/// Upper bound on one upstream attempt: two attempts (a retry) fit in the gateway's own
/// 10 s request timeout, and the catalog's 2 s long-poll fits in one.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    service: String,
    instance: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

pub struct GatewayState {
    pools: Pools,
    client: reqwest::Client,
    readiness: Readiness,
    upstream: Family<UpstreamLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    ready_members: Family<ServiceLabels, Gauge>,
    /// 1 while the catalog primary the gateway writes to is ready: the fastest signal of a
    /// lost primary (the gateway checks it every 250 ms), which the healer fails over on.
    primary_ready: Gauge,
    /// To fence an old catalog primary that comes back still believing it leads.
    admin_token: Option<String>,
}

impl GatewayState {
    /// Pools from the cluster topology: every replica of every service; the catalog's
    /// first replica is the primary of epoch 1 until a replica reports a newer epoch.
    pub fn from_cluster(
        cluster: &ClusterConfig,
        readiness: Readiness,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, AppError> {
        let mut pools: BTreeMap<ServiceKind, Pool> = BTreeMap::new();
        for instance in cluster.instances() {
            if instance.service == ServiceKind::Gateway {
                continue;
            }
            let pool = pools.entry(instance.service).or_default();
            pool.members.push(Member::new(&instance.name, &instance.url()));
            if instance.service == ServiceKind::Catalog && instance.role == Role::Primary && pool.primary.is_none() {
                pool.primary = Some(instance.name.clone());
                pool.epoch = 1;
            }
        }
        let mut state = Self::new(Pools::new(pools), readiness, registry)?;
        if let Some(s) = Arc::get_mut(&mut state) {
            s.admin_token = Some(cluster.secrets.admin_token.clone());
        }
        Ok(state)
    }

    pub fn new(pools: Pools, readiness: Readiness, registry: &mut Registry) -> Result<Arc<Self>, AppError> {
        let primary_ready: Gauge = registered(
            registry,
            "shop_gateway_catalog_primary_ready",
            "1 while the catalog primary writes go to is ready",
        );
        let upstream: Family<UpstreamLabels, Counter> =
            registered(registry, "shop_gateway_upstream_requests", "Requests sent to replicas, by outcome");
        let retries: Family<ServiceLabels, Counter> =
            registered(registry, "shop_gateway_retries", "Requests retried on another replica");
        let ready_members: Family<ServiceLabels, Gauge> =
            registered(registry, "shop_gateway_pool_ready_members", "Replicas passing their readiness check");
        // Not ready until the first round of checks says so: a gateway that answered
        // ready before it knew its pools would then turn not ready while they start, which
        // is "was ready, now fails" to `ReplicaDown`.
        readiness.set(Err("checking the pools' readiness".into()));
        let client = hale_client::tls::builder()
            .connect_timeout(Duration::from_millis(300))
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(AppError::internal)?;
        Ok(Arc::new(GatewayState {
            pools,
            client,
            readiness,
            upstream,
            retries,
            ready_members,
            primary_ready,
            admin_token: None,
        }))
    }

    /// Checks every replica's `/readyz` each [`CHECK_INTERVAL`] until `shutdown`.
    pub async fn check_readiness(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let checks = self.pools.all_members().into_iter().map(|(service, member)| {
                let state = self.clone();
                async move { state.check_one(service, &member).await }
            });
            futures::future::join_all(checks).await;
            self.publish_readiness();
        }
    }

    /// Checks one service's replicas now, outside the regular interval.
    pub async fn check_service(&self, service: ServiceKind) {
        let Some(pool) = self.pools.get(service) else { return };
        futures::future::join_all(pool.members.iter().map(|m| self.check_one(service, m))).await;
    }

    async fn check_one(&self, service: ServiceKind, member: &Arc<Member>) {
        let (mut check, mut claim) = self.probe(service, member).await;
        // A timeout counts from the second in a row, and that second is asked at once,
        // not a round later: a frozen replica is out of the pool after two timeouts (the
        // catalog primary's failover starts from there), a slow answer costs nothing.
        if check == Check::TimedOut && member.is_ready() && member.timeouts() + 1 < pool::TIMEOUTS_TO_UNREADY {
            member.record_check(check);
            (check, claim) = self.probe(service, member).await;
        }
        // An old catalog primary back from the dead (its node was cut off during a
        // failover, so the promotion could not fence it) still says it leads under the old
        // epoch: it serves no reads, and it is told the new epoch, which fences it.
        if let Some(epoch) = claim
            && let Some(current) = self.pools.get(service).map(|p| p.epoch)
            && epoch < current
        {
            check = Check::NotReady;
            self.fence(member, current).await;
        }
        let was_ready = member.is_ready();
        member.record_check(check);
        let ready = member.is_ready();
        if ready != was_ready {
            if ready {
                tracing::info!(service = %service, instance = %member.instance, "replica is ready again");
            } else {
                tracing::warn!(service = %service, instance = %member.instance, "replica failed its readiness check");
            }
        }
        if let Some(epoch) = claim {
            member.set_reported_primary_epoch(epoch);
            if self.pools.adopt_primary(service, &member.instance, epoch) {
                tracing::warn!(instance = %member.instance, epoch, "catalog primary changed");
            }
        }
    }

    /// One `/readyz` of `member`, and the primary's epoch a catalog replica claims.
    async fn probe(&self, service: ServiceKind, member: &Member) -> (Check, Option<u64>) {
        let response = self.client.get(format!("{}/readyz", member.url)).timeout(check_timeout(service)).send().await;
        match response {
            // Only a catalog replica says a role worth reading: the primary it claims to be.
            Ok(r) if r.status().is_success() && service == ServiceKind::Catalog => {
                let claim = r.json::<CatalogReadiness>().await.ok().filter(|c| c.role == Role::Primary);
                (Check::Ready, claim.map(|c| c.epoch))
            }
            Ok(r) if r.status().is_success() => (Check::Ready, None),
            Err(e) if e.is_timeout() => (Check::TimedOut, None),
            _ => (Check::NotReady, None),
        }
    }

    async fn fence(&self, member: &Member, epoch: u64) {
        let Some(token) = &self.admin_token else { return };
        let r = self
            .client
            .post(format!("{}/admin/fence", member.url))
            .bearer_auth(token)
            .json(&EpochRequest { epoch: Some(epoch) })
            .timeout(CHECK_TIMEOUT)
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                tracing::warn!(instance = %member.instance, epoch, "fenced an old catalog primary that came back");
            }
            Ok(r) => {
                tracing::warn!(instance = %member.instance, status = r.status().as_u16(), "fencing an old catalog primary failed")
            }
            Err(e) => tracing::warn!(instance = %member.instance, error = %e, "fencing an old catalog primary failed"),
        }
    }

    fn publish_readiness(&self) {
        let mut missing = Vec::new();
        let mut detail = GatewayReadiness::default();
        for service in [ServiceKind::Auth, ServiceKind::Catalog, ServiceKind::Search, ServiceKind::Orders] {
            let ready = self.pools.get(service).map_or(0, |p| p.ready_count());
            self.ready_members.get_or_create(&ServiceLabels { service: service.to_string() }).set(ready as i64);
            detail.ready_replicas.insert(service.to_string(), ready);
            if ready == 0 {
                missing.push(service.to_string());
            }
        }
        // Reads need any catalog replica; writes need the primary. The gateway stays ready
        // without it (reads still work) and says which, so callers that write can wait.
        let primary = self.pools.get(ServiceKind::Catalog).and_then(|p| p.primary());
        self.primary_ready.set(i64::from(primary.as_ref().is_some_and(|m| m.is_ready())));
        detail.catalog_primary = PrimaryReadiness {
            instance: primary.as_ref().map(|m| m.instance.clone()),
            ready: primary.as_ref().is_some_and(|m| m.is_ready()),
        };
        if missing.is_empty() {
            // A struct of strings, numbers and maps with string keys always serializes.
            self.readiness.set(Ok(serde_json::to_value(detail).unwrap_or_default()));
        } else {
            self.readiness.set(Err(format!("no ready replica of {}", missing.join(", "))));
        }
    }

    fn count(&self, service: ServiceKind, instance: &str, outcome: &str) {
        self.upstream
            .get_or_create(&UpstreamLabels {
                service: service.to_string(),
                instance: instance.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// Routes of the gateway. Every route names the service that serves it.
pub fn router(state: Arc<GatewayState>) -> Router {
    let to = |service: ServiceKind| {
        any(move |State(state): State<Arc<GatewayState>>, request: Request| proxy(state, service, request))
    };
    Router::new()
        .route("/oauth/token", to(ServiceKind::Auth))
        .route("/api/products", to(ServiceKind::Catalog))
        .route("/api/products/changes", to(ServiceKind::Catalog))
        .route("/api/products/reservations", to(ServiceKind::Catalog))
        .route("/api/products/{id}", to(ServiceKind::Catalog))
        .route("/api/search", to(ServiceKind::Search))
        .route("/api/orders", to(ServiceKind::Orders))
        .route("/api/orders/{id}", to(ServiceKind::Orders))
        .route("/admin/pool", get(pool_get))
        .route("/admin/pool/{service}", put(pool_put))
        .fallback(|| async {
            AppError::NotFound(
                "no such route; the shop serves /oauth/token, /api/products, /api/search and /api/orders".into(),
            )
        })
        .with_state(state)
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus the ones
/// reqwest and hyper set themselves.
fn is_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// The headers sent upstream: the client's, minus hop-by-hop ones and minus any copy of
/// the headers only the gateway may set (so nobody can fence the catalog by sending a
/// made-up epoch through the front door), plus the gateway's own, signed with the admin
/// token so a replica can tell them from a client's (see [`crate::http::internal`]).
fn upstream_headers(
    state: &GatewayState,
    request: internal::RequestLine<'_>,
    headers: &HeaderMap,
    epoch: Option<u64>,
    client: Option<IpAddr>,
) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        if !is_hop_header(name) && !internal::is_internal(name) {
            out.append(name.clone(), value.clone());
        }
    }
    // The caller's `traceparent` goes too: the client span around the call replaces it
    // with its own (the gateway's server span already has the caller's as parent).
    let Some(secret) = &state.admin_token else {
        // Without the admin token the gateway cannot prove anything; it claims nothing.
        return out;
    };
    if let Some(epoch) = epoch {
        out.insert(EPOCH_HEADER, HeaderValue::from(epoch));
    }
    // The client's address, so auth's per-client limits see clients, not the gateway.
    if let Some(client) = client
        && let Ok(value) = HeaderValue::from_str(&client.to_string())
    {
        out.insert(CLIENT_ADDR_HEADER, value);
    }
    if out.contains_key(EPOCH_HEADER) || out.contains_key(CLIENT_ADDR_HEADER) {
        internal::sign(request, &mut out, secret, unix_now());
    }
    out
}

enum Attempt {
    Done(Response),
    /// Failed in a way another replica might not: connect error, timeout or 5xx.
    Retryable(Response, &'static str),
}

async fn proxy(state: Arc<GatewayState>, service: ServiceKind, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let client = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let body = match axum::body::to_bytes(body, BODY_LIMIT_BYTES).await {
        Ok(b) => b,
        Err(_) => return AppError::PayloadTooLarge { limit_bytes: BODY_LIMIT_BYTES }.into_response(),
    };
    let Some(pool) = state.pools.get(service) else {
        return AppError::Unavailable(format!("no pool for {service}")).into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    // A long-poll passing through (`wait_ms`) waits on purpose: not a slow request.
    if is_long_poll(&path) {
        hale_trace::mark_long_poll();
    }
    let is_write = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if service == ServiceKind::Catalog && is_write {
        return catalog_write(&state, pool, &parts.method, &parts.headers, &path, &body, client).await;
    }
    let idempotent = !is_write;
    let mut tried: Option<String> = None;
    let mut last: Option<Response> = None;
    for try_no in 0..2 {
        let Some(member) = pool.pick(tried.as_deref()) else { break };
        match attempt(&state, service, &member, &parts.method, &parts.headers, &path, &body, None, client).await {
            Attempt::Done(response) => return response,
            Attempt::Retryable(response, why) => {
                // A connect error means the request never left; anything else is retried
                // only when the method is idempotent.
                let may_retry = try_no == 0 && (idempotent || why == "connect_error");
                if !may_retry {
                    return response;
                }
                state.retries.get_or_create(&ServiceLabels { service: service.to_string() }).inc();
                tracing::warn!(service = %service, instance = %member.instance, reason = why, "retrying on another replica");
                tried = Some(member.instance.clone());
                last = Some(response);
            }
        }
    }
    // No (other) replica to try: the last real answer says more than a generic error.
    last.unwrap_or_else(|| {
        AppError::Unavailable(format!("no ready replica of {service}; retry shortly")).into_response()
    })
}

/// A catalog write goes to the primary, with the epoch the gateway knows. A 409 may mean
/// the primary was fenced by a failover the gateway has not seen yet: the catalog pool is
/// checked at once and, if another replica now leads, the write (which the fenced replica
/// did not apply) is sent there once.
#[allow(clippy::too_many_arguments)]
async fn catalog_write(
    state: &Arc<GatewayState>,
    pool: Pool,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
    client: Option<IpAddr>,
) -> Response {
    let Some(primary) = pool.primary().filter(|m| m.is_ready()) else {
        return AppError::Unavailable("the catalog primary is not ready; retry shortly".into()).into_response();
    };
    let service = ServiceKind::Catalog;
    let response = match attempt(state, service, &primary, method, headers, path, body, Some(pool.epoch), client).await
    {
        Attempt::Done(r) | Attempt::Retryable(r, _) => r,
    };
    if response.status() != StatusCode::CONFLICT {
        return response;
    }
    state.check_service(service).await;
    let Some(pool) = state.pools.get(service) else { return response };
    match pool.primary().filter(|m| m.instance != primary.instance && m.is_ready()) {
        Some(leader) => {
            tracing::warn!(from = %primary.instance, to = %leader.instance, "write refused by a replaced primary; sending it to the new one");
            match attempt(state, service, &leader, method, headers, path, body, Some(pool.epoch), client).await {
                Attempt::Done(r) | Attempt::Retryable(r, _) => r,
            }
        }
        None => response,
    }
}

/// A request that waits on purpose (`wait_ms`, the catalog's change feed).
fn is_long_poll(path_and_query: &str) -> bool {
    path_and_query
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("wait_ms=") && kv != "wait_ms=0"))
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    state: &GatewayState,
    service: ServiceKind,
    member: &Arc<Member>,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &Bytes,
    epoch: Option<u64>,
    client: Option<IpAddr>,
) -> Attempt {
    let _in_flight = member.start();
    let upstream = state.client.request(method.clone(), format!("{}{path}", member.url)).timeout(UPSTREAM_TIMEOUT);
    let request = internal::RequestLine { method, path_and_query: path };
    let headers = upstream_headers(state, request, headers, epoch, client);
    let upstream = upstream.headers(headers).body(body.clone());
    let result =
        if is_long_poll(path) { hale_trace::send_long_poll(upstream).await } else { hale_trace::send(upstream).await };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_connect() {
                "connect_error"
            } else if e.is_timeout() {
                "timeout"
            } else {
                "transport_error"
            };
            state.count(service, &member.instance, why);
            member.eject();
            let error = if e.is_timeout() {
                AppError::GatewayTimeout(format!("{} did not answer in time", member.instance))
            } else {
                AppError::BadGateway(format!("{} is unreachable", member.instance))
            };
            return Attempt::Retryable(error.into_response(), why);
        }
    };
    let status = response.status();
    let mut out = Response::builder().status(status.as_u16());
    for (name, value) in response.headers() {
        if !is_hop_header(name) {
            out = out.header(name, value);
        }
    }
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(_) => {
            state.count(service, &member.instance, "transport_error");
            member.eject();
            return Attempt::Retryable(
                AppError::BadGateway(format!("{} broke off its answer", member.instance)).into_response(),
                "transport_error",
            );
        }
    };
    let response = out.body(axum::body::Body::from(bytes)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
    if status.is_server_error() {
        state.count(service, &member.instance, "server_error");
        member.eject();
        Attempt::Retryable(response, "server_error")
    } else {
        state.count(service, &member.instance, "ok");
        Attempt::Done(response)
    }
}

async fn pool_get(_: Admin, State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    axum::Json(state.pools.snapshot())
}

async fn pool_put(
    _: Admin,
    State(state): State<Arc<GatewayState>>,
    Path(service): Path<String>,
    ApiJson(update): ApiJson<PoolUpdate>,
) -> Result<impl IntoResponse, AppError> {
    let service: ServiceKind = service.parse().map_err(AppError::NotFound)?;
    if service == ServiceKind::Gateway {
        return Err(AppError::BadRequest("the gateway has no pool".into()));
    }
    if update.primary.is_some() && service != ServiceKind::Catalog {
        return Err(AppError::BadRequest("only the catalog pool has a primary".into()));
    }
    if update.epoch.is_some_and(|e| e > crate::catalog::MAX_EPOCH) {
        return Err(AppError::BadRequest(format!("epoch is out of range (at most {})", crate::catalog::MAX_EPOCH)));
    }
    state.pools.update(service, update.members, update.primary, update.epoch).map_err(AppError::Unprocessable)?;
    tracing::warn!(service = %service, "pool changed through the admin API");
    state.publish_readiness();
    Ok(axum::Json(state.pools.snapshot()))
}
