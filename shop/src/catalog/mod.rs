//! The catalog service: products in SQLite, stock reservations that never oversell, and a
//! primary/standby pair kept in step by a change log.
//!
//! Replication: the standby long-polls the primary's `/admin/replication/changes` and
//! applies each change under the primary's sequence number. A primary acknowledges a write
//! only once the standby of its sync set has it (up to [`SYNC_TIMEOUT`], then 503); only
//! the failover authority releases a standby from the set (`POST /admin/release`), and it
//! promotes no standby out of the set, so a failover loses no acknowledged write, even
//! across a partition (ARCHITECTURE.md, "Sync sets").
//!
//! Fencing: every replica has an epoch. `POST /admin/promote` makes a standby primary under
//! a higher epoch and tells the old primary; a replica that sees a higher epoch (from that
//! call, `POST /admin/fence`, or the gateway's `X-Hale-Epoch` header on a write) stops
//! accepting writes as primary. Only parties holding the admin credential move epochs: the
//! header counts only with the gateway's signature (a client's API token is not enough,
//! 403 `epoch_not_authorized`), and every epoch moves at most [`MAX_EPOCH_STEP`] at a time
//! (409 `epoch_jump`), except a rejoin whose new primary confirms the epoch. `POST /admin/rejoin` brings it back as a standby of the
//! new primary: the change log both share is kept, anything only it had is set aside in
//! `diverged_changes`, and it catches up (not ready until it has).

pub mod lease;
mod replication;
pub mod store;

use crate::http::internal::RequestLine;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hale_core::Role;
use hale_core::api::{EpochRequest, Fenced, Promoted, RejoinRequest};
use hale_trace::db_span;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use replication::{CatalogState, EPOCH_HEADER, MAX_EPOCH, MAX_EPOCH_STEP, SYNC_TIMEOUT};
use store::{Change, NewProduct, Product, ReservationItem, StoreError};

use crate::http::error::client_message;
use crate::http::token::{CatalogReserve, CatalogWrite};
use crate::http::{Admin, ApiJson, ApiQuery, AppError, Scoped};
use crate::limits::OrderLimits;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchProduct(id) => AppError::NotFound(format!("product {id} does not exist")),
            e @ StoreError::OutOfStock { .. } => AppError::Conflict { code: "out_of_stock", message: e.to_string() },
            other => AppError::internal(other),
        }
    }
}

/// The catalog's routes with the default [`OrderLimits`]; `state` also drives the
/// follower task (see [`CatalogState::open`]).
pub fn router(state: Arc<CatalogState>) -> Router {
    router_with_limits(state, OrderLimits::default())
}

/// The catalog's routes; a reservation takes at most what `limits` lets one order take.
pub fn router_with_limits(state: Arc<CatalogState>, limits: OrderLimits) -> Router {
    Router::new()
        .route("/api/products", get(list_products).post(create_product))
        .route("/api/products/changes", get(changes))
        .route("/api/products/reservations", post(reserve))
        .route("/api/products/{id}", get(get_product))
        .route("/admin/promote", post(promote))
        .route("/admin/fence", post(fence))
        .route("/admin/release", post(release))
        .route("/admin/rejoin", post(rejoin))
        .route("/admin/replication", get(replication_status))
        .route("/admin/replication/changes", get(replication_changes))
        .layer(axum::Extension(limits))
        .with_state(state)
}

fn validate(p: &NewProduct) -> Result<(), AppError> {
    let bad = |m: &str| Err(AppError::Unprocessable(m.to_string()));
    if p.name.trim().is_empty() || p.name.chars().count() > 200 {
        return bad("name must be 1 to 200 characters");
    }
    if p.description.chars().count() > 5000 {
        return bad("description must be at most 5000 characters");
    }
    if !(0..=10_000_000_000).contains(&p.price_cents) {
        return bad("price_cents must be between 0 and 10000000000");
    }
    if !(0..=1_000_000_000).contains(&p.stock) {
        return bad("stock must be between 0 and 1000000000");
    }
    if p.tags.len() > 20 || p.tags.iter().any(|t| t.is_empty() || t.chars().count() > 50) {
        return bad("at most 20 tags, each 1 to 50 characters");
    }
    Ok(())
}

/// The body of `POST /api/products`, as the shop's clients (and `hale up`'s seeding) send
/// it: what is left out is empty (no description, no stock, no tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub price_cents: i64,
    #[serde(default)]
    pub stock: i64,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `GET /api/products`: a page of products in id order, and how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPage {
    pub products: Vec<Product>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
}

async fn create_product(
    _: Scoped<CatalogWrite>,
    State(state): State<Arc<CatalogState>>,
    method: axum::http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateProduct>,
) -> Result<impl IntoResponse, AppError> {
    let new = NewProduct {
        name: body.name,
        description: body.description,
        price_cents: body.price_cents,
        stock: body.stock,
        tags: body.tags,
    };
    validate(&new)?;
    let request = RequestLine::of(&method, &uri);
    let (product, seq) = state
        .write(request, &headers, move |store, epoch| store.create_product(epoch, &new))
        .instrument(db_span("sqlite", "INSERT", "products"))
        .await?;
    state.wait_for_standby(seq).await?;
    tracing::info!(product_id = product.id, seq, "product published");
    Ok((StatusCode::CREATED, [("location", format!("/api/products/{}", product.id))], axum::Json(product)))
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<u32>,
    offset: Option<u32>,
}

async fn list_products(
    State(state): State<Arc<CatalogState>>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<impl IntoResponse, AppError> {
    let limit = page.limit.unwrap_or(20).clamp(1, 100);
    let offset = page.offset.unwrap_or(0);
    let (products, total) =
        state.read(move |s| s.list(limit, offset)).instrument(db_span("sqlite", "SELECT", "products")).await?;
    Ok(axum::Json(ProductPage { products, total, limit, offset }))
}

async fn get_product(
    State(state): State<Arc<CatalogState>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let id: i64 = id.parse().map_err(|_| AppError::BadRequest(format!("product id {id:?} is not a number")))?;
    match state.read(move |s| s.product(id)).instrument(db_span("sqlite", "SELECT", "products")).await? {
        Some(p) => Ok(axum::Json(p)),
        None => Err(AppError::NotFound(format!("product {id} does not exist"))),
    }
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
    /// Long-poll: wait up to this long for a change when there is none yet.
    wait_ms: Option<u64>,
    /// The standby's echo of the last page's lease stamp (`/admin/replication/changes`).
    lease_boot: Option<u64>,
    lease_at_ms: Option<u64>,
}

/// The change log, for anyone who reads the catalog (search follows it).
async fn changes(
    State(state): State<Arc<CatalogState>>,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> Result<impl IntoResponse, AppError> {
    changes_page(&state, q).await
}

/// The change log for the standby: the same page, and `after` counts as the standby's
/// confirmation that it has applied everything up to there (semi-synchronous
/// replication), which is why it needs the admin token.
async fn replication_changes(
    _: Admin,
    State(state): State<Arc<CatalogState>>,
    ApiQuery(q): ApiQuery<ChangesQuery>,
) -> Result<impl IntoResponse, AppError> {
    let echo = q.lease_boot.zip(q.lease_at_ms).map(|(boot, at_ms)| lease::LeaseStamp { boot, at_ms });
    let (in_sync, stamp) = state.standby_polled(q.after, echo).await?;
    let mut page = changes_page(&state, q).await?;
    page.in_sync = Some(in_sync);
    page.sync_stamp = Some(stamp);
    page.traces = state.traces_of(&page.changes);
    // Stamped last, once the page is ready to go: the standby counts from when it
    // arrives, which is later still.
    page.lease = state.lease_stamp();
    Ok(page)
}

/// A page of the change log (`/api/products/changes`, `/admin/replication/changes`), as
/// the standby and search read it. Fields in the order the catalog has always written them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesPage {
    /// Oldest first, each after the last.
    pub changes: Vec<Change>,
    /// The epoch of the replica that answered: a standby learns of a failover from it.
    pub epoch: u64,
    /// The last change the answering replica holds, in this page or not.
    pub last_seq: u64,
    pub role: Role,
    /// To the standby (`/admin/replication/changes` only): whether it is in this primary's
    /// sync set, and which set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_stamp: Option<hale_core::api::SyncStamp>,
    /// To the standby: the trace each change of the page was written in, so applying it
    /// (what confirms the write) is a span of that trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<ChangeTrace>,
    /// To the standby, from a primary: the stamp its next poll echoes to renew the
    /// primary's write lease ([`lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<lease::LeaseStamp>,
}

/// A change's sequence and the W3C `traceparent` of the write that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeTrace {
    pub seq: u64,
    pub traceparent: String,
}

/// `GET /admin/replication`: a wire type of the failover protocol, so it lives in core.
pub use hale_core::api::ReplicationStatus;

async fn changes_page(state: &CatalogState, q: ChangesQuery) -> Result<axum::Json<ChangesPage>, AppError> {
    if q.after > i64::MAX as u64 {
        return Err(AppError::BadRequest("after is out of range".into()));
    }
    let limit = q.limit.unwrap_or(500).clamp(1, 1000);
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(5000));
    if !wait.is_zero() {
        // Waiting is the point: not a slow request.
        hale_trace::mark_long_poll();
    }
    state.wait_for_seq_after(q.after, wait).await;
    let after = q.after;
    let changes =
        state.read(move |s| s.changes_after(after, limit)).instrument(db_span("sqlite", "SELECT", "changes")).await?;
    let meta = state.meta();
    Ok(axum::Json(ChangesPage {
        changes,
        epoch: meta.epoch,
        last_seq: state.last_seq(),
        role: meta.role,
        in_sync: None,
        sync_stamp: None,
        traces: Vec::new(),
        lease: None,
    }))
}

/// The body of `POST /api/products/reservations`, as the orders service sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    /// The same id always gets the same reservation (a retry never reserves twice).
    pub reservation_id: String,
    pub items: Vec<ReservationItem>,
}

/// 422 unless an order's lines are 1 to 50, each of at least one unit, and 400 if they
/// take more than `limits` let one order take: what the orders service checks of a
/// shopper's order and the catalog of any reservation.
pub fn check_items(items: &[ReservationItem], limits: &OrderLimits) -> Result<(), AppError> {
    if items.is_empty() || items.len() > 50 {
        return Err(AppError::Unprocessable("items must hold 1 to 50 entries".into()));
    }
    if items.iter().any(|i| i.quantity < 1) {
        return Err(AppError::Unprocessable("each quantity must be at least 1".into()));
    }
    limits.check(items.iter().map(|i| (i.product_id, i.quantity)))
}

async fn reserve(
    _: Scoped<CatalogReserve>,
    State(state): State<Arc<CatalogState>>,
    axum::Extension(limits): axum::Extension<OrderLimits>,
    method: axum::http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReserveRequest>,
) -> Result<impl IntoResponse, AppError> {
    if req.reservation_id.is_empty() || req.reservation_id.len() > 128 {
        return Err(AppError::Unprocessable("reservation_id must be 1 to 128 characters".into()));
    }
    check_items(&req.items, &limits)?;
    let items = req.items;
    let id = req.reservation_id;
    let result = state
        .write(RequestLine::of(&method, &uri), &headers, move |store, epoch| store.reserve(epoch, &id, &items))
        .instrument(db_span("sqlite", "INSERT", "reservations"))
        .await;
    state.count_reservation(&result);
    let (reservation, seq) = result?;
    // A replay appended nothing, but the first attempt may have been refused before the
    // standby had it: it is acknowledged once the standby has everything up to now.
    state.wait_for_standby(seq.unwrap_or_else(|| state.last_seq())).await?;
    Ok((StatusCode::CREATED, axum::Json(reservation)))
}

async fn promote(
    _: Admin,
    State(state): State<Arc<CatalogState>>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    // The body is optional: `{"epoch": N}` asks for at least epoch N.
    let requested = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<EpochRequest>(&body)
            .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {}", client_message(&e.to_string()))))?
            .epoch
    };
    let meta = state.promote(requested).await?;
    Ok(axum::Json(Promoted { epoch: meta.epoch, last_seq: state.last_seq(), role: meta.role }))
}

async fn fence(
    _: Admin,
    State(state): State<Arc<CatalogState>>,
    ApiJson(body): ApiJson<EpochRequest>,
) -> Result<impl IntoResponse, AppError> {
    let epoch = body.epoch.ok_or_else(|| AppError::BadRequest("epoch is required".into()))?;
    let meta = state.fence(epoch).await?;
    Ok(axum::Json(Fenced { epoch: meta.epoch, role: meta.role }))
}

/// The failover authority takes the standby out of the primary's sync set; see
/// [`CatalogState::release`].
async fn release(
    _: Admin,
    State(state): State<Arc<CatalogState>>,
    ApiJson(body): ApiJson<hale_core::api::ReleaseRequest>,
) -> Result<impl IntoResponse, AppError> {
    Ok(axum::Json(state.release(body.stamp).await?))
}

/// Makes a fenced old primary (or a standby) a standby of the given primary; see
/// [`CatalogState::rejoin`].
async fn rejoin(
    _: Admin,
    State(state): State<Arc<CatalogState>>,
    ApiJson(body): ApiJson<RejoinRequest>,
) -> Result<impl IntoResponse, AppError> {
    if body.epoch > replication::MAX_EPOCH {
        return Err(AppError::BadRequest(format!("epoch is out of range (at most {})", replication::MAX_EPOCH)));
    }
    Ok(axum::Json(state.rejoin(&body.primary, body.epoch).await?))
}

async fn replication_status(State(state): State<Arc<CatalogState>>) -> impl IntoResponse {
    axum::Json(state.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `GET /api/products` served before it had a type parses into it, and is
    /// written back the same.
    #[test]
    fn a_served_page_reads_as_a_product_page() {
        let served = concat!(
            r#"{"products":[{"id":7,"name":"Brass desk lamp","description":"Adjustable arm","price_cents":8900,"#,
            r#""stock":3,"tags":["lighting"],"created_at_ms":1,"updated_at_ms":2}],"total":12,"limit":1,"offset":0}"#
        );
        let page: ProductPage = serde_json::from_str(served).expect("page");
        assert_eq!((page.products[0].id, page.total), (7, 12));
        assert_eq!(serde_json::to_string(&page).expect("json"), served);
    }

    /// What the change log served when it was built as a JSON map (keys in alphabetical
    /// order, at every level) reads as a page, the same again.
    #[test]
    fn a_served_change_log_page_reads_as_a_changes_page() {
        let served = concat!(
            r#"{"changes":[{"at_ms":5,"epoch":2,"kind":"product","product":{"created_at_ms":1,"description":"","#,
            r#""id":7,"name":"Lamp","price_cents":8900,"stock":3,"tags":[],"updated_at_ms":2},"seq":41}],"#,
            r#""epoch":2,"last_seq":41,"role":"primary"}"#
        );
        let page: ChangesPage = serde_json::from_str(served).expect("page");
        assert_eq!((page.changes[0].seq, page.epoch, page.last_seq, page.role), (41, 2, 41, Role::Primary));
        let again: serde_json::Value = serde_json::to_value(&page).expect("json");
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(served).expect("value"));
        let text = serde_json::to_string(&page).expect("json");
        assert!(text.starts_with(r#"{"changes":[{"#) && text.ends_with(r#""epoch":2,"last_seq":41,"role":"primary"}"#));
    }

    #[test]
    fn the_replication_status_is_written_as_it_always_was() {
        let served = concat!(
            r#"{"caught_up":false,"epoch":3,"following":"http://127.0.0.1:8082","instance":"catalog-1","#,
            r#""lag_changes":4,"last_seq":40,"role":"standby"}"#
        );
        let status: ReplicationStatus = serde_json::from_str(served).expect("status");
        assert_eq!((status.following.as_deref(), status.lag_changes), (Some("http://127.0.0.1:8082"), 4));
        assert_eq!(serde_json::to_string(&status).expect("json"), served);
    }

    #[test]
    fn a_reservation_request_round_trips_and_refuses_what_it_does_not_know() {
        let request = ReserveRequest {
            reservation_id: "r-1".into(),
            items: vec![ReservationItem { product_id: 7, quantity: 2 }],
        };
        let text = serde_json::to_string(&request).expect("json");
        assert_eq!(text, r#"{"reservation_id":"r-1","items":[{"product_id":7,"quantity":2}]}"#);
        assert_eq!(serde_json::from_str::<ReserveRequest>(&text).expect("again"), request);
        assert!(serde_json::from_str::<ReserveRequest>(r#"{"reservation_id":"r","items":[],"x":1}"#).is_err());
    }

    #[test]
    fn order_lines_are_checked_once_for_orders_and_reservations() {
        let limits = OrderLimits::default();
        let item = |quantity| ReservationItem { product_id: 1, quantity };
        assert!(check_items(&[item(1)], &limits).is_ok());
        assert!(matches!(check_items(&[], &limits), Err(AppError::Unprocessable(_))));
        assert!(matches!(check_items(&vec![item(1); 51], &limits), Err(AppError::Unprocessable(_))));
        assert!(matches!(check_items(&[item(0)], &limits), Err(AppError::Unprocessable(_))));
        let over = i64::from(limits.max_units_per_item) + 1;
        assert!(matches!(check_items(&[item(over)], &limits), Err(AppError::BadRequest(_))));
    }

    #[test]
    fn a_new_product_leaves_out_what_it_does_not_have() {
        let new: CreateProduct = serde_json::from_str(r#"{"name":"x","price_cents":1}"#).expect("minimal");
        assert_eq!((new.stock, new.description.as_str(), new.tags.len()), (0, "", 0));
        let back: CreateProduct = serde_json::from_str(&serde_json::to_string(&new).expect("json")).expect("again");
        assert_eq!(back, new);
        assert!(serde_json::from_str::<CreateProduct>(r#"{"name":"x","price_cents":1,"colour":"red"}"#).is_err());
    }
}
