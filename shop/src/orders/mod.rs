//! The orders service: `POST /api/orders` reserves stock at the catalog and records a
//! confirmed order, exactly once per `Idempotency-Key`; `GET /api/orders/{id}` shows an
//! order to its owner. The shipping address and card number are encrypted at rest and
//! only the card's last four digits are ever shown.

pub mod crypto;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hale_core::api::ErrorBody;
use hale_serve::metrics::registered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex as AsyncMutex;

use crate::auth::TokenResponse;
use crate::catalog::store::{Reservation, ReservationItem, ReservedLine};
use crate::catalog::{ReserveRequest, check_items};
use crate::http::token::{OrdersRead, OrdersWrite};
use crate::http::{ApiJson, AppError, Scoped};
use crate::limits::OrderLimits;
use crypto::{Vault, mask_card};
use store::{OrdersStore, OrdersStoreError, StoredOrder};

impl From<OrdersStoreError> for AppError {
    fn from(e: OrdersStoreError) -> Self {
        AppError::internal(e)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Where and as whom the orders service reserves stock.
#[derive(Clone)]
pub struct CatalogClient {
    /// Serves `/oauth/token` and `/api/products/reservations` (the gateway).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
}

pub struct OrdersState {
    store: Arc<OrdersStore>,
    vault: Vault,
    catalog: CatalogClient,
    http: reqwest::Client,
    token: AsyncMutex<Option<(String, Instant)>>,
    outcomes: Family<OutcomeLabels, Counter>,
    revenue_cents: Counter,
    limits: OrderLimits,
}

impl OrdersState {
    pub fn open(
        db_path: &Path,
        encryption_key_hex: &str,
        catalog: CatalogClient,
        limits: OrderLimits,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, AppError> {
        let vault = Vault::from_hex(encryption_key_hex).map_err(AppError::internal)?;
        let store = OrdersStore::open(db_path)?;
        let outcomes: Family<OutcomeLabels, Counter> =
            registered(registry, "shop_orders", "Order requests by outcome (placed, replayed, out_of_stock, ...)");
        let revenue_cents: Counter = registered(registry, "shop_orders_revenue_cents", "Total of newly placed orders");
        Ok(Arc::new(OrdersState {
            store: Arc::new(store),
            vault,
            catalog,
            http: crate::http::peer_client(Duration::from_millis(500), Duration::from_secs(5))
                .map_err(AppError::internal)?,
            token: AsyncMutex::new(None),
            outcomes,
            revenue_cents,
            limits,
        }))
    }

    fn count(&self, outcome: &str) {
        self.outcomes.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    /// Runs `f` on the store, off the async threads, in a database span (`operation`:
    /// `SELECT`, `INSERT`… on the orders table).
    async fn db<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&OrdersStore) -> Result<T, OrdersStoreError> + Send + 'static,
    ) -> Result<T, AppError> {
        use tracing::Instrument;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .instrument(hale_trace::db_span("sqlite", operation, "orders"))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::from)
    }

    /// A cached client_credentials token for the catalog, renewed a minute before expiry.
    async fn service_token(&self, force: bool) -> Result<String, AppError> {
        let mut cached = self.token.lock().await;
        if !force && let Some((token, _)) = cached.as_ref().filter(|(_, until)| *until > Instant::now()) {
            return Ok(token.clone());
        }
        let response = hale_trace::send(self.http.post(format!("{}/oauth/token", self.catalog.base_url)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", self.catalog.client_id.as_str()),
            ("client_secret", self.catalog.client_secret.as_str()),
            ("scope", "catalog:reserve"),
        ]))
        .await
        .map_err(unreachable("auth"))?;
        if !response.status().is_success() {
            return Err(AppError::Unavailable(format!(
                "auth refused the orders service's credentials ({}); check clients in cluster.toml",
                response.status()
            )));
        }
        let token: TokenResponse = response.json().await.map_err(|e| {
            tracing::warn!(error = %e, "auth's token answer did not parse");
            AppError::BadGateway("auth answered something that is not a token".into())
        })?;
        let until = Instant::now() + Duration::from_secs(token.expires_in.saturating_sub(60).max(1));
        *cached = Some((token.access_token.clone(), until));
        Ok(token.access_token)
    }

    async fn reserve(&self, reservation_id: &str, items: &[ReservationItem]) -> Result<Reservation, AppError> {
        let mut force = false;
        loop {
            let token = self.service_token(force).await?;
            let response = hale_trace::send(
                self.http
                    .post(format!("{}/api/products/reservations", self.catalog.base_url))
                    .bearer_auth(token)
                    .json(&ReserveRequest { reservation_id: reservation_id.to_string(), items: items.to_vec() }),
            )
            .await
            .map_err(unreachable("catalog"))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !force {
                force = true;
                continue;
            }
            if status.is_success() {
                return response.json().await.map_err(|e| {
                    tracing::warn!(error = %e, "catalog's reservation answer did not parse");
                    AppError::BadGateway("catalog answered something that is not a reservation".into())
                });
            }
            let ErrorBody { error } = response.json().await.unwrap_or_else(|_| ErrorBody::new("", ""));
            return Err(match status {
                StatusCode::CONFLICT if error.code == "out_of_stock" => {
                    AppError::Conflict { code: "out_of_stock", message: error.message }
                }
                StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => AppError::Unprocessable(error.message),
                s => AppError::Unavailable(format!(
                    "catalog answered {s} ({}); retry with the same Idempotency-Key",
                    error.message
                )),
            });
        }
    }
}

/// What a failed call to `service` (auth, the catalog) tells the shopper: to retry, since
/// the Idempotency-Key makes a retry safe; the cause goes to the log.
fn unreachable(service: &'static str) -> impl FnOnce(reqwest::Error) -> AppError {
    move |e| {
        tracing::warn!(error = %e, "{service} is unreachable");
        AppError::Unavailable(format!("{service} is unreachable; retry with the same Idempotency-Key"))
    }
}

/// The body of `POST /api/orders`, as shoppers (and `hale load`) send it. No `Debug`: it
/// holds the card number and the address.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub items: Vec<ReservationItem>,
    pub shipping_address: String,
    pub card_number: String,
}

/// What clients see of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub id: String,
    pub status: String,
    pub total_cents: i64,
    pub items: Vec<ReservedLine>,
    pub shipping_address: String,
    pub card_number: String,
    pub created_at_ms: i64,
}

fn view(state: &OrdersState, order: &StoredOrder) -> Result<OrderView, AppError> {
    let shipping_address = state.vault.open(&order.shipping_address_sealed, &order.id).map_err(AppError::internal)?;
    Ok(OrderView {
        id: order.id.clone(),
        status: order.status.clone(),
        total_cents: order.total_cents,
        items: order.lines.clone(),
        shipping_address,
        card_number: mask_card(&order.card_last4),
        created_at_ms: order.created_at_ms,
    })
}

fn card_digits(card: &str) -> Result<String, AppError> {
    let digits: String = card.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    if !(12..=19).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(AppError::Unprocessable("card_number must be 12 to 19 digits".into()));
    }
    if !luhn(&digits) {
        return Err(AppError::Unprocessable("card_number fails the Luhn check".into()));
    }
    Ok(digits)
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

async fn place_order(
    Scoped(claims, _): Scoped<OrdersWrite>,
    State(state): State<Arc<OrdersState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlaceOrder>,
) -> Result<impl IntoResponse, AppError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            AppError::BadRequest("the Idempotency-Key header is required (any unique string, reused on retries)".into())
        })?
        .to_string();
    if key.len() > 255 {
        return Err(AppError::BadRequest("Idempotency-Key must be at most 255 characters".into()));
    }
    check_items(&req.items, &state.limits)?;
    let address = req.shipping_address.trim().to_string();
    if address.is_empty() || address.chars().count() > 500 {
        return Err(AppError::Unprocessable("shipping_address must be 1 to 500 characters".into()));
    }
    let card = card_digits(&req.card_number)?;
    let items_text = serde_json::to_string(&req.items).map_err(AppError::internal)?;
    let digest = state.vault.digest(&[&items_text, &address, &card]);
    let owner = claims.sub.clone();

    let (o, k) = (owner.clone(), key.clone());
    if let Some(existing) = state.db("SELECT", move |s| s.by_key(&o, &k)).await? {
        return replay(&state, &existing, &digest);
    }
    // The same (owner, key, request) always reserves under the same id, so a retry after a
    // crash between reserving and recording can never reserve twice, and a reused key with
    // another request can never pick up the first request's reservation.
    let reservation_id = state.vault.digest(&["reservation", &owner, &key, &digest]);
    let reservation = match state.reserve(&reservation_id, &req.items).await {
        Ok(r) => r,
        Err(e) => {
            state.count(match &e {
                AppError::Conflict { .. } => "out_of_stock",
                AppError::Unprocessable(_) => "invalid",
                _ => "catalog_unavailable",
            });
            return Err(e);
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    let order = StoredOrder {
        shipping_address_sealed: state.vault.seal(&address, &id),
        card_number_sealed: state.vault.seal(&card, &id),
        card_last4: card[card.len() - 4..].to_string(),
        id,
        owner,
        idempotency_key: key,
        request_digest: digest.clone(),
        status: "confirmed".into(),
        total_cents: reservation.total_cents,
        lines: reservation.lines,
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    };
    let candidate = order.clone();
    let stored = state.db("INSERT", move |s| s.insert_or_get(&candidate)).await?;
    if stored.id != order.id {
        return replay(&state, &stored, &digest);
    }
    state.count("placed");
    state.revenue_cents.inc_by(stored.total_cents.max(0) as u64);
    tracing::info!(order_id = %stored.id, total_cents = stored.total_cents, card = %mask_card(&stored.card_last4), "order placed");
    Ok((StatusCode::CREATED, [("location", format!("/api/orders/{}", stored.id))], axum::Json(view(&state, &stored)?))
        .into_response())
}

fn replay(state: &OrdersState, existing: &StoredOrder, digest: &str) -> Result<axum::response::Response, AppError> {
    if existing.request_digest != digest {
        state.count("key_reused");
        return Err(AppError::Unprocessable(
            "this Idempotency-Key was already used for a different order; use a new key for a new order".into(),
        ));
    }
    state.count("replayed");
    Ok((StatusCode::CREATED, [("idempotent-replayed", "true".to_string())], axum::Json(view(state, existing)?))
        .into_response())
}

async fn get_order(
    Scoped(claims, _): Scoped<OrdersRead>,
    State(state): State<Arc<OrdersState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<impl IntoResponse, AppError> {
    if id.len() > 64 {
        return Err(AppError::BadRequest("order id is too long".into()));
    }
    let order = state.db("SELECT", move |s| s.by_id(&id)).await?;
    // Someone else's order is reported exactly like a missing one.
    match order.filter(|o| o.owner == claims.sub) {
        Some(order) => Ok(axum::Json(view(&state, &order)?)),
        None => Err(AppError::NotFound("no such order".into())),
    }
}

pub fn router(state: Arc<OrdersState>) -> Router {
    Router::new().route("/api/orders", post(place_order)).route("/api/orders/{id}", get(get_order)).with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_body_reads_back_and_refuses_what_it_does_not_know() {
        let body = PlaceOrder {
            items: vec![ReservationItem { product_id: 7, quantity: 1 }],
            shipping_address: "1 Test Street".into(),
            card_number: "4242 4242 4242 4242".into(),
        };
        let text = serde_json::to_string(&body).expect("json");
        let back: PlaceOrder = serde_json::from_str(&text).expect("again");
        assert_eq!(
            (back.items, back.shipping_address, back.card_number),
            (body.items, body.shipping_address, body.card_number)
        );
        assert!(
            serde_json::from_str::<PlaceOrder>(r#"{"items":[],"shipping_address":"a","card_number":"1","cvv":"1"}"#)
                .is_err()
        );
    }

    #[test]
    fn card_validation() {
        assert_eq!(card_digits("4242 4242 4242 4242").expect("valid"), "4242424242424242");
        assert!(card_digits("4242 4242 4242 4241").is_err());
        assert!(card_digits("12ab").is_err());
    }
}
