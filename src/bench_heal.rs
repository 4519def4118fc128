//! `hale bench heal`: the healer's figures in demo clusters of its own, over many trials:
//! kill -9 → replica ready again (the agent's restart), hang → restarted by the healer and
//! verified, and the catalog primary's node lost → writes served again (a fresh cluster
//! per failover trial: the old primary stays fenced).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hale_core::api::{ActionKind, ActionStatus};
use hale_shop::catalog::CreateProduct;
use hale_shop::http::chaos::ChaosRequest;

use crate::bench_cluster::DemoCluster;

#[derive(Debug, clap::Args)]
pub struct HealArgs {
    /// Kill and hang trials, each.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Failover trials (a cluster each).
    #[arg(long, default_value_t = 3)]
    pub failover_trials: usize,
}

/// The shipped policies (what `hale up` runs), with their rate limits opened so every
/// trial is acted on: the bench measures the repair, not the cooldown between repairs.
fn bench_policies() -> Result<String> {
    let mut file: serde_norway::Value = serde_norway::from_str(crate::up::DEFAULT_POLICIES)?;
    let defaults = file
        .get_mut("defaults")
        .and_then(serde_norway::Value::as_mapping_mut)
        .context("config/policies.yaml has no defaults block")?;
    defaults.insert("cooldown".into(), "1s".into());
    defaults.insert("window".into(), "1m".into());
    defaults.insert("max_actions".into(), 1000.into());
    defaults.insert("max_service_actions".into(), 1000.into());
    let text = serde_norway::to_string(&file)?;
    hale_healer::policy::PolicyFile::parse(&text).context("the bench's policies")?;
    Ok(text)
}

async fn until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(policies: &std::path::Path) -> Result<DemoCluster> {
    let extra = ["--load-rps", "5", "--policies", &policies.display().to_string()].map(str::to_string);
    let cluster = DemoCluster::start("heal", &extra).await?;
    // Every replica seen ready first, so a failure is a ReplicaDown.
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(cluster)
}

pub async fn heal(args: HealArgs) -> Result<()> {
    let policies = std::env::temp_dir().join(format!("hale-bench-heal-policies-{}.yaml", std::process::id()));
    std::fs::write(&policies, bench_policies()?)?;
    let client = hale_client::tls::builder().timeout(Duration::from_secs(2)).build()?;
    let (mut killed, mut hung, mut failed_over) = (Vec::new(), Vec::new(), Vec::new());
    {
        let cluster = start(&policies).await?;
        let config = &cluster.config;
        let targets: Vec<_> = config
            .instances()
            .into_iter()
            .filter(|i| ["auth-1", "auth-2", "search-1", "search-2"].contains(&i.name.as_str()))
            .collect();
        let ready = |addr: std::net::SocketAddr| {
            let client = client.clone();
            async move { client.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) }
        };
        for trial in 0..args.trials {
            let target = &targets[trial % targets.len()];
            let node = config.nodes.iter().find(|n| n.name == target.node).ok_or_else(|| anyhow::anyhow!("no node"))?;
            let agent = hale_client::Agent::new(&format!("http://{}", config.agent_listen(node)))?;
            let list = agent.processes().await.with_context(|| format!("the processes of {}", node.name))?;
            let pid = list.processes.iter().find(|p| p.name == target.name).and_then(|p| p.pid);
            let Some(pid) = pid else { bail!("{} has no pid", target.name) };
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL)?;
            let t0 = Instant::now();
            let back =
                until("ready after kill -9", Duration::from_secs(30), async || ready(target.listen).await).await?;
            let s = back.duration_since(t0).as_secs_f64();
            eprintln!("kill -9 {:<9} -> ready again in {s:.2} s", target.name);
            killed.push(s);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let healer = hale_client::Healer::new(&format!("http://{}", config.healer.listen), None)?;
        for trial in 0..args.trials {
            let target = &targets[trial % targets.len()];
            let since = hale_core::time::now_ms();
            let t0 = Instant::now();
            let r = client
                .post(format!("http://{}/admin/chaos", target.listen))
                .bearer_auth(&config.secrets.admin_token)
                .json(&ChaosRequest { hang: true, duration_secs: Some(120), ..Default::default() })
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("chaos on {}: {}", target.name, r.status());
            }
            let done = until("restarted and verified", Duration::from_secs(60), async || {
                healer.actions().await.is_ok_and(|list| {
                    list.actions.iter().any(|a| {
                        a.target.instance.as_deref() == Some(target.name.as_str())
                            && a.status == ActionStatus::Succeeded
                            && a.created_ms >= since
                    })
                })
            })
            .await?;
            let s = done.duration_since(t0).as_secs_f64();
            eprintln!("hang {:<12} -> restarted and verified in {s:.2} s", target.name);
            hung.push(s);
            until("ready", Duration::from_secs(30), async || ready(target.listen).await).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    for _ in 0..args.failover_trials {
        let cluster = start(&policies).await?;
        let config = &cluster.config;
        let gateway = format!("http://{}", config.gateway.listen);
        let token = crate::seed::admin_token(&client, &gateway, config).await?;
        let primary = config
            .instances()
            .into_iter()
            .find(|i| i.service == hale_core::ServiceKind::Catalog && i.role == hale_core::Role::Primary)
            .ok_or_else(|| anyhow::anyhow!("no primary"))?;
        // At a random moment within a second, so the trials sample every phase of the
        // gateway's checks, the scrapes and the rule evaluations (all periodic).
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1000)).await;
        let args = crate::chaos::ChaosArgs::node_down(&primary.node, &cluster.data_dir());
        crate::chaos::run(args).await?;
        let t0 = Instant::now();
        let t0_ms = hale_core::time::now_ms();
        let back = first_write_served(&client, &gateway, &token).await?;
        let s = back.duration_since(t0).as_secs_f64();
        eprintln!("{}'s node {} lost -> writes served again in {s:.2} s", primary.name, primary.node);
        // Where the time went, from the healer's record of the failover.
        let healer = hale_client::Healer::new(&format!("http://{}", config.healer.listen), None)?;
        let actions = healer.actions().await.context("the healer's actions")?;
        if let Some(a) = actions.actions.iter().find(|a| a.kind == ActionKind::Failover) {
            let at = |ms: Option<i64>| ms.map_or("?".to_string(), |ms| format!("{:.2}", (ms - t0_ms) as f64 / 1000.0));
            let active = hale_core::time::parse_rfc3339(&a.alert.starts_at);
            let unready = gateway_marked_unready(&cluster.data_dir(), &primary.name, t0_ms);
            eprintln!(
                "  gateway: primary unready +{} s, alert active (pending) +{} s, received by the healer +{} s, \
                 failover decided +{} s, writes +{s:.2} s",
                at(unready),
                at(active),
                at(Some(a.alert.received_ms)),
                at(Some(a.created_ms))
            );
        }
        failed_over.push(s);
        let up = crate::chaos::ChaosArgs::node_up(&primary.node, &cluster.data_dir());
        crate::chaos::run(up).await?;
    }
    let _ = std::fs::remove_file(&policies);
    crate::bench_stats::print_summary("kill -9 -> replica ready again", killed);
    crate::bench_stats::print_summary("hang -> restarted by the healer and verified", hung);
    crate::bench_stats::print_summary("catalog primary's node lost -> writes served again", failed_over);
    Ok(())
}

/// When a write is served again: a new attempt every 20 ms, each on its own (a write
/// sent to the frozen primary before the gateway gave up on it hangs until its timeout,
/// and waiting for it would measure the client's timeout, not the failover); the moment
/// the first 201 arrives.
async fn first_write_served(client: &reqwest::Client, gateway: &str, token: &str) -> Result<Instant> {
    let mut attempts = tokio::task::JoinSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0.. {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() > deadline {
                    bail!("writes served again: not within 60 s");
                }
                let body = CreateProduct {
                    name: format!("bench {n}"),
                    description: "x".into(),
                    price_cents: 1,
                    stock: 1,
                    tags: Vec::new(),
                };
                let request = client.post(format!("{gateway}/api/products")).bearer_auth(token).json(&body);
                attempts.spawn(async move { request.send().await.is_ok_and(|r| r.status().as_u16() == 201) });
            }
            Some(Ok(true)) = attempts.join_next(), if !attempts.is_empty() => return Ok(Instant::now()),
        }
    }
    unreachable!("the loop returns or fails")
}

/// When the gateway took `instance` out of its pool (its log line), at or after `since_ms`.
fn gateway_marked_unready(data_dir: &std::path::Path, instance: &str, since_ms: i64) -> Option<i64> {
    let text = std::fs::read_to_string(data_dir.join("logs").join("gateway-1.log")).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["instance"] == instance && v["message"] == "replica failed its readiness check")
        .filter_map(|v| hale_core::time::parse_rfc3339(v["timestamp"].as_str()?))
        .find(|ms| *ms >= since_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hale_healer::policy::PolicyFile;

    #[test]
    fn the_bench_runs_the_shipped_policies_with_their_limits_opened() {
        let shipped = PolicyFile::parse(crate::up::DEFAULT_POLICIES).expect("shipped policies");
        let bench = PolicyFile::parse(&bench_policies().expect("bench policies")).expect("parse");
        let names = |f: &PolicyFile| f.policies.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&bench), names(&shipped));
        assert!(bench.defaults.max_actions >= 1000 && bench.defaults.max_service_actions >= 1000);
        assert_eq!(bench.defaults.cooldown.0, Duration::from_secs(1));
        assert_eq!(bench.defaults.max_staleness, shipped.defaults.max_staleness, "freshness stays as shipped");
    }
}
