//! On real (virtual) hosts: `hale up --netns` runs every node in a network namespace of
//! its own, wired to the lab's switch, and `hale chaos partition|heal|delay` breaks the
//! network itself — the process keeps running, which a SIGSTOP cannot show. Needs root
//! and network namespaces; each test says SKIPPED and passes where they cannot be made.
//!
//! The test's own clients run inside the lab too (a thread that joins a host's namespace
//! with a runtime of its own): nothing goes to an address outside it. The partitioned
//! primary runs the whole lab over TLS and mutual TLS (`hale up --netns --tls`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::eventually;
use common::up::{Cluster, assert_products, chaos, client_of, on_host};
use hale_core::api::{Action, ActionKind, ActionStatus, LogLine};
use hale_core::{Role, ServiceKind};
use hale_shop::auth::TokenResponse;
use hale_shop::catalog::CreateProduct;
use hale_shop::catalog::store::Product;

fn lab_or_skip() -> bool {
    match hale_netlab::ns::check_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: network namespaces cannot be made here ({e}); the partition tests need them");
            false
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn token(client: &reqwest::Client, base: &str) -> String {
    let form = [("grant_type", "password"), ("username", "admin"), ("password", "hale-admin")];
    let r = client.post(format!("{base}/oauth/token")).form(&form).send().await.expect("token request");
    r.json::<TokenResponse>().await.expect("a token").access_token
}

/// Publishes a product at `base` (the gateway, or a catalog replica directly); on a 201,
/// its id and what it must read as from then on.
async fn publish(client: &reqwest::Client, base: &str, token: &str, name: String) -> Option<(i64, CreateProduct)> {
    let description = format!("{name}: must survive the partition");
    let written = CreateProduct { name, description, price_cents: 700, stock: 0, tags: vec!["kept".into()] };
    let r = client.post(format!("{base}/api/products")).bearer_auth(token).json(&written).send().await.ok()?;
    if r.status() != 201 {
        return None;
    }
    Some((r.json::<Product>().await.ok()?.id, written))
}

async fn actions(client: &reqwest::Client, healer: &str) -> Vec<Action> {
    let r = client.get(format!("{healer}/api/v1/actions")).send().await;
    match r {
        Ok(r) => r.json::<hale_core::api::ActionList>().await.map(|l| l.actions).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn succeeded(client: &reqwest::Client, healer: &str, kind: ActionKind) -> Option<Action> {
    actions(client, healer).await.into_iter().find(|a| a.kind == kind && a.status == ActionStatus::Succeeded)
}

fn audit(data_dir: &Path) -> String {
    common::tail(&data_dir.join("healer").join("audit.jsonl"), 30)
}

/// A partition of the catalog primary's host: failover, writes through the gateway during
/// and after it, and a client on the old primary's own host still writing to it; heal,
/// rejoin; every acknowledged write read back.
///
/// The client beside the old primary found a split brain here: semi-synchronous
/// replication fell back to acknowledging alone once the standby stopped polling, and the
/// failover on the other side of the cut then lost three acknowledged writes. Now a
/// primary acknowledges alone only when its standby is out of its sync set, which only
/// the healer (the failover authority, which then never promotes that standby) decides.
#[test]
fn a_partitioned_catalog_primary_fails_over_and_no_acknowledged_write_is_lost() {
    if !lab_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    // Over TLS and mutual TLS, as a fleet on a real network would run.
    let mut cluster = runtime().block_on(Cluster::start_netns(tmp.path(), 2, &["--tls".into()]));
    let config = cluster.config();
    let primary = config
        .instances()
        .into_iter()
        .find(|i| i.service == ServiceKind::Catalog && i.role == Role::Primary)
        .expect("a primary");
    let (lab, data_dir) = (cluster.lab(), cluster.data_dir.clone());
    let (gateway, collector) = (cluster.gateway(), cluster.collector());
    let healer = config.url(config.healer.listen);
    let old_primary = primary.url();
    let node = primary.node.clone();
    let lab_for_node = lab.clone();
    on_host(&lab, "control", move || async move {
        let client = client_of(&data_dir);
        let admin = token(&client, &gateway).await;
        let mut acked = Vec::new();
        for i in 0..3 {
            acked.push(publish(&client, &gateway, &admin, format!("Before {i}")).await.expect("published"));
        }
        eventually("the primary and its node seen at the collector", Duration::from_secs(60), async || {
            let seen = async |q: String| common::query(&client, &collector, &q).await.filter(|r| !r.is_empty());
            seen("max_over_time(shop_gateway_catalog_primary_ready[1h]) == 1".into()).await?;
            seen(format!("last_over_time(node_load1{{node=\"{node}\"}}[1h])")).await
        })
        .await;

        // The primary's host is cut off; the primary itself runs on.
        chaos(&data_dir, &["partition", &node]);
        let cut = Instant::now();
        let mut n = 0;
        let first = eventually("writes served again through the gateway", Duration::from_secs(90), async || {
            n += 1;
            publish(&client, &gateway, &admin, format!("During {n}")).await
        })
        .await;
        acked.push(first);
        println!("catalog primary's host cut off -> writes served again in {:?}", cut.elapsed());
        let failover = common::eventually_or_dump(
            "a verified failover",
            Duration::from_secs(60),
            async || succeeded(&client, &healer, ActionKind::Failover).await,
            async || audit(&data_dir),
        )
        .await;
        assert!(failover.detail.contains("promoted"), "{failover:?}");
        // Where the time went, for BENCHMARKS.md beside the SIGSTOP (node-down) figures.
        let cut_ms = now_ms() as i64 - cut.elapsed().as_millis() as i64;
        println!(
            "partition -> CatalogPrimaryDown at the healer +{:.2} s, failover verified +{:.2} s",
            (failover.alert.received_ms - cut_ms) as f64 / 1000.0,
            (failover.updated_ms - cut_ms) as f64 / 1000.0
        );
        acked.push(publish(&client, &gateway, &admin, "After the failover".into()).await.expect("a write"));

        // A client on the old primary's side of the cut still reaches it, and tries to
        // write there: whatever it acknowledges must survive (it cannot reach its standby,
        // so it must not acknowledge at all).
        let (direct_base, direct_token, direct_dir) = (old_primary.clone(), admin.clone(), data_dir.clone());
        let direct_acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = direct_acks.clone();
        on_host(&lab_for_node, &node, move || async move {
            let client = client_of(&direct_dir);
            for i in 0..3 {
                if let Some(w) = publish(&client, &direct_base, &direct_token, format!("Direct {i}")).await {
                    kept.lock().expect("lock").push(w);
                }
            }
        });
        let direct_acks = direct_acks.lock().expect("lock").clone();
        println!("writes the cut-off primary acknowledged to a client on its side: {}", direct_acks.len());
        acked.extend(direct_acks);

        // Healed: the old primary learns the new epoch, is fenced, and rejoins as the
        // standby of the new primary, through the healer.
        chaos(&data_dir, &["heal", &node]);
        let rejoin = common::eventually_or_dump(
            "a verified rejoin",
            Duration::from_secs(90),
            async || succeeded(&client, &healer, ActionKind::Rejoin).await,
            async || audit(&data_dir),
        )
        .await;
        assert!(rejoin.detail.contains("rejoined"), "{rejoin:?}");
        let status: hale_shop::catalog::ReplicationStatus =
            eventually("the old primary caught up", Duration::from_secs(30), async || {
                let r = client.get(format!("{old_primary}/admin/replication")).send().await.ok()?;
                let s: hale_shop::catalog::ReplicationStatus = r.json().await.ok()?;
                s.caught_up.then_some(s)
            })
            .await;
        assert_eq!(status.role, Role::Standby, "{status:?}");
        // No acknowledged write is lost: through the gateway, and on the rejoined standby.
        assert_products(&client, &gateway, &acked, "after the rejoin, through the gateway").await;
        assert_products(&client, &old_primary, &acked, "on the rejoined old primary").await;
    });
    cluster.stop();
    assert!(
        !Path::new("/run/netns").read_dir().expect("netns").flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("hale-{}-", lab.owner))
        }),
        "the lab is removed when hale up stops"
    );
}

/// (ms, message) of every line of a replica's JSON log file.
fn file_lines(path: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let ts = v.get("timestamp")?.as_str()?;
            let ms = u64::try_from(hale_core::time::parse_rfc3339(ts)?).ok()?;
            Some((ms, v.get("message")?.as_str()?.to_string()))
        })
        .collect()
}

#[test]
fn a_partitioned_node_buffers_its_data_has_its_catalog_standby_released_and_a_slow_node_is_not_down() {
    if !lab_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cluster = runtime().block_on(Cluster::start_netns(tmp.path(), 2, &[]));
    let (lab, data_dir) = (cluster.lab(), cluster.data_dir.clone());
    let (collector, gateway) = (cluster.collector(), cluster.gateway());
    let config = cluster.config();
    let healer = config.url(config.healer.listen);
    let standby = config.instances().into_iter().find(|i| i.name == "catalog-2").expect("catalog-2").url();
    on_host(&lab, "control", move || async move {
        let client = client_of(&data_dir);
        let up_of = "up{instance=\"search-1\"}";
        eventually("node-3's replicas scraped", Duration::from_secs(60), async || {
            common::query(&client, &collector, up_of).await.filter(|r| !r.is_empty())
        })
        .await;

        let admin = token(&client, &gateway).await;
        // Cut off for 10 s — less than NodeDown's 15 s, so only the buffering is seen.
        // node-3 also runs the catalog's standby: writes block on it until the healer
        // releases it from the primary's sync set, then are acknowledged alone.
        chaos(&data_dir, &["partition", "node-3"]);
        let cut_at = now_ms();
        let cut = Instant::now();
        let mut n = 0;
        eventually(
            "writes acknowledged alone once the cut-off standby is released",
            Duration::from_secs(10),
            async || {
                n += 1;
                publish(&client, &gateway, &admin, format!("While node-3 is away {n}")).await
            },
        )
        .await;
        println!("catalog standby's host cut off -> writes acknowledged again in {:?}", cut.elapsed());
        // (The primary answers the write the moment it is released; the healer records
        // its account of the release a moment later.)
        eventually("the healer's account of the release", Duration::from_secs(10), async || {
            let all = actions(&client, &healer).await;
            all.into_iter().find(|a| a.kind == ActionKind::Failover && a.detail.contains("released"))
        })
        .await;
        std::thread::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed()));
        chaos(&data_dir, &["heal", "node-3"]);
        let healed_at = now_ms();
        // Back: the standby catches up and joins the new sync set.
        eventually("catalog-2 back in the sync set", Duration::from_secs(30), async || {
            let r = client.get(format!("{standby}/admin/replication")).send().await.ok()?;
            let s: hale_shop::catalog::ReplicationStatus = r.json().await.ok()?;
            (s.in_sync == Some(true) && s.sync_stamp.is_some_and(|st| st.generation >= 1)).then_some(())
        })
        .await;
        // After healing, what was scraped during the cut arrives: one sample a second
        // throughout, no gap.
        let window = format!("{up_of}[{}s]", (now_ms() - cut_at) / 1000 + 10);
        let samples = eventually("the cut's samples delivered", Duration::from_secs(60), async || {
            let m = common::query_matrix(&client, &collector, &window).await?;
            let ts: Vec<f64> = m.first()?.values.iter().map(|p| p.0).collect();
            let inside: Vec<f64> = ts
                .iter()
                .copied()
                .filter(|t| *t * 1000.0 >= cut_at as f64 && *t * 1000.0 <= healed_at as f64)
                .collect();
            let gapless = inside.windows(2).all(|w| w[1] - w[0] < 2.5);
            (inside.len() >= 8 && gapless).then_some(inside)
        })
        .await;
        assert!(samples.windows(2).all(|w| w[1] > w[0]), "each sample once, in order: {samples:?}");

        // Every log line written on node-3 is stored exactly once, the cut's included.
        let logs = data_dir.join("logs");
        let stored_lines = async |instance: &str| -> Option<Vec<(u64, String)>> {
            let q = [("instance", instance), ("limit", "5000")];
            let url = format!("{collector}/api/v1/logs");
            let lines: Vec<LogLine> = common::get_data(&client, &url, &q).await?;
            Some(lines.into_iter().map(|l| (l.time_unix_nano / 1_000_000, l.message)).collect())
        };
        let mut during = 0;
        for instance in ["search-1", "catalog-2"] {
            let path = logs.join(format!("{instance}.log"));
            let stored = eventually(&format!("{instance}'s lines stored"), Duration::from_secs(30), async || {
                let mut want = file_lines(&path);
                let mut got = stored_lines(instance).await?;
                want.sort();
                got.sort();
                (want == got).then_some(want)
            })
            .await;
            during += stored.iter().filter(|(ms, _)| (cut_at..=healed_at).contains(ms)).count();
        }
        assert!(during > 0, "lines were written during the cut, so their delivery was tested");

        // A slow node is not a down one: 150 ms on every frame node-1 sends, for longer
        // than NodeDown's 15 s window.
        chaos(&data_dir, &["delay", "node-1", "--ms", "150"]);
        let slow_until = Instant::now() + Duration::from_secs(25);
        while Instant::now() < slow_until {
            let alerts = common::alerts(&client, &collector).await.unwrap_or_default();
            let down = alerts.iter().find(|a| a.labels.get("alertname").is_some_and(|n| n == "NodeDown"));
            assert!(down.is_none(), "NodeDown on a node that is only slow: {down:?}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        chaos(&data_dir, &["delay", "node-1", "--ms", "0"]);
        let acted = actions(&client, &healer).await;
        assert!(!acted.iter().any(|a| a.kind == ActionKind::Reschedule), "nothing moved off a slow node: {acted:?}");
    });
    cluster.stop();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}
