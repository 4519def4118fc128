//! Router tests: every shop service called through `tower::ServiceExt::oneshot`, no socket,
//! except where a service must talk to another (then the other listens on an ephemeral
//! loopback port).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hale_core::{ClusterConfig, DEFAULT_CLUSTER_TOML, Role, ServiceKind};
use hale_shop::http::TokenKeys;
use hale_shop::http::internal;
use hale_shop::http::token::unix_now;
use hale_shop::{ShopArgs, app};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

/// The embedded config with the secrets `hale up` would settle: generated once for the
/// whole test binary (the file has none), and the orders client's hash to match.
fn cluster() -> ClusterConfig {
    static CLUSTER: std::sync::OnceLock<ClusterConfig> = std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let mut c = ClusterConfig::parse(DEFAULT_CLUSTER_TOML).expect("embedded config");
            let hash = hale_shop::auth::hash_secret(&c.secrets.orders_client_secret).expect("hash");
            for client in c.clients.iter_mut().filter(|c| c.client_id == "orders") {
                client.secret_hash = Some(hash.clone());
            }
            c
        })
        .clone()
}

/// A catalog standby in `dir` following the primary at `primary`.
fn follower_args(dir: &std::path::Path, primary: impl Into<String>) -> ShopArgs {
    ShopArgs { role: Role::Standby, follow: Some(primary.into()), ..args(ServiceKind::Catalog, dir) }
}

/// A catalog primary served under `dir/p` (its router and URL) and the args of a standby
/// under `dir/s` that follows it.
async fn serving_primary(dir: &std::path::Path, stop: &watch::Receiver<bool>) -> (Router, String, ShopArgs) {
    let (primary_app, _) = app(&args(ServiceKind::Catalog, &dir.join("p")), stop).expect("app");
    let primary_url = serve(stop, primary_app.clone()).await;
    let standby_args = follower_args(&dir.join("s"), primary_url.clone());
    (primary_app, primary_url, standby_args)
}

fn args(service: ServiceKind, dir: &std::path::Path) -> ShopArgs {
    ShopArgs {
        service,
        instance: format!("{service}-1"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        gateway_url: "http://127.0.0.1:9".into(),
        role: Role::Primary,
        follow: None,
        cluster: cluster(),
    }
}

fn token(scope: &str) -> String {
    TokenKeys::new(&cluster().secrets.jwt_secret).issue("tester", scope, 300).expect("token")
}

fn admin_token() -> String {
    cluster().secrets.admin_token
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let response = app.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 10 << 20).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, json }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn post_json(uri: &str, bearer: Option<&str>, body: &Value) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_string())).expect("request")
}

fn post_form(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn no_stop() -> watch::Receiver<bool> {
    watch::channel(false).1
}

fn build(args: &ShopArgs) -> Router {
    app(args, &no_stop()).expect("app").0
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn auth_password_grant_issues_a_scoped_bearer_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Auth, dir.path()));
    let r = send(&app, post_form("/oauth/token", SHOPPER_LOGIN)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["scope"], "orders:write orders:read");
    assert!(r.json["expires_in"].as_u64().expect("expires_in") > 0);
    assert_eq!(r.headers["cache-control"], "no-store");
    let claims = TokenKeys::new(&cluster().secrets.jwt_secret)
        .verify(r.json["access_token"].as_str().expect("token"))
        .expect("valid");
    assert_eq!(claims.sub, "shopper");
}

#[tokio::test]
async fn auth_errors_follow_rfc_6749() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Auth, dir.path()));
    let cases = [
        ("grant_type=password&username=shopper&password=wrong", StatusCode::BAD_REQUEST, "invalid_grant"),
        ("grant_type=password&username=nobody&password=x", StatusCode::BAD_REQUEST, "invalid_grant"),
        ("grant_type=authorization_code&code=x", StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        ("username=shopper", StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "grant_type=client_credentials&client_id=orders&client_secret=nope",
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        ("grant_type=client_credentials", StatusCode::UNAUTHORIZED, "invalid_client"),
        (
            "grant_type=password&username=shopper&password=hale-shopper&scope=catalog:write",
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
    ];
    for (body, status, error) in cases {
        let r = send(&app, post_form("/oauth/token", body)).await;
        assert_eq!((r.status, r.json["error"].as_str()), (status, Some(error)), "{body}: {}", r.json);
        assert!(r.json["error_description"].is_string());
    }
}

#[tokio::test]
async fn auth_client_credentials_by_form_and_basic() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Auth, dir.path()));
    let secret = cluster().secrets.orders_client_secret;
    let r = send(
        &app,
        post_form("/oauth/token", &format!("grant_type=client_credentials&client_id=orders&client_secret={secret}")),
    )
    .await;
    assert_eq!((r.status, r.json["scope"].as_str()), (StatusCode::OK, Some("catalog:reserve")));
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("orders:{secret}"));
    let req = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::from("grant_type=client_credentials"))
        .expect("request");
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------- catalog

async fn publish(app: &Router, name: &str, stock: i64) -> Value {
    let body =
        json!({"name": name, "description": "test product", "price_cents": 1250, "stock": stock, "tags": ["test"]});
    let r = send(app, post_json("/api/products", Some(&token("catalog:write")), &body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    r.json
}

#[tokio::test]
async fn catalog_publish_list_get() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, dir.path()));
    let product = publish(&app, "Desk lamp", 3).await;
    let id = product["id"].as_i64().expect("id");
    let r = send(&app, get(&format!("/api/products/{id}"))).await;
    assert_eq!((r.status, r.json["name"].as_str()), (StatusCode::OK, Some("Desk lamp")));
    let r = send(&app, get("/api/products?limit=5&offset=0")).await;
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["products"][0]["id"], id);
    assert_eq!(send(&app, get("/api/products/999")).await.status, StatusCode::NOT_FOUND);
    let r = send(&app, get("/api/products/abc")).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    assert_eq!(send(&app, get("/api/products?limit=x")).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn catalog_rejects_bad_requests_with_json_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, dir.path()));
    let body = json!({"name": "x", "price_cents": 1});
    let r = send(&app, post_json("/api/products", None, &body)).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let r = send(&app, post_json("/api/products", Some("garbage"), &body)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&app, post_json("/api/products", Some(&token("orders:write")), &body)).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")));
    let req = Request::post("/api/products")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", token("catalog:write")))
        .body(Body::from("{\"name\": "))
        .expect("request");
    let r = send(&app, req).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let huge = json!({"name": "x", "price_cents": 1, "description": "a".repeat(100_000)});
    let r = send(&app, post_json("/api/products", Some(&token("catalog:write")), &huge)).await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let negative = json!({"name": "x", "price_cents": -1});
    assert_eq!(
        send(&app, post_json("/api/products", Some(&token("catalog:write")), &negative)).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn catalog_reservations_are_idempotent_and_never_oversell() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, dir.path()));
    let id = publish(&app, "Scarce", 2).await["id"].as_i64().expect("id");
    let reserve = |rid: &str, qty: i64| {
        post_json(
            "/api/products/reservations",
            Some(&token("catalog:reserve")),
            &json!({"reservation_id": rid, "items": [{"product_id": id, "quantity": qty}]}),
        )
    };
    let first = send(&app, reserve("r1", 2)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json);
    assert_eq!(first.json["total_cents"], 2500);
    assert_eq!(send(&app, reserve("r1", 2)).await.json, first.json, "same id, same reservation");
    let r = send(&app, reserve("r2", 1)).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("out_of_stock")));
    let r = send(
        &app,
        post_json(
            "/api/products/reservations",
            Some(&token("catalog:write")),
            &json!({"reservation_id": "x", "items": []}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&app, get(&format!("/api/products/{id}"))).await.json["stock"], 0);
}

#[tokio::test]
async fn catalog_standby_refuses_writes_and_promotion_fences_by_epoch() {
    let dir = tempfile::tempdir().expect("tmp");
    let primary = build(&args(ServiceKind::Catalog, &dir.path().join("p")));
    publish(&primary, "Before", 1).await;
    // A write carrying a newer epoch, signed by the gateway, tells the old primary it was
    // replaced.
    let req = post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "x", "price_cents": 1}));
    let r = send(&primary, with_epoch(req, "2", Some(&admin_token()))).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("fenced")));
    let r = send(
        &primary,
        post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "y", "price_cents": 1})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "fenced for good");
    let ready = send(&primary, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "a fenced replica leaves the pools");
    assert!(ready.json["reason"].as_str().expect("reason").contains("fenced"), "{}", ready.json);
    let status = send(&primary, get("/admin/replication")).await;
    assert_eq!((status.json["role"].as_str(), status.json["epoch"].as_u64()), (Some("fenced"), Some(2)));

    let standby_args = follower_args(&dir.path().join("s"), "http://127.0.0.1:9");
    let standby = build(&standby_args);
    let r = send(
        &standby,
        post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "z", "price_cents": 1})),
    )
    .await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("read_only_replica")));
    let promote = Request::post("/admin/promote").body(Body::empty()).expect("request");
    assert_eq!(send(&standby, promote).await.status, StatusCode::UNAUTHORIZED, "admin token required");
    let promote = Request::post("/admin/promote")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .body(Body::empty())
        .expect("request");
    let r = send(&standby, promote).await;
    assert_eq!(
        (r.status, r.json["role"].as_str(), r.json["epoch"].as_u64()),
        (StatusCode::OK, Some("primary"), Some(2))
    );
    publish(&standby, "After promotion", 1).await;
}

fn admin_post(uri: &str, body: &Value) -> Request<Body> {
    post_json(uri, Some(&admin_token()), body)
}

/// `req` with `X-Hale-Epoch: epoch`, signed with `secret` as the gateway signs it.
fn with_epoch(mut req: Request<Body>, epoch: &str, secret: Option<&str>) -> Request<Body> {
    req.headers_mut().insert(internal::EPOCH_HEADER, epoch.parse().expect("header"));
    if let Some(secret) = secret {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        internal::sign(internal::RequestLine::of(&method, &uri), req.headers_mut(), secret, unix_now());
    }
    req
}

async fn replication(app: &Router) -> (String, u64) {
    let s = send(app, get("/admin/replication")).await.json;
    (s["role"].as_str().unwrap_or("?").to_string(), s["epoch"].as_u64().unwrap_or(0))
}

/// Issue #12, finding 3: an `orders` token sent straight to a catalog replica with
/// `X-Hale-Epoch: 2^48` fenced the primary for good. Only the gateway's signed epoch counts.
#[tokio::test]
async fn issue_12_an_api_token_cannot_move_the_catalog_epoch() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, dir.path()));
    let id = publish(&app, "Lamp", 5).await["id"].as_i64().expect("id");
    let reserve = json!({"reservation_id": "r1", "items": [{"product_id": id, "quantity": 1}]});
    let create = json!({"name": "x", "price_cents": 1});
    for (scope, uri, body) in
        [("catalog:reserve", "/api/products/reservations", &reserve), ("catalog:write", "/api/products", &create)]
    {
        for epoch in ["281474976710656", "2"] {
            for secret in [None, Some("not-the-admin-token")] {
                let req = with_epoch(post_json(uri, Some(&token(scope)), body), epoch, secret);
                let r = send(&app, req).await;
                assert_eq!(
                    (r.status, r.json["error"]["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("epoch_not_authorized")),
                    "{uri} epoch {epoch} signed with {secret:?}: {}",
                    r.json
                );
            }
        }
    }
    assert_eq!(replication(&app).await, ("primary".to_string(), 1), "neither fenced nor moved");
    publish(&app, "still writable", 1).await;
}

/// Issue #12, finding 3: even a party entitled to move the epoch moves it in small steps,
/// so no single message can use up the epoch space and leave failover nowhere to go.
#[tokio::test]
async fn issue_12_epochs_move_in_small_steps_only() {
    let step = hale_shop::catalog::MAX_EPOCH_STEP;
    let far = (1 + step + 1).to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, &dir.path().join("p")));
    let write = || post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "x", "price_cents": 1}));
    let r = send(&app, with_epoch(write(), &far, Some(&admin_token()))).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("epoch_jump")), "{}", r.json);
    assert_eq!(replication(&app).await, ("primary".to_string(), 1));
    let r = send(&app, admin_post("/admin/promote", &json!({"epoch": 1u64 << 48}))).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("epoch_jump")), "{}", r.json);
    let r = send(&app, admin_post("/admin/promote", &json!({"epoch": 1 + step}))).await;
    assert_eq!((r.status, r.json["epoch"].as_u64()), (StatusCode::OK, Some(1 + step)), "a step is fine: {}", r.json);
    let r = send(&app, admin_post("/admin/fence", &json!({"epoch": 1 + 2 * step}))).await;
    assert_eq!((r.status, r.json["role"].as_str()), (StatusCode::OK, Some("fenced")), "{}", r.json);
    assert_eq!(r.json["epoch"].as_u64(), Some(1 + 2 * step));
}

/// An admin's fence of a replica far behind (an old primary back after many failovers)
/// fences it — left writable it would be a split brain — but moves its epoch one step
/// at most, so even a fence with 2^48 leaves epochs for later failovers.
#[tokio::test]
async fn a_fence_from_far_ahead_fences_and_moves_the_epoch_one_step() {
    let step = hale_shop::catalog::MAX_EPOCH_STEP;
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, &dir.path().join("p")));
    let r = send(&app, admin_post("/admin/fence", &json!({"epoch": 1u64 << 48}))).await;
    assert_eq!((r.status, r.json["role"].as_str()), (StatusCode::OK, Some("fenced")), "{}", r.json);
    assert_eq!(r.json["epoch"].as_u64(), Some(1 + step), "{}", r.json);
    let write = post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "x", "price_cents": 1}));
    let r = send(&app, write).await;
    assert!(!r.status.is_success(), "a fenced replica takes no write: {} {}", r.status, r.json);
    assert_eq!(replication(&app).await, ("fenced".to_string(), 1 + step));
}

/// Issue #12, finding 3: a poisoned primary's epoch must not spread to its standby through
/// the change log, or the healer's failover has no epoch left to promote under.
#[tokio::test]
async fn issue_12_a_standby_does_not_adopt_a_runaway_epoch_from_its_primary() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = polls.clone();
    let poisoned = Router::new().route(
        "/admin/replication/changes",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { axum::Json(json!({"role": "primary", "epoch": 1u64 << 48, "last_seq": 0, "changes": []})) }
        }),
    );
    let primary_url = serve(&stop, poisoned).await;
    let standby_args = follower_args(dir.path(), primary_url);
    let (standby, tasks) = app(&standby_args, &stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    wait_for("the standby to poll its primary twice", || async {
        polls.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(replication(&standby).await, ("standby".to_string(), 1));
    let r = send(&standby, admin_post("/admin/promote", &json!({}))).await;
    assert_eq!((r.status, r.json["epoch"].as_u64()), (StatusCode::OK, Some(2)), "failover still works: {}", r.json);
    let _ = stop_tx.send(true);
}

/// Issue #12, finding 3: a replica more than a step behind (away through many failovers)
/// still rejoins, because the new primary it is pointed at vouches for the epoch.
#[tokio::test]
async fn issue_12_a_replica_far_behind_rejoins_when_the_primary_confirms_the_epoch() {
    let step = hale_shop::catalog::MAX_EPOCH_STEP;
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (old_app, _) = app(&args(ServiceKind::Catalog, &dir.path().join("old")), &stop).expect("app");
    let new_args = follower_args(&dir.path().join("new"), "http://127.0.0.1:9");
    let (new_app, tasks) = app(&new_args, &stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    let new_url = serve(&stop, new_app.clone()).await;
    for epoch in [1 + step, 1 + 2 * step] {
        let r = send(&new_app, admin_post("/admin/promote", &json!({"epoch": epoch}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    }
    let r = send(&old_app, admin_post("/admin/rejoin", &json!({"primary": new_url, "epoch": 2 + 2 * step}))).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("epoch_jump")), "{}", r.json);
    let r = send(&old_app, admin_post("/admin/rejoin", &json!({"primary": new_url, "epoch": 1 + 2 * step}))).await;
    assert_eq!((r.status, r.json["epoch"].as_u64()), (StatusCode::OK, Some(1 + 2 * step)), "{}", r.json);
    let _ = stop_tx.send(true);
}

/// Polls `condition` until it holds; fails after 10 s. Tests wait for what they need,
/// never for a fixed time.
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_fenced_old_primary_rejoins_as_standby_sets_aside_what_diverged_and_catches_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    // The old primary, and a standby cut off from it (it follows nothing that answers).
    let (old_app, tasks) = app(&args(ServiceKind::Catalog, &dir.path().join("old")), &stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    let new_args = follower_args(&dir.path().join("new"), "http://127.0.0.1:9");
    let (new_app, tasks) = app(&new_args, &stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    let new_url = serve(&stop, new_app.clone()).await;
    // Written on the old primary only: the standby never receives it.
    let lost = publish(&old_app, "Only on the old primary", 1).await["id"].clone();
    // Failover: the standby is promoted (the old primary is unreachable, so not fenced).
    let r = send(&new_app, admin_post("/admin/promote", &json!({}))).await;
    assert_eq!((r.status, r.json["epoch"].as_u64()), (StatusCode::OK, Some(2)));
    let kept = publish(&new_app, "Written on the new primary", 2).await["id"].clone();
    assert_eq!(send(&old_app, get("/admin/replication")).await.json["role"], "primary", "still believes it leads");

    // Bad requests are refused with a reason.
    let r = send(&old_app, post_json("/admin/rejoin", None, &json!({"primary": new_url, "epoch": 2}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&old_app, admin_post("/admin/rejoin", &json!({"primary": "ftp://x", "epoch": 2}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(&new_app, admin_post("/admin/rejoin", &json!({"primary": new_url, "epoch": 2}))).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("is_primary")));

    let r = send(&old_app, admin_post("/admin/rejoin", &json!({"primary": new_url, "epoch": 2}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        (
            r.json["role"].as_str(),
            r.json["epoch"].as_u64(),
            r.json["kept_through_seq"].as_u64(),
            r.json["set_aside"].as_u64()
        ),
        (Some("standby"), Some(2), Some(0), Some(1)),
        "{}",
        r.json
    );
    wait_for("the rejoined standby to catch up", || async {
        send(&old_app, get("/readyz")).await.status == StatusCode::OK
    })
    .await;
    assert_eq!(send(&old_app, get(&format!("/api/products/{kept}"))).await.status, StatusCode::OK, "caught up");
    // Both wrote product id 1; the standby now has the new primary's, not its own.
    assert_eq!(lost, kept);
    let on_old = send(&old_app, get(&format!("/api/products/{lost}"))).await;
    assert_eq!(on_old.json["name"], "Written on the new primary", "the standby mirrors the primary");
    let status = send(&old_app, get("/admin/replication")).await.json;
    assert_eq!((status["role"].as_str(), status["following"].as_str()), (Some("standby"), Some(new_url.as_str())));
    // The standby refuses writes, and follows the new primary's next write.
    let r = send(
        &old_app,
        post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "z", "price_cents": 1})),
    )
    .await;
    assert_eq!(r.json["error"]["code"], "read_only_replica");
    let next = publish(&new_app, "After the rejoin", 1).await["id"].clone();
    wait_for("the standby to follow the next write", || async {
        send(&old_app, get(&format!("/api/products/{next}"))).await.status == StatusCode::OK
    })
    .await;
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn standby_follows_primary_over_http_and_search_indexes_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (primary_app, primary_url, standby_args) = serving_primary(dir.path(), &stop).await;
    let (standby_app, tasks) = app(&standby_args, &stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    let mut search_args = args(ServiceKind::Search, &dir.path().join("q"));
    search_args.gateway_url = primary_url.clone();
    let (search_app, tasks) = app(&search_args, &stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));

    let id = publish(&primary_app, "Walnut bookshelf", 4).await["id"].as_i64().expect("id");
    wait_for("standby and search to catch up", || async {
        let on_standby = send(&standby_app, get(&format!("/api/products/{id}"))).await.status == StatusCode::OK;
        on_standby && send(&search_app, get("/api/search?q=bookshelf")).await.json["total"] == 1
    })
    .await;
    let r = send(&search_app, get("/api/search?q=bookshelf&limit=5")).await;
    assert_eq!(r.json["hits"][0]["id"], id);
    assert!(r.json["hits"][0]["score"].as_f64().expect("score") > 0.0);
    assert_eq!(send(&search_app, get("/readyz")).await.status, StatusCode::OK);
    let status = send(&standby_app, get("/admin/replication")).await.json;
    assert_eq!(status["role"], "standby");
    let _ = stop_tx.send(true);
}

/// A serving primary with "Oak desk" published and its standby (following it, stopped
/// by the sender returned) in its sync set.
async fn primary_in_sync(
    dir: &std::path::Path,
    stop: &watch::Receiver<bool>,
) -> (Router, Router, ShopArgs, watch::Sender<bool>) {
    let (primary_app, _, standby_args) = serving_primary(dir, stop).await;
    let (standby_stop_tx, standby_stop) = watch::channel(false);
    let (standby_app, tasks) = app(&standby_args, &standby_stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    publish(&primary_app, "Oak desk", 1).await;
    wait_for("the standby in the sync set", || async {
        send(&standby_app, get("/admin/replication")).await.json["in_sync"] == true
    })
    .await;
    (primary_app, standby_app, standby_args, standby_stop_tx)
}

/// Found by tests/netns.rs (a split brain): a primary cut off from its standby went on
/// acknowledging writes alone, which a failover then lost. Once its standby is in the
/// sync set, a primary acknowledges nothing the standby has not confirmed (503 instead);
/// the failover authority's release lets it acknowledge alone under a new set, which the
/// released standby is not in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_acknowledges_nothing_its_sync_standby_lacks_until_it_is_released() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (primary_app, standby_app, standby_args, standby_stop_tx) = primary_in_sync(dir.path(), &stop).await;
    let primary = send(&primary_app, get("/admin/replication")).await.json;
    assert_eq!(primary["sync_stamp"], json!({"epoch": 1, "generation": 0}), "{primary}");
    assert!(!primary["sync_blocked"].as_bool().unwrap_or(false), "{primary}");
    publish(&primary_app, "Pine shelf", 1).await;

    // The standby goes away: a write is stored but refused, and the primary says why.
    let _ = standby_stop_tx.send(true);
    let body = json!({"name": "Lost?", "price_cents": 1, "stock": 0});
    let r = send(&primary_app, post_json("/api/products", Some(&token("catalog:write")), &body)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("not acknowledged")), "{}", r.json);
    let primary = send(&primary_app, get("/admin/replication")).await.json;
    assert_eq!(primary["sync_blocked"].as_bool(), Some(true), "{primary}");
    assert!(metrics_text(&primary_app).await.contains("shop_catalog_sync_blocked 1"));

    // The release is a compare-and-set on the set, for the admin only.
    let stale = json!({"stamp": {"epoch": 1, "generation": 7}});
    let r = send(&primary_app, admin_post("/admin/release", &stale)).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("stamp_moved")), "{}", r.json);
    let current = json!({"stamp": {"epoch": 1, "generation": 0}});
    let r = send(&primary_app, post_json("/admin/release", Some(&token("catalog:write")), &current)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "an API token releases nothing");
    let r = send(&primary_app, admin_post("/admin/release", &current)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        (r.json["sync_stamp"]["generation"].as_u64(), r.json["sync_blocked"].as_bool().unwrap_or(false)),
        (Some(1), false)
    );
    // Released: acknowledged alone.
    publish(&primary_app, "Written alone", 1).await;
    // The released standby still says it was in set 0: older than the set released, so
    // the healer promotes it no more (failover::ReplicaStatus::may_be_promoted).
    let standby = send(&standby_app, get("/admin/replication")).await.json;
    assert_eq!((standby["in_sync"].as_bool(), standby["sync_stamp"]["generation"].as_u64()), (Some(true), Some(0)));
    // Back, caught up: in the new set. Gone again: blocked again. A blocked primary that
    // is then fenced blocks on nothing any more (its alert must clear).
    drop(standby_app);
    let (again_stop_tx, again_stop) = watch::channel(false);
    let (again_app, tasks) = app(&standby_args, &again_stop).expect("app");
    tasks.into_iter().for_each(|t| drop(tokio::spawn(t)));
    wait_for("the standby back in the set", || async {
        let s = send(&again_app, get("/admin/replication")).await.json;
        s["in_sync"] == true && s["sync_stamp"]["generation"] == 1
    })
    .await;
    let _ = again_stop_tx.send(true);
    let body = json!({"name": "Blocked again", "price_cents": 1, "stock": 0});
    let r = send(&primary_app, post_json("/api/products", Some(&token("catalog:write")), &body)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert!(metrics_text(&primary_app).await.contains("shop_catalog_sync_blocked 1"));
    let r = send(&primary_app, admin_post("/admin/fence", &json!({"epoch": 2}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(metrics_text(&primary_app).await.contains("shop_catalog_sync_blocked 0"));
    let _ = stop_tx.send(true);
}

/// Found reading the failover path (#21): a reservation refused because the sync standby
/// did not confirm it is still stored on the primary, and its retry (same id, an
/// idempotent replay that appends no change) was acknowledged at once — a 201 for a write
/// the standby may not have, which a failover would lose. A replay is acknowledged only
/// once the standby has everything, like any write. The standby here is the test: it
/// polls (renewing the primary's lease) without confirming, as a standby that cannot
/// apply would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_reservation_is_acknowledged_only_once_the_sync_standby_has_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let primary = build(&args(ServiceKind::Catalog, dir.path()));
    let id = publish(&primary, "Scarce lamp", 5).await["id"].as_i64().expect("id");
    let echo = std::sync::Mutex::new(String::new());
    // One poll of the standby that says it has everything up to `after`.
    let poll = async |after: u64| {
        let query = echo.lock().expect("echo").clone();
        let uri = format!("/admin/replication/changes?after={after}{query}");
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
            .body(Body::empty())
            .expect("request");
        let page = send(&primary, req).await.json;
        *echo.lock().expect("echo") =
            format!("&lease_boot={}&lease_at_ms={}", page["lease"]["boot"], page["lease"]["at_ms"]);
        page
    };
    poll(0).await;
    let confirmed = poll(1).await["last_seq"].as_u64().expect("seq");
    assert_eq!(poll(confirmed).await["in_sync"], true, "the standby joined the set");
    let reserve = || {
        post_json(
            "/api/products/reservations",
            Some(&token("catalog:reserve")),
            &json!({"reservation_id": "r-replayed", "items": [{"product_id": id, "quantity": 1}]}),
        )
    };
    let r = send(&primary, reserve()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "not confirmed: {}", r.json);
    // Two polls: the second echoes the fresh stamp of the first, so the lease holds.
    poll(confirmed).await;
    poll(confirmed).await;
    let r = send(&primary, reserve()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "the replay, still not confirmed: {}", r.json);
    assert!(r.json["error"]["message"].as_str().is_some_and(|m| m.contains("did not confirm")), "{}", r.json);
    let all = poll(confirmed).await["last_seq"].as_u64().expect("seq");
    assert!(all > confirmed, "the refused reservation is stored");
    poll(all).await;
    poll(all).await;
    let r = send(&primary, reserve()).await;
    assert_eq!(r.status, StatusCode::CREATED, "confirmed: {}", r.json);
    assert_eq!(send(&primary, get(&format!("/api/products/{id}"))).await.json["stock"], 4, "reserved once");
}

/// The primary's write lease (#21): cut off from the standby of its sync set for a lease
/// period, a primary refuses writes at once and stores nothing — it may have been replaced
/// already — so the standby's promotion need not reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_standby_is_silent_for_a_lease_period_stores_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (primary_app, _standby, _, standby_stop_tx) = primary_in_sync(dir.path(), &stop).await;
    let _ = standby_stop_tx.send(true);
    let write = || post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "x", "price_cents": 1}));
    let lapsed = |r: &Reply| {
        r.status == StatusCode::SERVICE_UNAVAILABLE
            && r.json["error"]["message"].as_str().is_some_and(|m| m.contains("lease lapsed"))
    };
    // Writes made while the lease still held are stored and refused (not acknowledged);
    // once it lapses, nothing is stored.
    wait_for("the lease to lapse", || async { lapsed(&send(&primary_app, write()).await) }).await;
    let before = replication(&primary_app).await.1;
    let r = send(&primary_app, write()).await;
    assert!(lapsed(&r), "{}", r.json);
    assert_eq!(replication(&primary_app).await.1, before, "nothing stored");
    let status = send(&primary_app, get("/admin/replication")).await.json;
    assert_eq!(status["sync_blocked"], true, "the healer's cue to release the standby: {status}");
    let _ = stop_tx.send(true);
}

/// A promoting standby never waits on an old primary it cannot reach: it waits out the
/// primary's lease (counted from the last page it received, or from its own start), and
/// once that has run out it does not even try. The old primaries here are sockets nobody
/// answers, as a frozen process's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_promotes_once_the_old_primarys_lease_has_surely_run_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let silent = |_: ()| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        (listener, url)
    };
    let promote = || {
        Request::post("/admin/promote")
            .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
            .body(Body::empty())
            .expect("request")
    };
    let (late_old, late_url) = silent(());
    let (first_old, first_url) = silent(());
    // Their follower tasks are not started: neither has heard from its primary.
    let (late, _late_tasks) = app(&follower_args(&dir.path().join("late"), late_url), &no_stop()).expect("app");
    let started = std::time::Instant::now();
    let (first, _first_tasks) = app(&follower_args(&dir.path().join("first"), first_url), &no_stop()).expect("app");

    let r = send(&first, promote()).await;
    assert_eq!((r.status, r.json["role"].as_str()), (StatusCode::OK, Some("primary")), "{}", r.json);
    assert!(
        started.elapsed() >= hale_shop::catalog::lease::LEASE_WAIT,
        "promoted after {:?}: a lease granted before the standby started could still hold",
        started.elapsed()
    );
    assert!(first_old.accept().is_ok(), "while the lease could hold, the old primary was asked to fence");

    let r = send(&late, promote()).await;
    assert_eq!((r.status, r.json["role"].as_str()), (StatusCode::OK, Some("primary")), "{}", r.json);
    assert!(late_old.accept().is_err(), "its lease long over, the old primary is not contacted");
}

// ---------------------------------------------------------------- search

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_at_capacity_queues_then_sheds_with_503() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = args(ServiceKind::Search, dir.path());
    assert_eq!(a.cluster.max_in_flight(ServiceKind::Search), Some(4), "the demo's search capacity");
    a.cluster.services.iter_mut().for_each(|s| s.max_in_flight = Some(1));
    let app = build(&a);
    // Every request now takes 5 s of "work", holding the one slot.
    let r = send(&app, admin_post("/admin/chaos", &json!({"latency_ms": 5000, "duration_secs": 30}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // Two at once, no guessing which starts first: one takes the slot, the other queues,
    // then is shed.
    let timed = || {
        let app = app.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = send(&app, get("/api/search")).await;
            (r, started.elapsed())
        })
    };
    let (a, b) = (timed(), timed());
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    let (shed, served) = if a.0.status == StatusCode::SERVICE_UNAVAILABLE { (a, b) } else { (b, a) };
    assert_eq!(
        (shed.0.status, shed.0.json["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded")),
        "{}",
        shed.0.json
    );
    assert_eq!(shed.0.headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("1"));
    assert!(shed.1 >= hale_shop::http::serve::MAX_QUEUE_WAIT, "it waited for a slot first");
    // The one holding the slot finishes normally (400: no query given).
    assert_eq!(served.0.status, StatusCode::BAD_REQUEST, "{}", served.0.json);
    let clear = Request::delete("/admin/chaos")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&app, clear).await.status, StatusCode::OK);
    let metrics = metrics_text(&app).await;
    assert!(metrics.contains("shop_requests_shed_total 1"), "{metrics}");
    assert!(metrics.contains("http_server_active_requests 0"), "{metrics}");
}

async fn metrics_text(app: &Router) -> String {
    let response = app.clone().oneshot(get("/metrics")).await.expect("metrics");
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

#[tokio::test]
async fn search_needs_a_query_and_is_not_ready_before_its_first_sync() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Search, dir.path()));
    let r = send(&app, get("/api/search")).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let r = send(&app, get("/readyz")).await;
    assert_eq!((r.status, r.json["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready")));
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------- orders

/// Auth and catalog on one ephemeral port: what the orders service reaches through the
/// gateway in a cluster.
async fn auth_and_catalog(dir: &std::path::Path, stop: &watch::Receiver<bool>) -> (String, Router) {
    let mut registry = prometheus_client::registry::Registry::default();
    let c = cluster();
    let frame = hale_shop::http::Frame::new(
        ServiceKind::Catalog,
        "catalog-1",
        &mut registry,
        &c.secrets.jwt_secret,
        &c.secrets.admin_token,
    );
    let state = hale_shop::catalog::CatalogState::open(
        &dir.join("c.db"),
        "catalog-1",
        Role::Primary,
        None,
        &c.secrets.admin_token,
        frame.readiness.clone(),
        &mut registry,
    )
    .expect("catalog");
    let api = hale_shop::catalog::router(state).merge(hale_shop::auth::router(&c, &mut registry));
    let router = hale_shop::http::app(frame, Arc::new(registry), api);
    let url = serve(stop, router.clone()).await;
    (url, router)
}

fn order(bearer: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut req = post_json("/api/orders", Some(bearer), body);
    if let Some(key) = key {
        req.headers_mut().insert("idempotency-key", key.parse().expect("header"));
    }
    req
}

#[tokio::test]
async fn orders_place_once_per_key_encrypt_and_show_only_to_owner() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (upstream, catalog) = auth_and_catalog(dir.path(), &stop).await;
    let id = publish(&catalog, "Kettle", 1).await["id"].as_i64().expect("id");
    let mut orders_args = args(ServiceKind::Orders, dir.path());
    orders_args.gateway_url = upstream;
    let app = build(&orders_args);
    let alice =
        TokenKeys::new(&cluster().secrets.jwt_secret).issue("alice", "orders:write orders:read", 300).expect("token");
    let body = json!({"items": [{"product_id": id, "quantity": 1}], "shipping_address": "12 Secret Lane, Hiddenville", "card_number": "4242 4242 4242 4242"});

    let r = send(&app, order(&alice, None, &body)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "Idempotency-Key is required");
    let first = send(&app, order(&alice, Some("k1"), &body)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json);
    assert_eq!((first.json["status"].as_str(), first.json["total_cents"].as_i64()), (Some("confirmed"), Some(1250)));
    assert_eq!(first.json["card_number"], "**** **** **** 4242");
    let again = send(&app, order(&alice, Some("k1"), &body)).await;
    assert_eq!((again.status, &again.json["id"]), (StatusCode::CREATED, &first.json["id"]));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other_body = json!({"items": [{"product_id": id, "quantity": 1}], "shipping_address": "elsewhere", "card_number": "4242424242424242"});
    assert_eq!(send(&app, order(&alice, Some("k1"), &other_body)).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = send(&app, order(&alice, Some("k2"), &body)).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("out_of_stock")));

    let order_id = first.json["id"].as_str().expect("id");
    let get_as = |who: &str| {
        Request::get(format!("/api/orders/{order_id}"))
            .header(header::AUTHORIZATION, format!("Bearer {who}"))
            .body(Body::empty())
            .expect("request")
    };
    let mine = send(&app, get_as(&alice)).await;
    assert_eq!(
        (mine.status, mine.json["shipping_address"].as_str()),
        (StatusCode::OK, Some("12 Secret Lane, Hiddenville"))
    );
    let bob = TokenKeys::new(&cluster().secrets.jwt_secret).issue("bob", "orders:read", 300).expect("token");
    assert_eq!(send(&app, get_as(&bob)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, get_as(&token("catalog:write"))).await.status, StatusCode::FORBIDDEN);
    let _ = stop_tx.send(true);

    // Nothing under the data dir holds the address or the card number in plain text.
    for entry in walkdir::WalkDir::new(dir.path()) {
        let entry = entry.expect("walk");
        if entry.file_type().is_dir() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("read");
        for secret in ["Secret Lane", "4242424242424242", "4242 4242 4242 4242"] {
            assert!(!contains(&bytes, secret.as_bytes()), "{secret:?} found in {}", entry.path().display());
        }
    }
}

#[tokio::test]
async fn orders_validate_before_reserving() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Orders, dir.path()));
    let t = token("orders:write");
    let bad_card = json!({"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "a", "card_number": "1234"});
    assert_eq!(send(&app, order(&t, Some("k"), &bad_card)).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let no_items = json!({"items": [], "shipping_address": "a", "card_number": "4242424242424242"});
    assert_eq!(send(&app, order(&t, Some("k"), &no_items)).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_field = json!({"items": [], "shipping_address": "a", "card_number": "4242424242424242", "coupon": 1});
    assert_eq!(send(&app, order(&t, Some("k"), &unknown_field)).await.status, StatusCode::BAD_REQUEST);
    let ok = json!({"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "a", "card_number": "4242424242424242"});
    assert_eq!(send(&app, order(&token("orders:read"), Some("k"), &ok)).await.status, StatusCode::FORBIDDEN);
    let r = send(&app, order(&t, Some("k"), &ok)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "catalog unreachable: {}", r.json);
    assert!(r.json["error"]["message"].as_str().expect("message").contains("retry"), "says what to do next");
}

/// Serves `router` on a free loopback port until `stop` turns true; returns its URL.
async fn serve(stop: &watch::Receiver<bool>, router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut stop = stop.clone();
    tokio::spawn(hale_shop::http::serve_on(listener, router, hale_serve::Security::default(), async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    url
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------- gateway

#[tokio::test]
async fn gateway_admin_needs_the_token_and_validates() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Gateway, dir.path()));
    assert_eq!(send(&app, get("/admin/pool")).await.status, StatusCode::UNAUTHORIZED);
    let authed =
        |req: axum::http::request::Builder| req.header(header::AUTHORIZATION, format!("Bearer {}", admin_token()));
    let r = send(&app, authed(Request::get("/admin/pool")).body(Body::empty()).expect("req")).await;
    assert_eq!(r.json["catalog"]["primary"], "catalog-1");
    assert_eq!(r.json["search"]["members"].as_array().expect("members").len(), 2);
    let put = |service: &str, body: Value| {
        authed(Request::put(format!("/admin/pool/{service}")))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("req")
    };
    assert_eq!(send(&app, put("catalog", json!({"primary": "nobody"}))).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(send(&app, put("search", json!({"primary": "search-1"}))).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(send(&app, put("nosuch", json!({}))).await.status, StatusCode::NOT_FOUND);
    let r = send(&app, put("catalog", json!({"primary": "catalog-2", "epoch": 2}))).await;
    assert_eq!((r.status, r.json["catalog"]["primary"].as_str()), (StatusCode::OK, Some("catalog-2")));
    let r = send(&app, get("/nowhere")).await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

/// Issue #12, finding 18: `ReplicaDown gateway-1` fired at start. A gateway answered
/// ready before it had checked any pool, then not ready while the search replicas built
/// their indexes: "was ready, now fails" to the alert. It is not ready until it knows.
#[tokio::test]
async fn a_gateway_is_not_ready_before_it_has_checked_its_pools() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Gateway, dir.path()));
    let r = send(&app, get("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
}

#[tokio::test]
async fn gateway_retries_a_get_on_another_replica_and_ejects_the_failing_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    // Two "search" replicas: one always fails, one answers.
    let mut urls = Vec::new();
    for fail in [true, false] {
        let router = Router::new().route(
            "/api/search",
            axum::routing::get(move || async move {
                if fail {
                    (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
                } else {
                    axum::Json(json!({"hits": [], "total": 0})).into_response()
                }
            }),
        );
        urls.push(serve(&stop, router).await);
    }
    let app = build(&args(ServiceKind::Gateway, dir.path()));
    let members = json!({"members": [{"instance": "bad", "url": urls[0]}, {"instance": "good", "url": urls[1]}]});
    let put = Request::put("/admin/pool/search")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(members.to_string()))
        .expect("req");
    assert_eq!(send(&app, put).await.status, StatusCode::OK);
    for _ in 0..20 {
        let r = send(&app, get("/api/search?q=x")).await;
        assert_eq!(r.status, StatusCode::OK, "every search succeeds: {}", r.json);
    }
    // The failing replica is out of rotation, the good one in it.
    let pool = Request::get("/admin/pool")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .body(Body::empty())
        .expect("req");
    let pool = send(&app, pool).await.json;
    let member = |name: &str| {
        pool["search"]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["instance"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not in the pool: {pool}"))
    };
    assert_eq!(member("bad")["ejected"], true, "the failing replica was ejected: {pool}");
    assert_eq!(member("good")["ejected"], false, "{pool}");
    let metrics = send(&app, get("/metrics")).await.json;
    let text = metrics.as_str().expect("text");
    assert!(text.contains("shop_gateway_retries_total{service=\"search\"}"), "{text}");
    assert!(text.contains("http_route=\"/api/search\""), "{text}");
    let _ = stop_tx.send(true);
}

use axum::response::IntoResponse;

// ---------------------------------------------------------------- every service

#[tokio::test]
async fn every_service_has_probes_metrics_and_chaos() {
    for service in ServiceKind::ALL {
        let dir = tempfile::tempdir().expect("tmp");
        let app = build(&args(service, dir.path()));
        assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK, "{service}");
        let metrics = send(&app, get("/metrics")).await;
        assert!(
            metrics.json.as_str().expect("text").contains("# TYPE http_server_request_duration_seconds histogram"),
            "{service}"
        );
        let chaos = |bearer: Option<String>, body: Value| {
            let mut b = Request::post("/admin/chaos").header(header::CONTENT_TYPE, "application/json");
            if let Some(t) = bearer {
                b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            b.body(Body::from(body.to_string())).expect("req")
        };
        assert_eq!(
            send(&app, chaos(None, json!({"error_rate": 1.0}))).await.status,
            StatusCode::UNAUTHORIZED,
            "{service}"
        );
        assert_eq!(
            send(&app, chaos(Some(admin_token()), json!({"error_rate": 7}))).await.status,
            StatusCode::BAD_REQUEST,
            "{service}"
        );
        let r = send(&app, chaos(Some(admin_token()), json!({"error_rate": 1.0, "duration_secs": 30}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{service}");
        let probe = if service == ServiceKind::Auth { "/oauth/token" } else { "/api/search?q=x" };
        let r = send(&app, get(probe)).await;
        assert_eq!(
            (r.status, r.json["error"]["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("chaos")),
            "{service}"
        );
        assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK, "probes are spared: {service}");
        let clear = Request::delete("/admin/chaos")
            .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
            .body(Body::empty())
            .expect("req");
        assert_eq!(send(&app, clear).await.status, StatusCode::OK);
        assert_ne!(send(&app, get(probe)).await.status, StatusCode::INTERNAL_SERVER_ERROR, "{service}");
    }
}

#[tokio::test]
async fn requests_carry_a_request_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Auth, dir.path()));
    let r = send(&app, get("/healthz")).await;
    assert!(!r.headers["x-request-id"].is_empty());
    let req = Request::get("/healthz").header("x-request-id", "abc-123").body(Body::empty()).expect("req");
    assert_eq!(send(&app, req).await.headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn promotion_fences_the_old_primary_and_drains_what_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (primary_app, _, standby_args) = serving_primary(dir.path(), &stop).await;
    // The follower task is deliberately not started: everything the standby has after the
    // promotion came from the drain.
    let (standby_app, _tasks) = app(&standby_args, &stop).expect("app");
    let id = publish(&primary_app, "Acknowledged just before failover", 1).await["id"].as_i64().expect("id");
    assert_eq!(send(&standby_app, get(&format!("/api/products/{id}"))).await.status, StatusCode::NOT_FOUND);

    let promote = Request::post("/admin/promote")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .body(Body::empty())
        .expect("request");
    let r = send(&standby_app, promote).await;
    assert_eq!((r.status, r.json["epoch"].as_u64()), (StatusCode::OK, Some(2)), "{}", r.json);
    assert_eq!(send(&standby_app, get(&format!("/api/products/{id}"))).await.status, StatusCode::OK, "drained");
    let r = send(
        &primary_app,
        post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "late", "price_cents": 1})),
    )
    .await;
    assert_eq!((r.status, r.json["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("fenced")));
    let next = publish(&standby_app, "First write of epoch 2", 1).await;
    assert!(next["id"].as_i64().expect("id") > id, "ids continue after the drained ones");
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn errors_made_outside_handlers_are_json_too() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, dir.path()));
    let r = send(&app, get("/api/products/%FF")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["error"]["message"].is_string(), "{}", r.json);
    let r = send(&app, Request::delete("/api/products").body(Body::empty()).expect("req")).await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    assert!(r.headers.contains_key("allow"), "the Allow header survives");
}

#[tokio::test]
async fn the_replication_feed_needs_the_admin_token_and_epochs_are_bounded() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Catalog, dir.path()));
    assert_eq!(send(&app, get("/admin/replication/changes?after=5")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&app, get("/api/products/changes?after=18446744073709551615")).await.status,
        StatusCode::BAD_REQUEST
    );
    let write = || post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "x", "price_cents": 1}));
    let r = send(&app, with_epoch(write(), "18446744073709551615", Some(&admin_token()))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    let r = send(&app, with_epoch(write(), "18446744073709551615", None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "unsigned: {}", r.json);
    publish(&app, "still the primary", 1).await;
}

#[tokio::test]
async fn gateway_replaces_a_client_epoch_header_with_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    // A stand-in catalog primary that echoes the epoch headers it received.
    // A stand-in catalog primary that echoes the epoch headers it received, and whether the
    // gateway's signature over them holds.
    let router = Router::new().route(
        "/api/products",
        axum::routing::post(
            |method: axum::http::Method, uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
                let epochs: Vec<String> =
                    headers.get_all("x-hale-epoch").iter().map(|v| v.to_str().unwrap_or("?").to_string()).collect();
                let proof =
                    internal::verify(internal::RequestLine::of(&method, &uri), &headers, &admin_token(), unix_now());
                axum::Json(json!({"epochs": epochs, "signed_epoch": proof.ok().and_then(|f| f.epoch)}))
            },
        ),
    );
    let url = serve(&stop, router).await;
    let app = build(&args(ServiceKind::Gateway, dir.path()));
    let pool = json!({"members": [{"instance": "catalog-1", "url": url}], "primary": "catalog-1", "epoch": 7});
    let put = Request::put("/admin/pool/catalog")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(pool.to_string()))
        .expect("req");
    assert_eq!(send(&app, put).await.status, StatusCode::OK);
    let req = post_json("/api/products", Some(&token("catalog:write")), &json!({}));
    // The client's epoch and its forged signature are both dropped.
    let r = send(&app, with_epoch(req, "999999", Some("a-guessed-secret"))).await;
    assert_eq!(r.json["epochs"], json!(["7"]), "{}", r.json);
    assert_eq!(r.json["signed_epoch"], 7, "the gateway proves it set the epoch: {}", r.json);
    let _ = stop_tx.send(true);
}

// ---------------------------------------------------------------- issue #12, finding 9

/// A token request with `body` from client address `addr`, as the gateway forwards it.
async fn login_from(app: &Router, addr: &str, body: &str) -> Reply {
    let mut req = post_form("/oauth/token", body);
    req.headers_mut().insert(internal::CLIENT_ADDR_HEADER, addr.parse().expect("header"));
    let (method, uri) = (req.method().clone(), req.uri().clone());
    internal::sign(internal::RequestLine::of(&method, &uri), req.headers_mut(), &admin_token(), unix_now());
    send(app, req).await
}

/// The demo shopper's correct password login.
const SHOPPER_LOGIN: &str = "grant_type=password&username=shopper&password=hale-shopper";

fn retry_after_secs(r: &Reply) -> Option<u64> {
    r.headers.get(header::RETRY_AFTER)?.to_str().ok()?.parse().ok()
}

/// Issue #12, finding 9: one address flooding the token endpoint is slowed down with 429
/// and `Retry-After`; another address (the gateway forwards it, signed) still logs in.
#[tokio::test]
async fn issue_12_one_address_flooding_logins_does_not_starve_the_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Auth, dir.path()));
    let mut limited = 0;
    for i in 0..60 {
        let r = login_from(&app, "10.0.0.66", &format!("grant_type=password&username=nobody-{i}&password=x")).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(retry_after_secs(&r).is_some_and(|s| s >= 1), "429 says when to retry: {:?}", r.headers);
            assert!(r.json["error"].is_string(), "{}", r.json);
        } else {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
        }
    }
    assert!(limited > 0, "the flooding address was never limited");
    // Right after its flood (its bucket refills at 2 a second: asked after another
    // client's slow password check, on a loaded machine, it could have earned a token).
    let r = login_from(&app, "10.0.0.66", SHOPPER_LOGIN).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "the flooder is still slowed down");
    let r = login_from(&app, "10.0.0.77", SHOPPER_LOGIN).await;
    assert_eq!(r.status, StatusCode::OK, "another client still gets tokens: {}", r.json);
}

/// Issue #12, finding 9: guessing one account's password from many addresses is limited
/// per account, and other accounts are not affected.
#[tokio::test]
async fn issue_12_one_account_under_attack_does_not_lock_out_the_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = build(&args(ServiceKind::Auth, dir.path()));
    let mut limited = 0;
    for i in 0..30 {
        let r = login_from(&app, &format!("10.1.0.{i}"), "grant_type=password&username=admin&password=guess").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(retry_after_secs(&r).is_some_and(|s| s >= 1), "{:?}", r.headers);
        }
    }
    assert!(limited > 0, "the attacked account was never limited");
    let r = login_from(&app, "10.2.0.1", SHOPPER_LOGIN).await;
    assert_eq!(r.status, StatusCode::OK, "another account still logs in: {}", r.json);
    // A flood of correct logins does not empty the account's bucket: only failures cost.
    for i in 0..12 {
        let r = login_from(&app, &format!("10.3.0.{i}"), SHOPPER_LOGIN).await;
        assert_eq!(r.status, StatusCode::OK, "login {i} of a user who knows the password: {}", r.json);
    }
    // Wrong secrets for the orders client, from many addresses, never lock the orders
    // service itself out (checkout would stop): machine clients have no account bucket.
    for i in 0..30 {
        let r =
            login_from(&app, &format!("10.4.0.{i}"), "grant_type=client_credentials&client_id=orders&client_secret=x")
                .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json);
    }
    let secret = cluster().secrets.orders_client_secret;
    let r =
        login_from(&app, "10.2.0.2", &format!("grant_type=client_credentials&client_id=orders&client_secret={secret}"))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

/// Issue #12, finding 9, end to end over sockets: a client on 127.0.0.2 floods the
/// gateway with concurrent logins; a client on 127.0.0.3 logs in meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_through_the_gateway_a_flooding_client_does_not_starve_another() {
    let dir = tempfile::tempdir().expect("tmp");
    let (stop_tx, stop) = watch::channel(false);
    let (auth_app, _) = app(&args(ServiceKind::Auth, &dir.path().join("a")), &stop).expect("app");
    let auth_url = serve(&stop, auth_app).await;
    let (gateway_app, _) = app(&args(ServiceKind::Gateway, &dir.path().join("g")), &stop).expect("app");
    let put = Request::put("/admin/pool/auth")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"members": [{"instance": "auth-1", "url": auth_url}]}).to_string()))
        .expect("req");
    assert_eq!(send(&gateway_app, put).await.status, StatusCode::OK);
    let gateway = serve(&stop, gateway_app).await;
    let client_on = |ip: &str| {
        reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().expect("ip")).build().expect("client")
    };
    let flooder = client_on("127.0.0.2");
    let flood: Vec<_> = (0..80)
        .map(|i| {
            let (c, url) = (flooder.clone(), format!("{gateway}/oauth/token"));
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .form(&[("grant_type", "password"), ("username", &format!("bot-{i}")), ("password", "x")])
                    .send()
                    .await
                    .expect("send");
                (r.status(), r.headers().get(header::RETRY_AFTER).is_some())
            })
        })
        .collect();
    let user = client_on("127.0.0.3");
    let r = user
        .post(format!("{gateway}/oauth/token"))
        .form(&[("grant_type", "password"), ("username", "shopper"), ("password", "hale-shopper")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), reqwest::StatusCode::OK, "the other client is served during the flood");
    let mut limited = 0;
    for f in flood {
        let (status, retry_after) = f.await.expect("join");
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry_after, "{status} without Retry-After");
            limited += 1;
        }
    }
    assert!(limited > 0, "the flood was never limited");
    let _ = stop_tx.send(true);
}

/// Issue #12, finding 9: every 503 (and 429) the shop answers says when to come back.
#[tokio::test]
async fn issue_12_every_503_carries_retry_after() {
    let dir = tempfile::tempdir().expect("tmp");
    // Not ready yet (a probe), and a handler's own 503 (orders without a catalog).
    let search = build(&args(ServiceKind::Search, &dir.path().join("s")));
    let r = send(&search, get("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after_secs(&r).is_some(), "readyz: {:?}", r.headers);
    let orders = build(&args(ServiceKind::Orders, &dir.path().join("o")));
    let ok = json!({"items": [{"product_id": 1, "quantity": 1}], "shipping_address": "a", "card_number": "4242424242424242"});
    let r = send(&orders, order(&token("orders:write"), Some("k"), &ok)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert!(retry_after_secs(&r).is_some(), "orders: {:?}", r.headers);
    // The gateway with nobody to send a request to.
    let gateway = build(&args(ServiceKind::Gateway, &dir.path().join("g")));
    let put = Request::put("/admin/pool/search")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"members": []}).to_string()))
        .expect("req");
    assert_eq!(send(&gateway, put).await.status, StatusCode::OK);
    let r = send(&gateway, get("/api/search?q=x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
    assert!(retry_after_secs(&r).is_some(), "gateway: {:?}", r.headers);
}

// ---------------------------------------------------------------- issue #12, finding 10

/// A request with a malformed JSON body and, optionally, a bearer token.
fn malformed(method: &str, uri: &str, bearer: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from("{\"name\": ")).expect("request")
}

/// Who may call a route: an API token with a scope, or the admin token.
#[derive(Clone, Copy, Debug)]
enum Needs {
    Scope(&'static str),
    Admin,
}

/// Every route of the shop that needs a token, by the service that serves it.
fn authenticated_routes() -> Vec<(ServiceKind, &'static str, &'static str, Needs)> {
    let mut routes = vec![
        (ServiceKind::Catalog, "POST", "/api/products", Needs::Scope("catalog:write")),
        (ServiceKind::Catalog, "POST", "/api/products/reservations", Needs::Scope("catalog:reserve")),
        (ServiceKind::Catalog, "POST", "/admin/promote", Needs::Admin),
        (ServiceKind::Catalog, "POST", "/admin/fence", Needs::Admin),
        (ServiceKind::Catalog, "POST", "/admin/rejoin", Needs::Admin),
        (ServiceKind::Catalog, "GET", "/admin/replication/changes", Needs::Admin),
        (ServiceKind::Orders, "POST", "/api/orders", Needs::Scope("orders:write")),
        (ServiceKind::Orders, "GET", "/api/orders/0190a1b2", Needs::Scope("orders:read")),
        (ServiceKind::Gateway, "GET", "/admin/pool", Needs::Admin),
        (ServiceKind::Gateway, "PUT", "/admin/pool/catalog", Needs::Admin),
        (ServiceKind::Gateway, "PUT", "/admin/pool/search", Needs::Admin),
    ];
    for service in ServiceKind::ALL {
        for method in ["GET", "POST", "DELETE"] {
            routes.push((service, method, "/admin/chaos", Needs::Admin));
        }
    }
    routes
}

/// Issue #12, finding 10: a token without the right to call a route is refused before the
/// body is even read (a wrong-scope token with a bad body got 400, telling it about the
/// body of a call it may not make); no token or a wrong one is 401, an API token on an
/// admin route 403.
#[tokio::test]
async fn issue_12_every_authenticated_route_checks_authorization_before_the_body() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut apps = std::collections::HashMap::new();
    for service in ServiceKind::ALL {
        apps.insert(service, build(&args(service, &dir.path().join(service.to_string()))));
    }
    for (service, method, uri, needs) in authenticated_routes() {
        let app = &apps[&service];
        let wrong_scope = match needs {
            Needs::Scope(scope) => token(
                &["catalog:write", "catalog:reserve", "orders:write", "orders:read"]
                    .into_iter()
                    .filter(|s| *s != scope)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Needs::Admin => token("catalog:write catalog:reserve orders:write orders:read"),
        };
        let cases = [
            ("no token", None, StatusCode::UNAUTHORIZED),
            ("a made-up token", Some("not-a-token".to_string()), StatusCode::UNAUTHORIZED),
            ("a token from another key", Some(other_key_token()), StatusCode::UNAUTHORIZED),
            ("a token without the right", Some(wrong_scope), StatusCode::FORBIDDEN),
        ];
        for (what, bearer, status) in cases {
            let r = send(app, malformed(method, uri, bearer.as_deref())).await;
            assert_eq!(r.status, status, "{service} {method} {uri} with {what} ({needs:?}): {}", r.json);
            assert!(r.json["error"]["message"].is_string(), "{service} {method} {uri}: {}", r.json);
        }
    }
}

fn other_key_token() -> String {
    TokenKeys::new("another-secret-that-is-long-enough-456").issue("mallory", "catalog:write", 300).expect("token")
}

/// Issue #12, finding 10: error bodies say what is wrong in a few words; where in the
/// text, and which parser said so, goes to the log only.
#[tokio::test]
async fn issue_12_error_bodies_do_not_leak_parser_internals() {
    let dir = tempfile::tempdir().expect("tmp");
    let catalog = build(&args(ServiceKind::Catalog, &dir.path().join("c")));
    let orders = build(&args(ServiceKind::Orders, &dir.path().join("o")));
    let gateway = build(&args(ServiceKind::Gateway, &dir.path().join("g")));
    let auth = build(&args(ServiceKind::Auth, &dir.path().join("a")));
    // A token whose claims lack `exp`, signed with the right key: its parse error named the
    // field, the line and the column.
    let no_exp = {
        let claims = json!({"sub": "x", "scope": "catalog:write", "iat": unix_now(), "iss": "hale-shop-auth"});
        let key = jsonwebtoken::EncodingKey::from_secret(cluster().secrets.jwt_secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("encode")
    };
    let bodies = [
        "{\"name\": ",
        "{\"name\": \"x\"}",
        "{\"name\": 5, \"price_cents\": 1}",
        "{\"name\": \"x\", \"price_cents\": 1, \"colour\": \"red\"}",
        "[1, 2",
        "{\"reservation_id\": \"r\", \"items\": [{\"product_id\": 1}]}",
        "{\"items\": [{\"product_id\": 1, \"quantity\": \"many\"}], \"shipping_address\": \"a\", \"card_number\": \"1\"}",
        "{\"epoch\": \"two\"}",
        "{\"members\": [{\"instance\": 1}]}",
        "{\"error_rate\": [] }",
    ];
    let admin = admin_token();
    let mut replies = Vec::new();
    for body in bodies {
        for (app, method, uri, bearer) in [
            (&catalog, "POST", "/api/products", token("catalog:write")),
            (&catalog, "POST", "/api/products/reservations", token("catalog:reserve")),
            (&catalog, "POST", "/admin/promote", admin.clone()),
            (&catalog, "POST", "/admin/fence", admin.clone()),
            (&catalog, "POST", "/admin/rejoin", admin.clone()),
            (&orders, "POST", "/api/orders", token("orders:write")),
            (&gateway, "PUT", "/admin/pool/search", admin.clone()),
            (&catalog, "POST", "/admin/chaos", admin.clone()),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
                .header("idempotency-key", "k")
                .body(Body::from(body))
                .expect("request");
            replies.push((format!("{method} {uri} {body}"), send(app, req).await));
        }
    }
    replies
        .push(("a token without exp".into(), send(&catalog, malformed("POST", "/api/products", Some(&no_exp))).await));
    replies.push(("a bad query".into(), send(&catalog, get("/api/products?limit=x&offset=-1")).await));
    replies.push(("a bad query".into(), send(&catalog, get("/api/products/changes?after=x")).await));
    replies
        .push(("a JSON login".into(), send(&auth, post_json("/oauth/token", None, &json!({"grant_type": 1}))).await));
    for (what, r) in replies {
        assert!(r.status.is_client_error(), "{what}: {} {}", r.status, r.json);
        let text = r.json.to_string();
        for leak in ["line", "column", "serde", "Failed to deserialize", "JSON error", "target type"] {
            assert!(!text.contains(leak), "{what}: the error body says {leak:?}: {text}");
        }
        assert!(text.len() < 400, "{what}: a short message: {text}");
    }
    // Still useful: the field that is missing is named.
    let r = send(&catalog, post_json("/api/products", Some(&token("catalog:write")), &json!({"name": "x"}))).await;
    assert!(r.json["error"]["message"].as_str().expect("message").contains("price_cents"), "{}", r.json);
}

// ---------------------------------------------------------------- issue #12, finding 11

/// Issue #12, finding 11: one shopper reserved 50,000 units in one order (50 items of
/// 1,000). Units are capped per item and per order, before anything is reserved.
#[tokio::test]
async fn issue_12_one_order_cannot_reserve_the_whole_stock() {
    let limits = hale_shop::limits::OrderLimits::default();
    let (per_item, per_order) = (i64::from(limits.max_units_per_item), i64::from(limits.max_units_per_order));
    assert!(per_item <= per_order && per_order <= 1000, "sane defaults: {limits:?}");
    let dir = tempfile::tempdir().expect("tmp");
    let orders = build(&args(ServiceKind::Orders, &dir.path().join("o")));
    let catalog = build(&args(ServiceKind::Catalog, &dir.path().join("c")));
    let id = publish(&catalog, "Everything", 100_000).await["id"].as_i64().expect("id");
    let items =
        |n: i64, qty: i64| -> Vec<Value> { (0..n).map(|_| json!({"product_id": id, "quantity": qty})).collect() };
    let t = token("orders:write");
    let too_much = [
        ("the review's order", items(50, 1000)),
        ("one item over the per-item cap", items(1, per_item + 1)),
        ("one product over the per-item cap across lines", items(2, per_item)),
        ("items within the per-item cap, over the per-order cap", items(per_order / per_item + 1, per_item)),
    ];
    for (what, items) in too_much {
        let body = json!({"items": items, "shipping_address": "a", "card_number": "4242424242424242"});
        let r = send(&orders, order(&t, Some(what), &body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.json);
        let message = r.json["error"]["message"].as_str().expect("message");
        assert!(message.contains("at most"), "{what}: says the limit: {message}");
        // The catalog refuses the same reservation from the orders service's token.
        let body = json!({"reservation_id": what, "items": body["items"]});
        let r = send(&catalog, post_json("/api/products/reservations", Some(&token("catalog:reserve")), &body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "catalog, {what}: {}", r.json);
    }
    assert_eq!(send(&catalog, get(&format!("/api/products/{id}"))).await.json["stock"], 100_000, "nothing reserved");
    let within = json!({"items": items(1, per_item), "shipping_address": "a", "card_number": "4242424242424242"});
    let r = send(&orders, order(&t, Some("fine"), &within)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "passes the caps, then finds no catalog: {}", r.json);
}

/// The admin endpoints refuse, with well-formed bodies too, no token and a wrong one (401)
/// and an API access token (403), and nothing they would do happens.
#[tokio::test]
async fn admin_endpoints_refuse_missing_wrong_and_api_tokens() {
    let dir = tempfile::tempdir().expect("tmp");
    let catalog = build(&args(ServiceKind::Catalog, &dir.path().join("c")));
    let gateway = build(&args(ServiceKind::Gateway, &dir.path().join("g")));
    let api = token("catalog:write catalog:reserve orders:write orders:read");
    let calls: Vec<(&Router, &str, &str, Option<Value>)> = vec![
        (&catalog, "POST", "/admin/fence", Some(json!({"epoch": 2}))),
        (&gateway, "PUT", "/admin/pool/catalog", Some(json!({"primary": "catalog-2", "epoch": 2}))),
        (&gateway, "PUT", "/admin/pool/search", Some(json!({"members": []}))),
        (&catalog, "GET", "/admin/chaos", None),
        (&catalog, "POST", "/admin/chaos", Some(json!({"error_rate": 1.0, "duration_secs": 30}))),
        (&catalog, "DELETE", "/admin/chaos", None),
        (&gateway, "POST", "/admin/chaos", Some(json!({"error_rate": 1.0, "duration_secs": 30}))),
    ];
    for (app, method, uri, body) in calls {
        for (what, bearer, status) in [
            ("no token", None, StatusCode::UNAUTHORIZED),
            ("a wrong token", Some("wrong-admin-token".to_string()), StatusCode::UNAUTHORIZED),
            ("an API token", Some(api.clone()), StatusCode::FORBIDDEN),
        ] {
            let mut b = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
            if let Some(t) = &bearer {
                b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = b.body(body.as_ref().map_or(Body::empty(), |v| Body::from(v.to_string()))).expect("req");
            let r = send(app, req).await;
            assert_eq!(r.status, status, "{method} {uri} with {what}: {}", r.json);
        }
    }
    assert_eq!(replication(&catalog).await, ("primary".to_string(), 1), "not fenced");
    assert_eq!(send(&catalog, get("/api/products")).await.status, StatusCode::OK, "no chaos injected");
    let pool = Request::get("/admin/pool")
        .header(header::AUTHORIZATION, format!("Bearer {}", admin_token()))
        .body(Body::empty())
        .expect("req");
    let pool = send(&gateway, pool).await.json;
    assert_eq!((pool["catalog"]["primary"].as_str(), pool["catalog"]["epoch"].as_u64()), (Some("catalog-1"), Some(1)));
    assert_eq!(pool["search"]["members"].as_array().map(Vec::len), Some(2), "{pool}");
}
