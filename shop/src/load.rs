//! `hale load`: realistic shop traffic through the gateway. An open-loop generator (user
//! journeys start on a clock whether or not earlier ones have answered, as real users
//! behave, paced so the gateway sees `--rps` requests per second) mixing browsing,
//! searching and buying, with a progress bar and a closing summary per route.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hale_core::secret::Secret;
use hdrhistogram::Histogram;
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::auth::TokenResponse;
use crate::catalog::ProductPage;
use crate::catalog::store::ReservationItem;
use crate::orders::PlaceOrder;
use tokio::sync::Semaphore;

const SEARCH_WORDS: &[&str] = &[
    "lamp", "desk", "coffee", "kettle", "chair", "wool", "speaker", "keyboard", "walnut", "brass", "mug", "audio",
    "office",
];
/// A test card that passes the Luhn check.
const TEST_CARD: &str = "4242 4242 4242 4242";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bad --mix {0:?}: expected browse=N,search=N,buy=N with a positive total")]
    BadMix(String),
    #[error("could not log in as {user:?} at {gateway}: {reason}")]
    Login { user: String, gateway: String, reason: String },
    #[error("{0}")]
    Client(String),
}

/// Weights of the three user journeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub browse: u32,
    pub search: u32,
    pub buy: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { browse: 50, search: 35, buy: 15 }
    }
}

impl Mix {
    /// Requests one journey sends on average: a browse lists products and opens one, a
    /// search and a buy are one request each.
    pub fn requests_per_journey(&self) -> f64 {
        let total = f64::from(self.browse + self.search + self.buy).max(1.0);
        f64::from(2 * self.browse + self.search + self.buy) / total
    }
}

impl std::str::FromStr for Mix {
    type Err = LoadError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix { browse: 0, search: 0, buy: 0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| LoadError::BadMix(s.into()))?;
            let weight: u32 = weight.trim().parse().map_err(|_| LoadError::BadMix(s.into()))?;
            match name.trim() {
                "browse" => mix.browse = weight,
                "search" => mix.search = weight,
                "buy" => mix.buy = weight,
                _ => return Err(LoadError::BadMix(s.into())),
            }
        }
        if mix.browse + mix.search + mix.buy == 0 {
            return Err(LoadError::BadMix(s.into()));
        }
        Ok(mix)
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub gateway: String,
    pub rps: u32,
    /// `None` runs until shutdown.
    pub duration: Option<Duration>,
    pub mix: Mix,
    pub username: String,
    pub password: Secret<String>,
    pub progress: bool,
    /// Requests allowed in flight; beyond it a due request is skipped and counted.
    pub max_in_flight: usize,
}

/// Outcome counts and latency of one route.
pub struct RouteStats {
    pub latency_us: Histogram<u64>,
    /// By status code, or `connect`/`timeout` for transport failures.
    pub outcomes: BTreeMap<String, u64>,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            // 1 µs to 60 s at 3 significant digits; bounds are constants that are valid.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds")),
            outcomes: BTreeMap::new(),
        }
    }

    pub fn requests(&self) -> u64 {
        self.outcomes.values().sum()
    }

    pub fn errors(&self) -> u64 {
        self.outcomes.iter().filter(|(k, _)| !k.starts_with('2')).map(|(_, v)| v).sum()
    }
}

#[derive(Default)]
pub struct Summary {
    pub routes: BTreeMap<&'static str, RouteStats>,
    pub skipped: u64,
    pub elapsed: Duration,
}

impl Summary {
    fn record(&mut self, route: &'static str, outcome: String, latency: Duration) {
        let stats = self.routes.entry(route).or_insert_with(RouteStats::new);
        let _ = stats.latency_us.record((latency.as_micros() as u64).clamp(1, 60_000_000));
        *stats.outcomes.entry(outcome).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.routes.values().map(RouteStats::requests).sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.routes.values().map(RouteStats::errors).sum()
    }

    /// The closing table.
    pub fn render(&self) -> String {
        let mut out =
            format!("{:<24} {:>9} {:>7} {:>9} {:>9}  outcomes\n", "route", "requests", "errors", "p50 ms", "p99 ms");
        for (route, s) in &self.routes {
            let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            out.push_str(&format!(
                "{:<24} {:>9} {:>7} {:>9.1} {:>9.1}  {}\n",
                route,
                s.requests(),
                s.errors(),
                s.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                s.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
                outcomes.join(" ")
            ));
        }
        let secs = self.elapsed.as_secs_f64().max(0.001);
        out.push_str(&format!(
            "{} requests in {:.1}s ({:.1}/s), {} errors, {} skipped (client saturated)\n",
            self.total(),
            secs,
            self.total() as f64 / secs,
            self.total_errors(),
            self.skipped
        ));
        out
    }
}

struct Shared {
    config: LoadConfig,
    client: reqwest::Client,
    token: tokio::sync::RwLock<String>,
    product_ids: Mutex<Vec<i64>>,
    summary: Mutex<Summary>,
}

impl Shared {
    fn record(&self, route: &'static str, outcome: String, latency: Duration) {
        self.summary.lock().unwrap_or_else(|p| p.into_inner()).record(route, outcome, latency);
    }

    async fn login(&self) -> Result<(), LoadError> {
        let start = Instant::now();
        let result = self
            .client
            .post(format!("{}/oauth/token", self.config.gateway))
            .form(&[
                ("grant_type", "password"),
                ("username", &self.config.username),
                ("password", self.config.password.expose()),
            ])
            .send()
            .await;
        let err = |reason: String| LoadError::Login {
            user: self.config.username.clone(),
            gateway: self.config.gateway.clone(),
            reason,
        };
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.record("POST /oauth/token", transport_outcome(&e), start.elapsed());
                return Err(err(e.to_string()));
            }
        };
        self.record("POST /oauth/token", response.status().as_u16().to_string(), start.elapsed());
        if !response.status().is_success() {
            return Err(err(format!("status {}", response.status())));
        }
        let answer: TokenResponse = response.json().await.map_err(|e| err(format!("not a token answer: {e}")))?;
        *self.token.write().await = answer.access_token;
        Ok(())
    }

    /// One timed request, its body read to the end; returns the status and the body.
    async fn call(&self, route: &'static str, request: reqwest::RequestBuilder) -> Option<(u16, Vec<u8>)> {
        let start = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                self.record(route, status.to_string(), start.elapsed());
                Some((status, body))
            }
            Err(e) => {
                self.record(route, transport_outcome(&e), start.elapsed());
                None
            }
        }
    }

    async fn browse(&self) {
        let offset = rand::rng().random_range(0..3) * 10;
        let url = format!("{}/api/products?limit=10&offset={offset}", self.config.gateway);
        if let Some((200, body)) = self.call("GET /api/products", self.client.get(url)).await {
            let page = serde_json::from_slice::<ProductPage>(&body).ok();
            let ids: Vec<i64> = page.into_iter().flat_map(|p| p.products).map(|p| p.id).collect();
            if !ids.is_empty() {
                let mut known = self.product_ids.lock().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    if !known.contains(&id) {
                        known.push(id);
                    }
                }
            }
        }
        if let Some(id) = self.random_product() {
            let url = format!("{}/api/products/{id}", self.config.gateway);
            self.call("GET /api/products/{id}", self.client.get(url)).await;
        }
    }

    async fn search(&self) {
        let word = SEARCH_WORDS.choose(&mut rand::rng()).copied().unwrap_or("lamp");
        let url = format!("{}/api/search?q={word}&limit=10", self.config.gateway);
        self.call("GET /api/search", self.client.get(url)).await;
    }

    async fn buy(&self) {
        let Some(product_id) = self.random_product() else {
            return self.browse().await;
        };
        let body = PlaceOrder {
            items: vec![ReservationItem { product_id, quantity: 1 }],
            shipping_address: format!("{} Load Test Street, Testville", rand::rng().random_range(1..999)),
            card_number: TEST_CARD.into(),
        };
        for attempt in 0..2 {
            let token = self.token.read().await.clone();
            let request = self
                .client
                .post(format!("{}/api/orders", self.config.gateway))
                .bearer_auth(token)
                .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                .json(&body);
            match self.call("POST /api/orders", request).await {
                Some((401, _)) if attempt == 0 => {
                    if self.login().await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn random_product(&self) -> Option<i64> {
        self.product_ids.lock().unwrap_or_else(|p| p.into_inner()).choose(&mut rand::rng()).copied()
    }
}

fn transport_outcome(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// Runs the load until the duration passes or `shutdown` resolves; returns the summary.
pub async fn run(config: LoadConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<Summary, LoadError> {
    if config.rps == 0 {
        return Err(LoadError::Client("--rps must be at least 1".into()));
    }
    let client = hale_client::tls::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| LoadError::Client(e.to_string()))?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        client,
        token: tokio::sync::RwLock::new(String::new()),
        product_ids: Mutex::new(Vec::new()),
        summary: Mutex::new(Summary::default()),
    });
    shared.login().await?;
    shared.browse().await;

    let started = Instant::now();
    let bar = progress_bar(&config);
    let limit = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    // `--rps` is requests at the gateway, as the name says; a journey is one or two of
    // them, so journeys start at the rate that makes the requests come out right.
    let journeys_per_sec = f64::from(config.rps) / config.mix.requests_per_journey();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / journeys_per_sec));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut report = tokio::time::interval(Duration::from_millis(250));
    let mut last_log = Instant::now();
    let total_weight = config.mix.browse + config.mix.search + config.mix.buy;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = ticker.tick() => {
                if config.duration.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    shared.summary.lock().unwrap_or_else(|p| p.into_inner()).skipped += 1;
                    continue;
                };
                let pick = rand::rng().random_range(0..total_weight);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if pick < shared.config.mix.browse {
                        shared.browse().await;
                    } else if pick < shared.config.mix.browse + shared.config.mix.search {
                        shared.search().await;
                    } else {
                        shared.buy().await;
                    }
                });
            }
            _ = report.tick() => {
                let line = status_line(&shared, started);
                if let Some(bar) = &bar {
                    bar.set_position(started.elapsed().as_secs());
                    bar.set_message(line);
                } else if last_log.elapsed() >= Duration::from_secs(10) {
                    println!("{} {line}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()));
                    last_log = Instant::now();
                }
            }
        }
    }
    // Let requests in flight finish (bounded by the client timeout).
    let _ = tokio::time::timeout(Duration::from_secs(11), limit.acquire_many(config.max_in_flight.max(1) as u32)).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut summary = std::mem::take(&mut *shared.summary.lock().unwrap_or_else(|p| p.into_inner()));
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn status_line(shared: &Shared, started: Instant) -> String {
    let summary = shared.summary.lock().unwrap_or_else(|p| p.into_inner());
    let secs = started.elapsed().as_secs_f64().max(0.001);
    format!("{} requests ({:.0}/s), {} errors", summary.total(), summary.total() as f64 / secs, summary.total_errors())
}

fn progress_bar(config: &LoadConfig) -> Option<indicatif::ProgressBar> {
    if !config.progress {
        return None;
    }
    let bar = match config.duration {
        Some(d) => {
            let bar = indicatif::ProgressBar::new(d.as_secs().max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        }
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_rejects_nonsense() {
        assert_eq!("browse=1,search=2,buy=3".parse::<Mix>().expect("mix"), Mix { browse: 1, search: 2, buy: 3 });
        assert_eq!("buy=5".parse::<Mix>().expect("mix"), Mix { browse: 0, search: 0, buy: 5 });
        assert!("browse=0".parse::<Mix>().is_err());
        assert!("fly=3".parse::<Mix>().is_err());
        assert!("browse=x".parse::<Mix>().is_err());
    }

    /// Issue #12, finding 18: `--rps` is requests per second at the gateway, not user
    /// journeys (a browse is two requests). A fake gateway counts what arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rps_counts_requests_at_the_gateway() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        // The gateway's answers as the shop's types: a token, and a page of two products
        // for every other route (what the load reads of a search or an order is its status).
        let token = TokenResponse {
            access_token: "t".into(),
            token_type: "Bearer".into(),
            expires_in: 60,
            scope: "orders:write".into(),
        };
        let product = |id| crate::catalog::store::Product {
            id,
            name: format!("p{id}"),
            description: String::new(),
            price_cents: 1,
            stock: 1,
            tags: Vec::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let page = ProductPage { products: vec![product(1), product(2)], total: 2, limit: 10, offset: 0 };
        let (token, page) = (serde_json::to_value(token).expect("json"), serde_json::to_value(page).expect("json"));
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let counted = counted.clone();
            let (token, page) = (token.clone(), page.clone());
            async move {
                if uri.path() == "/oauth/token" {
                    return axum::Json(token);
                }
                counted.fetch_add(1, Ordering::Relaxed);
                axum::Json(page)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = LoadConfig {
            gateway: format!("http://{addr}"),
            rps: 40,
            duration: Some(Duration::from_secs(3)),
            mix: Mix::default(),
            username: "u".into(),
            password: Secret::new("p".into()),
            progress: false,
            max_in_flight: 64,
        };
        let summary = run(config, std::future::pending()).await.expect("load");
        // The warm-up browse (two requests) comes before the clock starts.
        let per_sec = (count.load(Ordering::Relaxed) - 2) as f64 / summary.elapsed.as_secs_f64();
        assert!((32.0..=48.0).contains(&per_sec), "{per_sec:.1} requests/s for --rps 40");
    }

    #[test]
    fn summary_counts_errors_and_renders() {
        let mut s = Summary::default();
        s.record("GET /api/search", "200".into(), Duration::from_millis(3));
        s.record("GET /api/search", "503".into(), Duration::from_millis(30));
        s.record("GET /api/search", "connect".into(), Duration::from_millis(1));
        s.elapsed = Duration::from_secs(1);
        assert_eq!((s.total(), s.total_errors()), (3, 2));
        let table = s.render();
        assert!(table.contains("GET /api/search"), "{table}");
        assert!(table.contains("503×1"), "{table}");
    }
}
