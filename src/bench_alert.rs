//! `hale bench alert`: how long from a fault to the signed webhook that reports it, in the
//! demo cluster. Starts `hale up --headless` on a private loopback range with a webhook
//! receiver of its own, then, trial after trial, hangs one replica through its chaos
//! endpoint and times the `ReplicaDown` notification; between trials it waits for the
//! resolved notification, so every trial starts from a healthy cluster.

use std::net::SocketAddr;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hale_core::ServiceKind;
use hale_core::api::{NotifyStatus, WebhookPayload};
use hale_shop::http::chaos::ChaosRequest;

#[derive(Debug, clap::Args)]
pub struct AlertArgs {
    /// Faults to time.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// How long each fault lasts, in seconds.
    #[arg(long, default_value_t = 4)]
    pub fault_secs: u64,
}

/// Webhook bodies as they arrive, with their arrival time.
type Received = Arc<Mutex<Vec<(Instant, WebhookPayload)>>>;

const SECRET: &str = "bench-alert-webhook-secret";

async fn receiver(received: Received) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the webhook receiver")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let signature = headers.get(hale_core::webhook::SIGNATURE_HEADER).and_then(|h| h.to_str().ok());
                if let Err(e) = hale_core::webhook::verify(SECRET.as_bytes(), signature, &body, now) {
                    return (axum::http::StatusCode::UNAUTHORIZED, e.to_string());
                }
                if let Ok(v) = serde_json::from_slice::<WebhookPayload>(&body) {
                    received.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), v));
                }
                (axum::http::StatusCode::OK, String::new())
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// The first notification after `since` about `instance`'s ReplicaDown in `status`.
fn find(received: &Received, since: Instant, instance: &str, status: NotifyStatus) -> Option<Instant> {
    let got = received.lock().unwrap_or_else(|p| p.into_inner());
    got.iter().filter(|(at, _)| *at >= since).find_map(|(at, payload)| {
        payload
            .alerts
            .iter()
            .any(|a| {
                a.labels.get("alertname").map(String::as_str) == Some("ReplicaDown")
                    && a.labels.get("instance").map(String::as_str) == Some(instance)
                    && a.status == status
            })
            .then_some(*at)
    })
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> Option<Instant>) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(at) = f() {
            return Ok(at);
        }
        if Instant::now() > deadline {
            bail!("no {what} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn alert(args: AlertArgs) -> Result<()> {
    let received: Received = Default::default();
    let hook = receiver(received.clone()).await?;
    let extra: Vec<String> =
        ["--load-rps", "20", "--alert-webhook", &format!("http://{hook}/hook"), "--webhook-secret", SECRET]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let cluster = crate::bench_cluster::DemoCluster::start("alert", &extra).await?;
    let config = &cluster.config;
    // Replicas whose loss pages and nothing else: search and auth (a catalog primary
    // would fail over, the gateway is alone).
    let targets: Vec<_> = config
        .instances()
        .into_iter()
        .filter(|i| matches!(i.service, ServiceKind::Search | ServiceKind::Auth))
        .collect();
    // Let every replica be seen ready, so ReplicaDown (not ReplicaNeverReady) applies.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let client = hale_client::tls::builder().timeout(Duration::from_secs(5)).build()?;
    let mut latencies = Vec::new();
    for trial in 0..args.trials {
        let target = &targets[trial % targets.len()];
        let injected = Instant::now();
        let r = client
            .post(format!("http://{}/admin/chaos", target.listen))
            .bearer_auth(&config.secrets.admin_token)
            .json(&ChaosRequest { hang: true, duration_secs: Some(args.fault_secs), ..Default::default() })
            .send()
            .await
            .with_context(|| format!("injecting a hang into {}", target.name))?;
        if !r.status().is_success() {
            bail!("chaos on {} answered {}", target.name, r.status());
        }
        let fired = wait_for("ReplicaDown webhook", Duration::from_secs(30), || {
            find(&received, injected, &target.name, NotifyStatus::Firing)
        })
        .await?;
        let latency = fired.duration_since(injected);
        eprintln!(
            "trial {:>2}: {} hung -> signed ReplicaDown webhook in {:.2} s",
            trial + 1,
            target.name,
            latency.as_secs_f64()
        );
        latencies.push(latency.as_secs_f64());
        wait_for("resolved webhook", Duration::from_secs(60), || {
            find(&received, fired, &target.name, NotifyStatus::Resolved)
        })
        .await?;
    }
    crate::bench_stats::print_summary("fault -> signed webhook", latencies);
    Ok(())
}
