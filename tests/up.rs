//! End to end: the real `hale up --headless` on its own loopback range, ports and data dir,
//! walked through as a user would.

mod common;

use common::eventually;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hale_core::api::{
    Action, ActionKind, ActionStatus, ESCALATION_VERSION, ErrorBody, Escalation, HealerState, LogLine, NotifyStatus,
    SilenceState, SloStatus, TargetState, WebhookPayload,
};
use hale_core::{ClusterConfig, Role, ServiceKind};
use hale_shop::auth::TokenResponse;
use hale_shop::catalog::CreateProduct;
use hale_shop::catalog::store::Product;
use hale_shop::orders::OrderView;
use hale_shop::search::SearchResults;
use serde_json::{Value, json};

use common::up::{Cluster, assert_products, chaos, effective_config, pids_under};

fn pid_of(dir: &Path, instance: &str) -> Option<u32> {
    pids_under(dir).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == instance.as_bytes()))
            .unwrap_or(false)
    })
}

// The shop's public API (tokens, products, orders, search) is read as the shop's own types
// (`hale_shop`), Hale's answers (cluster view, SLOs, alerts, actions, state, pools,
// silences, escalations, errors) as core::api's. A replica's `/readyz` detail and the
// audit log's lines have no fixed shape and stay JSON.
/// Sends `request` and reads the answer's JSON; `what` names it when either fails.
async fn json_of<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder, what: &str) -> T {
    let response = request.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    response.json().await.unwrap_or_else(|e| panic!("{what} json: {e}"))
}

async fn token(client: &reqwest::Client, gateway: &str, user: &str, password: &str) -> String {
    let form = [("grant_type", "password"), ("username", user), ("password", password)];
    let r: TokenResponse = json_of(client.post(format!("{gateway}/oauth/token")).form(&form), "token request").await;
    r.access_token
}

/// A cluster for a healing scenario and what its tests use: the gateway's, collector's
/// and healer's URLs, the effective config, and a client with a 3 s timeout.
struct Scenario {
    _tmp: tempfile::TempDir,
    cluster: Cluster,
    gateway: String,
    collector: String,
    config: ClusterConfig,
    healer: String,
    client: reqwest::Client,
}

async fn scenario(load_rps: u32, extra: &[String]) -> Scenario {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, gateway, _prefix, collector) = start_with(tmp.path(), load_rps, extra).await;
    let config = effective_config(&cluster.data_dir);
    let healer = format!("http://{}", config.healer.listen);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("client");
    Scenario { _tmp: tmp, cluster, gateway, collector, config, healer, client }
}

/// Searches through the gateway every `every` until stopped; with `overlap` a search does
/// not wait for the one before (a surge), else each waits for its answer.
struct Searches {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Searches {
    fn start(client: &reqwest::Client, gateway: &str, every: Duration, overlap: bool) -> Searches {
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (client, url, on) = (client.clone(), format!("{gateway}/api/search?q=lamp"), running.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while on.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let search = client.get(&url).send();
                if overlap {
                    tokio::spawn(async move { drop(search.await) });
                } else {
                    drop(search.await);
                }
            }
        });
        Searches { running, task }
    }

    async fn stop(self) {
        self.running.store(false, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("searches");
    }
}

/// An SLO's status at the collector.
async fn slo_status(client: &reqwest::Client, collector: &str, slo: &str) -> Option<SloStatus> {
    common::slos(client, collector).await?.into_iter().find(|s| s.slo == slo).map(|s| s.status)
}

/// Waits until the collector has seen `instance` ready (so a failure of it is a ReplicaDown).
async fn seen_ready(client: &reqwest::Client, collector: &str, instance: &str) {
    let q = format!("max_over_time(probe_success{{probe=\"readyz\",instance=\"{instance}\"}}[1h])");
    eventually(&format!("{instance} seen ready"), Duration::from_secs(60), async || {
        (common::query(client, collector, &q).await?.first()?.value.1 == "1").then_some(())
    })
    .await;
}

/// The healer's typed client (reads only), sharing the test's connections.
fn healer_client(client: &reqwest::Client, healer: &str) -> hale_client::Healer {
    hale_client::Healer::with_client(healer, None, &hale_client::Pool::of(client, Duration::from_secs(3)))
        .expect("healer client")
}

async fn healer_actions(client: &reqwest::Client, healer: &str) -> Option<Vec<Action>> {
    Some(healer_client(client, healer).actions().await.ok()?.actions)
}

async fn healer_state(client: &reqwest::Client, healer: &str) -> Option<HealerState> {
    healer_client(client, healer).state().await.ok()
}

/// The first succeeded action of `kind` (other than the one with id `except`).
async fn succeeded(client: &reqwest::Client, healer: &str, kind: ActionKind, except: Option<&str>) -> Option<Action> {
    let actions = healer_actions(client, healer).await?;
    actions.into_iter().find(|a| a.kind == kind && a.status == ActionStatus::Succeeded && Some(a.id.as_str()) != except)
}

/// Whether an action's target is `instance`.
fn on(action: &Action, instance: &str) -> bool {
    action.target.instance.as_deref() == Some(instance)
}

/// Whether `instance` is ready in the gateway's search pool (`None` inside if it is not a
/// member, `None` outside if the gateway does not answer).
async fn ready_in_pool(gateway: &hale_client::Gateway, instance: &str) -> Option<Option<bool>> {
    let pool = gateway.pool(ServiceKind::Search).await.ok()?;
    Some(pool.members.iter().find(|m| m.instance == instance).map(|m| m.ready))
}

/// Every file under `dir`; entries that vanish while it looks (a running cluster) are skipped.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let entries = walkdir::WalkDir::new(dir).into_iter().flatten();
    entries.filter(|e| !e.file_type().is_dir()).map(walkdir::DirEntry::into_path).collect()
}

/// Starts `hale up --headless` on a private address range and waits for its banner.
async fn start(tmp: &Path, load_rps: u32) -> (Cluster, String, String) {
    let (cluster, gateway, prefix, _) = start_with(tmp, load_rps, &[]).await;
    (cluster, gateway, prefix)
}

/// `start` with more flags; also returns the collector's URL.
async fn start_with(tmp: &Path, load_rps: u32, extra: &[String]) -> (Cluster, String, String, String) {
    let cluster = Cluster::start(tmp, load_rps, extra).await;
    let (gateway, prefix, collector) = (cluster.gateway(), cluster.prefix.clone(), cluster.collector());
    (cluster, gateway, prefix, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hale_up_walkthrough() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut cluster, gateway, prefix) = start(tmp.path(), 5).await;
    let data_dir = cluster.data_dir.clone();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    let banner = std::fs::read_to_string(tmp.path().join("up.out")).expect("banner");
    assert!(banner.contains("shopper / hale-shopper") && banner.contains(&gateway), "{banner}");
    let effective =
        ClusterConfig::parse(&std::fs::read_to_string(data_dir.join("cluster.toml")).expect("effective config"))
            .expect("parse");
    let instances = effective.instances();
    let url_of = |name: &str| instances.iter().find(|i| i.name == name).map(|i| i.url()).expect("instance");
    assert!(
        instances.iter().all(|i| i.service == ServiceKind::Gateway || i.listen.ip().to_string().starts_with(&prefix))
    );

    // The agents ship to the collector: host metrics of every node arrive.
    let collector = format!("http://{}", effective.collector.listen);
    eventually("every node's metrics reach the collector", Duration::from_secs(30), async || {
        let url = format!("{collector}/api/v1/label/node/values");
        let nodes: Vec<String> = common::get_data(&client, &url, &[]).await?;
        (nodes.len() == effective.nodes.len()).then_some(())
    })
    .await;
    // With their families' types and help, for Grafana's query builder.
    let kinds = ["node_cpu_seconds_total", "node_os_info", "http_server_request_duration_seconds", "probe_success"];
    let described = eventually("the families' metadata arrives", Duration::from_secs(30), async || {
        let url = format!("{collector}/api/v1/metadata");
        let metadata: hale_core::api::Metadata = common::get_data(&client, &url, &[]).await?;
        kinds.iter().map(|name| Some(metadata.get(*name)?.first()?.kind.clone())).collect::<Option<Vec<_>>>()
    })
    .await;
    assert_eq!(described, ["counter", "gauge", "histogram", "gauge"], "host, the shop's scraped histogram, a probe");

    // token → publish → get → search finds it.
    let admin = token(&client, &gateway, "admin", "hale-admin").await;
    let shopper = token(&client, &gateway, "shopper", "hale-shopper").await;
    let teapot = json!({"name": "Zephyr teapot", "description": "Glass teapot with infuser", "price_cents": 3100, "stock": 2, "tags": ["kitchen", "tea"]});
    let product: Product =
        json_of(client.post(format!("{gateway}/api/products")).bearer_auth(&admin).json(&teapot), "publish").await;
    let id = product.id;
    let fetched: Product = json_of(client.get(format!("{gateway}/api/products/{id}")), "get").await;
    assert_eq!(fetched.name, "Zephyr teapot");
    let published = Instant::now();
    eventually("search finds the new product", Duration::from_secs(10), async || {
        let r: SearchResults =
            client.get(format!("{gateway}/api/search?q=zephyr")).send().await.ok()?.json().await.ok()?;
        (r.hits.first().map(|h| h.id) == Some(id)).then_some(())
    })
    .await;
    eprintln!("published → findable in {:?}", published.elapsed());

    // buy → same key, same order → out of stock is 409.
    let address = "77 Unforgettable Road, Plaintextville";
    let buy = |key: &str, quantity: i64| {
        client
            .post(format!("{gateway}/api/orders"))
            .bearer_auth(&shopper)
            .header("idempotency-key", key)
            .json(&json!({"items": [{"product_id": id, "quantity": quantity}], "shipping_address": address, "card_number": "4000 0566 5566 5556"}))
            .send()
    };
    let first = buy("e2e-1", 1).await.expect("buy");
    assert_eq!(first.status(), 201);
    let first: OrderView = first.json().await.expect("an order");
    assert_eq!((first.status.as_str(), first.total_cents), ("confirmed", 3100));
    let again = buy("e2e-1", 1).await.expect("buy again");
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<OrderView>().await.expect("an order").id, first.id);
    let too_many = buy("e2e-2", 2).await.expect("buy more");
    assert_eq!(too_many.status(), 409);
    let order_url = format!("{gateway}/api/orders/{}", first.id);
    let order: OrderView = json_of(client.get(order_url).bearer_auth(&shopper), "get order").await;
    assert_eq!(order.card_number, "**** **** **** 5556");

    // The cluster view: every node with its agent up, every service with ready replicas.
    let view = eventually("cluster view complete", Duration::from_secs(30), async || {
        let view = common::cluster_view(&client, &collector).await?;
        let nodes_up = view.nodes.iter().filter(|n| n.agent_up && n.memory_used_ratio.is_some()).count();
        let all_ready = ["auth", "catalog", "gateway", "orders", "search"]
            .iter()
            .all(|s| view.services.iter().any(|v| v.service == *s && v.ready_replicas >= 1));
        (nodes_up == effective.nodes.len() && all_ready).then_some(view)
    })
    .await;
    let search = view.services.iter().find(|s| s.service == "search").expect("search");
    assert_eq!(search.replicas.len(), 2, "{search:?}");

    // The orders' own log lines reach the collector through the agents.
    eventually("order logs in the collector", Duration::from_secs(30), async || {
        let query = [("service", "orders"), ("contains", "order placed"), ("limit", "5")];
        let lines: Vec<LogLine> = common::get_data(&client, &format!("{collector}/api/v1/logs"), &query).await?;
        (!lines.is_empty()).then_some(())
    })
    .await;

    // Databases, WALs, queues, logs, the audit log and secrets: the owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::symlink_metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700, "the data dir");
        let files = files_under(&data_dir);
        assert!(files.iter().any(|f| f.ends_with("orders.db")), "the walk reaches the orders database");
        for file in &files {
            assert_eq!(mode(file) & 0o077, 0, "{} is open to others: {:o}", file.display(), mode(file));
            let parent = file.parent().expect("parent");
            assert_eq!(mode(parent) & 0o077, 0, "{} is open to others", parent.display());
        }
    }

    // No plain-text address or card number anywhere under the data dir.
    for file in files_under(&data_dir) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for secret in [address.as_bytes(), b"4000056655665556", b"4000 0566 5566 5556"] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret), "plain text in {}", file.display());
        }
    }

    // 401 / 403 / 400 / 413 through the gateway; the bad JSON is told why.
    let products = format!("{gateway}/api/products");
    let refused = [
        (client.post(format!("{gateway}/api/orders")).json(&json!({})), 401),
        (client.post(&products).bearer_auth(&shopper).json(&json!({"name": "x", "price_cents": 1})), 403),
        (client.post(&products).bearer_auth(&admin).header("content-type", "application/json").body("{not json"), 400),
        (client.post(&products).bearer_auth(&admin).json(&json!({"name": "x".repeat(200_000)})), 413),
    ];
    for (request, status) in refused {
        let r = request.send().await.unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(r.status(), status);
        if status == 400 {
            let _: ErrorBody = r.json().await.expect("an error body with a message");
        }
    }

    // kill -9 a search replica: searches keep succeeding through the gateway.
    let victim = pid_of(&data_dir, "search-1").expect("search-1 pid");
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().expect("kill").success());
    for i in 0..40 {
        let r = client.get(format!("{gateway}/api/search?q=lamp")).send().await.expect("search");
        assert_eq!(r.status(), 200, "search {i} after kill -9 failed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Promote the standby: writes go to it, the old primary refuses them.
    let admin_api = hale_client::Gateway::new(&gateway, &effective.secrets.admin_token).expect("gateway client");
    let promoted = admin_api.promote(&url_of("catalog-2"), None).await.expect("promote");
    assert_eq!((promoted.role, promoted.epoch), (Role::Primary, 2));
    let new_id =
        eventually("a write through the gateway lands on the new primary", Duration::from_secs(10), async || {
            let r = client
                .post(format!("{gateway}/api/products"))
                .bearer_auth(&admin)
                .json(&json!({"name": "After failover", "price_cents": 100, "stock": 1}))
                .send()
                .await
                .ok()?;
            if r.status() != 201 {
                return None;
            }
            r.json::<Product>().await.ok().map(|p| p.id)
        })
        .await;
    let on_new: Product = json_of(client.get(format!("{}/api/products/{new_id}", url_of("catalog-2"))), "get").await;
    assert_eq!(on_new.name, "After failover");
    let r = client
        .post(format!("{}/api/products", url_of("catalog-1")))
        .bearer_auth(&admin)
        .json(&json!({"name": "Split brain", "price_cents": 1}))
        .send()
        .await
        .expect("write to old primary");
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<ErrorBody>().await.expect("json").error.code, "fenced");

    // SIGTERM: everything stops, nothing is left behind.
    let mut child = cluster.child.take().expect("child");
    let pid = child.id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill").success());
    let status =
        eventually("hale up stops on SIGTERM", Duration::from_secs(60), async || child.try_wait().expect("wait")).await;
    assert!(status.success(), "hale up exited with {status}");
    let leftovers = eventually("no process left behind", Duration::from_secs(5), async || {
        let left = pids_under(&data_dir);
        left.is_empty().then_some(left)
    })
    .await;
    assert!(leftovers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hale_up_killed_with_sigkill_leaves_no_orphans() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut cluster, _, _) = start(tmp.path(), 2).await;
    let data_dir = cluster.data_dir.clone();
    assert!(pids_under(&data_dir).len() >= 10, "nine replicas and the load generator run");
    let mut child = cluster.child.take().expect("child");
    child.kill().expect("SIGKILL hale up");
    child.wait().expect("reap");
    eventually("children die with their parent", Duration::from_secs(15), async || {
        pids_under(&data_dir).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_errors_in_orders_page_the_checkout_slo_through_a_signed_webhook() {
    const SECRET: &str = "up-test-webhook-secret";
    // A webhook receiver that keeps what it is sent, with the time it arrived.
    let (hook, got) = common::receiver("/hook").await;

    let tmp = tempfile::tempdir().expect("tmp");
    let extra =
        vec!["--alert-webhook".to_string(), format!("http://{hook}/hook"), "--webhook-secret".into(), SECRET.into()];
    let (cluster, _gateway, _prefix, collector) = start_with(tmp.path(), 20, &extra).await;
    let client = reqwest::Client::new();
    // Checkout traffic must be flowing and measured before the fault.
    eventually("checkout SLO measured", Duration::from_secs(60), async || {
        (slo_status(&client, &collector, "checkout-availability").await? == SloStatus::Ok).then_some(())
    })
    .await;

    let config = effective_config(&cluster.data_dir);
    let injected = Instant::now();
    for replica in config.instances().into_iter().filter(|i| i.service == ServiceKind::Orders) {
        let r = client
            .post(format!("http://{}/admin/chaos", replica.listen))
            .bearer_auth(&config.secrets.admin_token)
            .json(&json!({"error_rate": 1.0, "duration_secs": 60}))
            .send()
            .await
            .expect("chaos");
        assert!(r.status().is_success(), "chaos on {}: {}", replica.name, r.status());
    }
    let page = eventually("checkout SLO page webhook", Duration::from_secs(60), async || {
        let got = got.lock().expect("lock");
        got.iter().find_map(|(at, headers, body)| {
            let payload: WebhookPayload = serde_json::from_slice(body).ok()?;
            let alert = payload.alerts.into_iter().find(|a| {
                let label = |name: &str| a.labels.get(name).map(String::as_str);
                label("alertname") == Some("CheckoutAvailabilitySLO")
                    && label("sloth_severity") == Some("page")
                    && a.status == NotifyStatus::Firing
            })?;
            let signature = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|h| h.to_str().ok());
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
            hale_core::webhook::verify(SECRET.as_bytes(), signature, body, now).expect("signature verifies");
            Some((*at, alert))
        })
    })
    .await;
    println!("errors injected into orders -> checkout SLO page webhook: {:?}", page.0.duration_since(injected));
    assert_eq!(page.1.labels.get("sloth_service").map(String::as_str), Some("orders"));
    assert_eq!(page.1.labels.get("severity").map(String::as_str), Some("page"));
    assert_eq!(slo_status(&client, &collector, "checkout-availability").await, Some(SloStatus::Page));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_search_replica_is_restarted_by_the_healer_and_verified() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, _gateway, _prefix, collector) = start_with(tmp.path(), 5, &[]).await;
    let config = effective_config(&cluster.data_dir);
    let healer = format!("http://{}", config.healer.listen);
    let client = reqwest::Client::new();
    let target = config.instances().into_iter().find(|i| i.name == "search-1").expect("search-1");
    // Every replica seen ready first, so a failure is a ReplicaDown.
    seen_ready(&client, &collector, "search-1").await;
    let pid_before = pid_of(&cluster.data_dir, "search-1").expect("search-1 runs");
    let hung = Instant::now();
    chaos(&cluster.data_dir, &["hang", "search-1", "--duration", "120s"]);
    let action = eventually("a verified restart", Duration::from_secs(60), async || {
        let actions = healer_actions(&client, &healer).await?;
        actions.into_iter().find(|a| on(a, "search-1") && a.status == ActionStatus::Succeeded)
    })
    .await;
    println!("search-1 hung -> restarted by the healer and verified in {:?}", hung.elapsed());
    assert_eq!(action.kind, ActionKind::Restart);
    assert_eq!(action.policy, "restart-unready-replica");
    let pid_after = pid_of(&cluster.data_dir, "search-1").expect("search-1 runs again");
    assert_ne!(pid_after, pid_before, "a new process");
    let r = client.get(format!("http://{}/readyz", target.listen)).send().await.expect("readyz");
    assert_eq!(r.status(), 200, "the new search-1 is ready");
    let ready: Value = r.json().await.expect("readyz json");
    assert_eq!((ready["status"].as_str(), ready["instance"].as_str()), (Some("ready"), Some("search-1")), "{ready}");
    let audit = std::fs::read_to_string(cluster.data_dir.join("healer").join("audit.jsonl")).expect("audit");
    // The audit log is the healer's free-form record: read as JSON.
    let id = action.id.as_str();
    let steps: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action_id"] == id)
        .filter_map(|r| r["event"].as_str().map(str::to_string))
        .collect();
    assert_eq!(steps, ["planned", "acting", "acted", "verified"]);
    let metrics = client.get(format!("{healer}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_healer_actions_total{action=\"restart\",result=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("hale_healer_mttr_seconds_count 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hale_chaos_kills_replicas_and_takes_nodes_down_and_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (cluster, _gateway, _prefix, _collector) = start_with(tmp.path(), 0, &[]).await;
    let config = effective_config(&cluster.data_dir);
    let chaos = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hale"))
            .arg("chaos")
            .args(args)
            .arg("--data-dir")
            .arg(&cluster.data_dir)
            .output()
            .expect("hale chaos")
    };
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
    let search2 = config.instances().into_iter().find(|i| i.name == "search-2").expect("search-2");
    let before = pid_of(&cluster.data_dir, "search-2");
    let out = chaos(&["kill", "search-2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let killed = Instant::now();
    eventually("search-2 back", Duration::from_secs(30), async || {
        let ready = client.get(format!("http://{}/readyz", search2.listen)).send().await.ok()?.status().is_success();
        (ready && pid_of(&cluster.data_dir, "search-2") != before).then_some(())
    })
    .await;
    println!("kill -9 search-2 -> ready again in {:?}", killed.elapsed());

    let node3 = config.nodes.iter().find(|n| n.name == "node-3").expect("node-3");
    let agent = format!("http://{}/healthz", config.agent_listen(node3));
    let out = chaos(&["node-down", "node-3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(client.get(&agent).send().await.is_err(), "a frozen agent answers nothing");
    let out = chaos(&["node-up", "node-3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("node-3's agent back", Duration::from_secs(10), async || {
        client.get(&agent).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;
    let out = chaos(&["hang", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no replica \"nobody\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_catalog_primarys_node_fails_over_and_keeps_every_acknowledged_write() {
    let Scenario { _tmp, cluster, gateway, collector, config, healer, client } = scenario(2, &[]).await;
    let admin = token(&client, &gateway, "admin", "hale-admin").await;
    let shopper = token(&client, &gateway, "shopper", "hale-shopper").await;
    // Publishes a product; on a 201, its id and what it must read as from then on. The
    // demo's load buys from the products it lists, so every product here ends with a stock
    // of 0 (written so, or taken by this test's own order) that no one else can change.
    let publish = async |name: String, price_cents: i64, stock: i64| -> Option<(i64, CreateProduct)> {
        let description = format!("{name}: must survive");
        let written = CreateProduct { name, description, price_cents, stock, tags: vec!["kept".into()] };
        let r = client.post(format!("{gateway}/api/products")).bearer_auth(&admin).json(&written).send().await.ok()?;
        if r.status() != 201 {
            return None;
        }
        let id = r.json::<Product>().await.ok()?.id;
        Some((id, written))
    };
    // Acknowledged writes before the fault: products, and orders that reserve stock.
    let mut products = Vec::new();
    let mut orders = Vec::new();
    for i in 0..5 {
        let ordered = i < 2;
        let (id, mut want) = publish(format!("Kept {i}"), 500 + i, i64::from(ordered)).await.expect("published");
        if ordered {
            let r = client
                .post(format!("{gateway}/api/orders"))
                .bearer_auth(&shopper)
                .header("idempotency-key", format!("failover-{i}"))
                .json(&json!({"items": [{"product_id": id, "quantity": 1}], "shipping_address": "1 Main St", "card_number": "4242 4242 4242 4242"}))
                .send()
                .await
                .expect("order");
            assert_eq!(r.status(), 201);
            let placed: OrderView = r.json().await.expect("an order");
            assert_eq!((placed.status.as_str(), placed.total_cents), ("confirmed", 500 + i));
            orders.push(placed);
            want.stock = 0;
        }
        products.push((id, want));
    }
    let primary = config
        .instances()
        .into_iter()
        .find(|i| i.service == ServiceKind::Catalog && i.role == hale_core::Role::Primary)
        .expect("primary");
    // The collector must have seen the gateway report the primary ready (so its loss is a
    // CatalogPrimaryDown) and the node's host metrics (so its silence is a NodeDown).
    eventually("the primary and its node seen at the collector", Duration::from_secs(60), async || {
        let seen = async |q: String| common::query(&client, &collector, &q).await.filter(|r| !r.is_empty()).map(|_| ());
        seen("max_over_time(shop_gateway_catalog_primary_ready[1h]) == 1".into()).await?;
        seen(format!("last_over_time(node_load1{{node=\"{}\"}}[1h])", primary.node)).await
    })
    .await;
    // A CatalogPrimaryDown while the primary is fine (a blip that passed before the healer
    // got to it): nothing is failed over, nothing escalated, and the real loss below is
    // still repaired at once (the blip does not count against the cooldown).
    let secret = std::fs::read_to_string(cluster.data_dir.join("webhook-secret")).expect("webhook secret");
    let blip = serde_json::to_vec(&json!({"alerts": [{
        "status": "firing",
        "labels": {"alertname": "CatalogPrimaryDown", "service": "catalog", "severity": "page"},
        "startsAt": "2026-11-26T00:00:00Z",
        "fingerprint": "blip",
    }]}))
    .expect("json");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let r = client
        .post(format!("{healer}/hooks/alertmanager"))
        .header(hale_core::webhook::SIGNATURE_HEADER, hale_core::webhook::sign(secret.trim().as_bytes(), now, &blip))
        .body(blip)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let skipped = eventually("the blip judged not needed", Duration::from_secs(20), async || {
        succeeded(&client, &healer, ActionKind::Failover, None).await
    })
    .await;
    assert!(skipped.detail.contains("not needed"), "{skipped:?}");
    let state = healer_state(&client, &healer).await.expect("state");
    assert_eq!(
        state.targets.get("service/catalog"),
        Some(&TargetState { actions: Vec::new(), needs_human: None }),
        "the blip neither counts nor needs a human: {state:?}"
    );
    // A writer publishing back to back from before the loss until writes are served
    // again: the writes acknowledged in the last moments before the freeze are the ones a
    // failover could lose (the standby must have confirmed each; the primary's lease
    // ran out before the standby took over).
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (writing, written) = (std::sync::Arc::new(AtomicBool::new(true)), std::sync::Arc::new(AtomicUsize::new(0)));
    let writer = {
        let (client, gateway, admin) = (client.clone(), gateway.clone(), admin.clone());
        let (writing, written_count) = (writing.clone(), written.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("Under fire {n}");
                let description = format!("{name}: must survive");
                let written = CreateProduct { name, description, price_cents: 7, stock: 0, tags: vec!["kept".into()] };
                let sent = client.post(format!("{gateway}/api/products")).bearer_auth(&admin).json(&written).send();
                match sent.await {
                    Ok(r) if r.status() == 201 => {
                        acknowledged.push((r.json::<Product>().await.expect("a product").id, written));
                        written_count.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            acknowledged
        })
    };
    eventually("the writer's first writes", Duration::from_secs(10), async || {
        (written.load(Ordering::Relaxed) >= 3).then_some(())
    })
    .await;
    chaos(&cluster.data_dir, &["node-down", &primary.node]);
    let lost = Instant::now();
    // Writes acknowledged while the node is away, each checked after the failover and
    // again after the rejoin.
    let mut during_outage = Vec::new();
    let mut n = 0;
    let first = eventually("writes served again", Duration::from_secs(60), async || {
        n += 1;
        publish(format!("After {n}"), 1000 + n, 0).await
    })
    .await;
    during_outage.push(first);
    println!("catalog primary's node lost -> writes served again in {:?}", lost.elapsed());
    writing.store(false, Ordering::Relaxed);
    let under_fire = writer.await.expect("the writer");
    println!("{} writes acknowledged by the writer around the loss", under_fire.len());
    assert!(!under_fire.is_empty(), "the writer wrote nothing");
    during_outage.extend(under_fire);
    let action = eventually("a verified failover", Duration::from_secs(60), async || {
        succeeded(&client, &healer, ActionKind::Failover, Some(&skipped.id)).await
    })
    .await;
    assert!(action.detail.contains("promoted") && action.detail.contains(&primary.name), "{action:?}");
    // Every acknowledged write is still there, as it was written.
    let after = publish("Written after the failover".into(), 2000, 0).await.expect("a write after the failover");
    during_outage.push(after);
    assert_products(&client, &gateway, &products, "after the failover").await;
    assert_products(&client, &gateway, &during_outage, "after the failover").await;
    for placed in &orders {
        let id = &placed.id;
        let r = client.get(format!("{gateway}/api/orders/{id}")).bearer_auth(&shopper).send().await.expect("get order");
        assert_eq!(r.status(), 200, "order {id}");
        assert_eq!(r.json::<OrderView>().await.expect("an order"), *placed, "order {id} as placed");
    }
    // The lost node's other replicas run elsewhere once its silence is a NodeDown.
    eventually("the lost node's replicas rescheduled", Duration::from_secs(90), async || {
        succeeded(&client, &healer, ActionKind::Reschedule, None).await
    })
    .await;
    // Another write the old primary never saw, once its node's replicas run elsewhere.
    let late = publish("Written while it was away".into(), 3000, 0).await.expect("a write while it was away");
    during_outage.push(late);
    // The node comes back: the old primary is fenced (the gateway tells it the new epoch),
    // rejoins as the new primary's standby through the healer, and catches up.
    chaos(&cluster.data_dir, &["node-up", &primary.node]);
    let old = primary.url();
    let rejoin = common::eventually_or_dump(
        "a verified rejoin",
        Duration::from_secs(60),
        async || succeeded(&client, &healer, ActionKind::Rejoin, None).await,
        async || {
            let logs = cluster.data_dir.join("logs");
            let notable = |file: &str| {
                let text = std::fs::read_to_string(logs.join(file)).unwrap_or_default();
                let lines: Vec<&str> =
                    text.lines().filter(|l| !l.contains("\"message\":\"request\"") || l.contains("/admin/")).collect();
                format!(
                    "--- {file}, not plain requests (last 40)\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            };
            let status = common::get_json(&client, &format!("{old}/admin/replication"), &[]).await;
            let ready = client.get(format!("{old}/readyz")).send().await.map(|r| r.status());
            [
                format!("--- {old}: replication {status:?}, readyz {ready:?}"),
                common::tail(&cluster.data_dir.join("healer").join("audit.jsonl"), 20),
                notable(&format!("{}.log", primary.name)),
                notable("gateway-1.log"),
            ]
            .join("\n")
        },
    )
    .await;
    assert!(on(&rejoin, &primary.name), "{rejoin:?}");
    // The catalog's replication status, as the shop's own type.
    let status: hale_shop::catalog::ReplicationStatus =
        json_of(client.get(format!("{old}/admin/replication")), "replication status").await;
    assert_eq!((status.role, status.caught_up), (hale_core::Role::Standby, true), "{status:?}");
    assert!(status.epoch >= 2, "{status:?}");
    // The rejoined standby has every write, those it missed included; the gateway still
    // serves them all.
    assert_products(&client, &old, &products, "on the rejoined standby").await;
    assert_products(&client, &old, &during_outage, "on the rejoined standby").await;
    assert_products(&client, &gateway, &products, "after the rejoin").await;
    assert_products(&client, &gateway, &during_outage, "after the rejoin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_crashes_on_every_start_is_escalated_then_left_alone() {
    const SECRET: &str = "crash-loop-test-secret";
    let (hook, escalations) = common::receiver("/escalate").await;
    let extra = vec![
        "--escalation-webhook".to_string(),
        format!("http://{hook}/escalate"),
        "--webhook-secret".into(),
        SECRET.into(),
    ];
    let Scenario { _tmp, cluster, gateway, collector, config, healer, client } = scenario(2, &extra).await;
    let target = config.instances().into_iter().find(|i| i.name == "search-2").expect("search-2");
    seen_ready(&client, &collector, "search-2").await;
    // Searches all along (the demo's load alone can leave the SLO's short window without
    // any), so the search SLO's burn rate has data whenever the healer reads it.
    let searcher = Searches::start(&client, &gateway, Duration::from_millis(100), false);
    eventually("the search SLO's burn rate measured", Duration::from_secs(60), async || {
        let q = "max(slo:current_burn_rate:ratio{sloth_service=\"search\"})";
        common::query_value(&client, &collector, q).await.filter(|b| b.is_finite()).map(|_| ())
    })
    .await;
    // Kill it and take its port: every restart now fails to bind and exits.
    let squatter = loop {
        if let Some(pid) = pid_of(&cluster.data_dir, "search-2") {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut bound = None;
        while Instant::now() < deadline {
            if let Ok(l) = std::net::TcpListener::bind(target.listen) {
                bound = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(l) = bound {
            break l;
        }
    };
    let failed = eventually("the repair fails and is escalated", Duration::from_secs(90), async || {
        let actions = healer_actions(&client, &healer).await?;
        actions.into_iter().find(|a| on(a, "search-2") && a.status == ActionStatus::Failed)
    })
    .await;
    assert_eq!(failed.kind, ActionKind::Restart);
    let (_, headers, body) = eventually("the escalation arrives", Duration::from_secs(20), async || {
        escalations.lock().expect("lock").first().cloned()
    })
    .await;
    let signature = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    hale_core::webhook::verify(SECRET.as_bytes(), signature, &body, now).expect("the escalation is signed");
    let payload: hale_core::api::WebhookPayload = serde_json::from_slice(&body).expect("a v4 payload");
    let body = Escalation::from_webhook(&payload).expect("Hale's escalation");
    assert_eq!(body.version, ESCALATION_VERSION);
    assert_eq!(body.target.instance.as_deref(), Some("search-2"));
    assert!(!body.tried.is_empty(), "{body:?}");
    // The search service's SLO burn when the restart was decided and now: numbers, since
    // searches were measured all along.
    for (key, burn) in [("burn_rate_before", body.burn_rate_before), ("burn_rate_after", body.burn_rate_after)] {
        assert!(burn.is_some_and(|b| b.is_finite() && b >= 0.0), "{key}: {body:?}");
    }
    searcher.stop().await;
    let state = healer_state(&client, &healer).await.expect("state");
    let needs_human = state.targets.get("instance/search-2").and_then(|t| t.needs_human.as_deref());
    let failed_id = &failed.id;
    assert!(needs_human.is_some_and(|h| h.starts_with(&format!("{failed_id} failed: "))), "{state:?}");
    // A new occurrence is refused: a human has to reset the target first.
    let payload = serde_json::to_vec(&json!({"alerts": [{
        "status": "firing",
        "labels": {"alertname": "ReplicaDown", "instance": "search-2", "node": target.node, "service": "search", "probe": "readyz"},
        "startsAt": "2026-11-26T00:00:00Z",
        "fingerprint": "crash-loop-again",
    }]}))
    .expect("json");
    let r = client
        .post(format!("{healer}/hooks/alertmanager"))
        .header(hale_core::webhook::SIGNATURE_HEADER, hale_core::webhook::sign(SECRET.as_bytes(), now, &payload))
        .body(payload)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    eventually("refused: needs a human", Duration::from_secs(10), async || {
        let audit = std::fs::read_to_string(cluster.data_dir.join("healer").join("audit.jsonl")).ok()?;
        audit.contains("needs a human").then_some(())
    })
    .await;
    let actions = healer_actions(&client, &healer).await.expect("actions");
    let on_target = actions.iter().filter(|a| on(a, "search-2")).count();
    assert_eq!(on_target, 1, "no further actions");
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_replicas_are_rescheduled_on_the_others() {
    let Scenario { _tmp, cluster, gateway, collector, config, healer, client } = scenario(2, &[]).await;
    // node-3 runs search-1 and the catalog standby; the primary stays up.
    let on_node3: Vec<String> = config.instances().into_iter().filter(|i| i.node == "node-3").map(|i| i.name).collect();
    assert!(on_node3.contains(&"search-1".to_string()), "{on_node3:?}");
    // The collector has seen node-3's host metrics (so their silence is a NodeDown) and
    // search-1 ready.
    eventually("node-3 and search-1 seen at the collector", Duration::from_secs(60), async || {
        let seen = async |q: &str| common::query(&client, &collector, q).await.filter(|r| !r.is_empty()).map(|_| ());
        seen("last_over_time(node_load1{node=\"node-3\"}[1h])").await?;
        seen("max_over_time(probe_success{probe=\"readyz\",instance=\"search-1\"}[1h]) == 1").await
    })
    .await;
    chaos(&cluster.data_dir, &["node-down", "node-3"]);
    let lost = Instant::now();
    let action = eventually("a verified reschedule", Duration::from_secs(90), async || {
        succeeded(&client, &healer, ActionKind::Reschedule, None).await
    })
    .await;
    println!("node-3 lost -> its replicas rescheduled and ready in {:?}: {:?}", lost.elapsed(), action.detail);
    let started = &action.started;
    assert_eq!(started.len(), 1, "search-1 moves; the catalog standby does not: {action:?}");
    assert_eq!(started[0].0, "search");
    let name = started[0].1.clone();
    assert!(!name.contains("node-3"), "{name}");
    // The gateway sends searches to it (its readiness is checked every 500 ms; two clusters
    // on two cores can make one check time out, so allow a few seconds).
    let admin_api = hale_client::Gateway::new(&gateway, &config.secrets.admin_token).expect("gateway client");
    eventually("the new replica ready in the gateway's pool", Duration::from_secs(15), async || {
        (ready_in_pool(&admin_api, &name).await? == Some(true)).then_some(())
    })
    .await;
    let r = client.get(format!("{gateway}/api/search?q=kettle")).send().await.expect("search");
    assert_eq!(r.status(), 200);
    chaos(&cluster.data_dir, &["node-up", "node-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_beyond_search_capacity_scales_search_out_then_back_in() {
    let Scenario { _tmp, cluster, gateway, collector, config, healer, client } = scenario(20, &[]).await;
    eventually("search latency SLO measured", Duration::from_secs(60), async || {
        (slo_status(&client, &collector, "latency").await? == SloStatus::Ok).then_some(())
    })
    .await;
    // Searches get heavier (100 ms of work each) and traffic surges past what the two
    // replicas can serve: each works on at most 4 at once (cluster.toml `max_in_flight`),
    // 80 searches/s between them, and 100/s come on top of the demo's load. Queues grow,
    // the latency SLO (99 % under 250 ms) pages; the work alone (100 ms) would not.
    for name in ["search-1", "search-2"] {
        chaos(&cluster.data_dir, &["latency", name, "--ms", "100", "--duration", "60s"]);
    }
    let surge = Searches::start(&client, &gateway, Duration::from_millis(10), true);
    let out = eventually("a verified scale-out", Duration::from_secs(60), async || {
        succeeded(&client, &healer, ActionKind::ScaleOut, None).await
    })
    .await;
    // The surge ends; the heavier searches stay until their fault expires.
    surge.stop().await;
    let name = out.started.first().expect("started").1.clone();
    let admin_api = hale_client::Gateway::new(&gateway, &config.secrets.admin_token).expect("gateway client");
    let in_pool = async |name: &str| -> Option<bool> { Some(ready_in_pool(&admin_api, name).await? == Some(true)) };
    eventually("the new replica serves searches", Duration::from_secs(15), async || {
        (in_pool(&name).await == Some(true)).then_some(())
    })
    .await;
    // Once the page has been quiet for the stabilization window, it is taken back.
    let back = eventually("a verified scale-in", Duration::from_secs(120), async || {
        succeeded(&client, &healer, ActionKind::ScaleIn, None).await
    })
    .await;
    assert_eq!(back.started.first().map(|s| s.1.as_str()), Some(name.as_str()));
    // The alerts a scale-in itself causes (its replica's telemetry stops) are silenced,
    // linked to the action.
    let silences = common::collector(&client, &collector).silences().await.expect("silences");
    let linked =
        silences.iter().filter(|s| s.comment.contains(&back.id) && s.status.state == SilenceState::Active).count();
    assert_eq!(linked, 3, "{silences:?}");
    assert_eq!(in_pool(&name).await, Some(false), "drained out of the pool");
    assert!(pid_of(&cluster.data_dir, &name).is_none(), "and stopped");
}
