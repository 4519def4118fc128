//! The search service: BM25F full-text search over the catalog, kept fresh by following
//! the catalog's change log through the gateway (a published product is findable as soon
//! as the long-poll returns, typically within milliseconds).

pub mod index;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use hale_serve::metrics::registered;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::catalog::ChangesPage;
use crate::catalog::store::{Change, ChangeBody, Product};
use crate::http::{ApiQuery, AppError, Readiness};
use index::{Document, Hit, Index};

pub struct SearchState {
    index: RwLock<Index>,
    seq: std::sync::atomic::AtomicU64,
    catalog_url: String,
    readiness: Readiness,
    documents: Gauge,
    applied_seq: Gauge,
    client: reqwest::Client,
}

impl SearchState {
    /// `catalog_url` serves `/api/products/changes` (the gateway, or a catalog replica).
    pub fn new(catalog_url: &str, readiness: Readiness, registry: &mut Registry) -> Result<Arc<Self>, AppError> {
        let documents = registered(registry, "shop_search_index_documents", "Products in the search index");
        let applied_seq =
            registered(registry, "shop_search_index_change_seq", "Last catalog change applied to the index");
        readiness.set(Err("building the index from the catalog".into()));
        Ok(Arc::new(SearchState {
            index: RwLock::new(Index::default()),
            seq: std::sync::atomic::AtomicU64::new(0),
            catalog_url: catalog_url.trim_end_matches('/').to_string(),
            readiness,
            documents,
            applied_seq,
            client: crate::http::peer_client(Duration::from_millis(500), Duration::from_secs(6))
                .map_err(AppError::internal)?,
        }))
    }

    fn apply(&self, changes: &[Change]) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let upsert = |index: &mut Index, p: &Product| {
            index.upsert(&Document {
                id: p.id,
                name: p.name.clone(),
                description: p.description.clone(),
                tags: p.tags.clone(),
                price_cents: p.price_cents,
            })
        };
        for change in changes {
            match &change.body {
                ChangeBody::Product { product } => upsert(&mut index, product),
                // Stock changes do not change what a product is found by.
                ChangeBody::Reservation { .. } => {}
            }
            self.seq.store(change.seq, std::sync::atomic::Ordering::Relaxed);
        }
        self.documents.set(index.len() as i64);
        self.applied_seq.set(self.seq.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }

    /// Follows the catalog's change log until `shutdown` fires.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut failing_since: Option<Instant> = None;
        loop {
            let after = self.seq.load(std::sync::atomic::Ordering::Relaxed);
            let url = format!("{}/api/products/changes?after={after}&limit=1000&wait_ms=2000", self.catalog_url);
            let result = tokio::select! {
                r = self.poll(&url) => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(caught_up) => {
                    if failing_since.take().is_some() {
                        tracing::info!("catalog change feed resumed");
                    }
                    backoff = Duration::from_millis(100);
                    if caught_up {
                        let docs = self.index.read().unwrap_or_else(|p| p.into_inner()).len();
                        self.readiness.set(Ok(
                            json!({"documents": docs, "seq": self.seq.load(std::sync::atomic::Ordering::Relaxed)}),
                        ));
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::warn!(error = %e, "catalog change feed failed; retrying");
                        failing_since = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One poll, a trace of its own (the follower is no request's child); `Ok(true)` when
    /// the index has caught up with the catalog.
    async fn poll(&self, url: &str) -> Result<bool, String> {
        use tracing::Instrument;
        let span =
            tracing::info_span!(parent: None, "follow", otel.name = "follow catalog changes", otel.kind = "client");
        // It long-polls (`wait_ms`): waiting is not slowness.
        span.in_scope(hale_trace::mark_long_poll);
        self.poll_once(url).instrument(span).await
    }

    async fn poll_once(&self, url: &str) -> Result<bool, String> {
        let response =
            self.client.get(url).headers(crate::http::trace_headers()).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("catalog answered {}", response.status()));
        }
        let page: ChangesPage = response.json().await.map_err(|e| e.to_string())?;
        let after = self.seq.load(std::sync::atomic::Ordering::Relaxed);
        if page.changes.first().is_some_and(|c| c.seq != after + 1) {
            return Err(format!("change feed skipped from {after} to {}", page.changes[0].seq));
        }
        self.apply(&page.changes);
        Ok(self.seq.load(std::sync::atomic::Ordering::Relaxed) >= page.last_seq)
    }
}

/// `GET /api/search`: the best hits, and how many products matched in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub hits: Vec<Hit>,
    pub total: usize,
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    limit: Option<usize>,
}

async fn search(
    State(state): State<Arc<SearchState>>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<impl IntoResponse, AppError> {
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(AppError::BadRequest("the q parameter is required: /api/search?q=lamp".into()));
    }
    if q.len() > 512 {
        return Err(AppError::BadRequest("q must be at most 512 bytes".into()));
    }
    let limit = query.limit.unwrap_or(10).clamp(1, 100);
    let (hits, total) = state.index.read().unwrap_or_else(|p| p.into_inner()).search(&q, limit);
    Ok(axum::Json(SearchResults { hits, total }))
}

pub fn router(state: Arc<SearchState>) -> Router {
    Router::new().route("/api/search", get(search)).with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, id: i64, name: &str) -> Change {
        Change {
            seq,
            epoch: 1,
            at_ms: 0,
            body: ChangeBody::Product {
                product: Product {
                    id,
                    name: name.into(),
                    description: String::new(),
                    price_cents: 5,
                    stock: 1,
                    tags: vec![],
                    created_at_ms: 0,
                    updated_at_ms: 0,
                },
            },
        }
    }

    /// What search served when it built its answer as a JSON map reads as its type, and
    /// is written back the same.
    #[test]
    fn served_results_read_as_search_results() {
        let served = r#"{"hits":[{"id":7,"name":"Oak desk","price_cents":5,"score":1.5}],"total":1}"#;
        let results: SearchResults = serde_json::from_str(served).expect("results");
        assert_eq!((results.hits[0].id, results.total), (7, 1));
        assert_eq!(serde_json::to_string(&results).expect("json"), served);
    }

    #[test]
    fn applying_changes_updates_index_and_seq() {
        let mut registry = Registry::default();
        let state = SearchState::new("http://127.0.0.1:1", Readiness::ready(json!({})), &mut registry).expect("state");
        state.apply(&[change(1, 7, "Walnut desk"), change(2, 7, "Oak desk")]);
        let index = state.index.read().expect("lock");
        assert_eq!(index.search("oak", 5).1, 1);
        assert_eq!(index.search("walnut", 5).1, 0);
        assert_eq!(state.seq.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
