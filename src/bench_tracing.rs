//! `hale bench tracing`: what tracing costs the shop — the same open-loop load through the
//! gateway of a demo cluster with tracing on (the default sampling) and with it off
//! (`hale up --no-traces`), in pairs whose order alternates, so drift on a shared machine
//! falls on both sides.
//!
//! Each run reports the load's latency quantiles (every route together) and the CPU time
//! the cluster's processes spent during the load, per request: the shop's services
//! (where the spans are made), the agents, the collector (which stores them) and the
//! healer. CPU per request is the steadier figure: on a machine whose cores also run the
//! load generator, p99 moves with whatever else is scheduled.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::bench_cluster::DemoCluster;
use crate::bench_logs::cpu_seconds;

#[derive(Debug, clap::Args)]
pub struct TracingArgs {
    /// Requests a second at the gateway (1,500 is 1,000 journeys/s of the default mix).
    #[arg(long, default_value_t = 1500)]
    pub rps: u32,
    /// How long each run's measured load lasts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load before measuring, after the cluster is up (connections, caches, the first
    /// export batches).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Pairs of runs (on and off), alternating which goes first.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// The "on" side's share of traces sampled (`hale up --trace-sample-ratio`); its
    /// default when not given.
    #[arg(long)]
    pub sample_ratio: Option<f64>,
}

/// What one run measured.
struct Run {
    traces: bool,
    requests: u64,
    errors: u64,
    rate: f64,
    latency_us: Histogram<u64>,
    /// CPU seconds during the load, by component kind.
    cpu: BTreeMap<&'static str, f64>,
}

impl Run {
    fn cpu_ms_per_request(&self, kind: &str) -> f64 {
        let seconds = if kind == "all" { self.cpu.values().sum() } else { self.cpu.get(kind).copied().unwrap_or(0.0) };
        seconds * 1000.0 / self.requests.max(1) as f64
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

const KINDS: [&str; 4] = ["shop", "agent", "collector", "healer"];

/// Every live descendant of `root` with the kind of component it is (`hale <kind> …`).
fn components(root: u32) -> Vec<(u32, &'static str)> {
    let mut parent_of = HashMap::new();
    let mut kind_of = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(ppid) =
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        else {
            continue;
        };
        parent_of.insert(pid, ppid);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let arg1 = cmdline.split(|b| *b == 0).nth(1).unwrap_or_default();
        if let Some(kind) = KINDS.iter().find(|k| k.as_bytes() == arg1) {
            kind_of.insert(pid, *kind);
        }
    }
    let descends = |mut pid: u32| {
        for _ in 0..16 {
            match parent_of.get(&pid) {
                Some(&p) if p == root => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    kind_of.into_iter().filter(|(pid, _)| descends(*pid)).collect()
}

/// CPU seconds so far of each component process.
fn cpu_of(processes: &[(u32, &'static str)]) -> HashMap<u32, f64> {
    processes.iter().filter_map(|(pid, _)| Some((*pid, cpu_seconds(*pid).ok()?.0))).collect()
}

async fn one_run(args: &TracingArgs, traces: bool) -> Result<Run> {
    let mut extra = vec!["--load-rps".to_string(), "0".to_string()];
    if !traces {
        extra.push("--no-traces".into());
    } else if let Some(ratio) = args.sample_ratio {
        extra.extend(["--trace-sample-ratio".to_string(), ratio.to_string()]);
    }
    let cluster = DemoCluster::start(if traces { "tracing-on" } else { "tracing-off" }, &extra).await?;
    let gateway = format!("http://{}", cluster.config.gateway.listen);
    let load = |duration: Duration, progress: bool| hale_shop::load::LoadConfig {
        gateway: gateway.clone(),
        rps: args.rps,
        duration: Some(duration),
        mix: hale_shop::load::Mix::default(),
        username: "shopper".into(),
        password: "hale-shopper".to_string().into(),
        progress,
        max_in_flight: 256,
    };
    eprintln!("warming up for {} ...", humantime::format_duration(args.warmup));
    hale_shop::load::run(load(args.warmup, false), std::future::pending()).await.context("the warm-up load")?;
    let processes = components(cluster.pid());
    let before = cpu_of(&processes);
    eprintln!(
        "tracing {}: {} requests/s for {} ...",
        on_off(traces),
        args.rps,
        humantime::format_duration(args.duration)
    );
    let summary =
        hale_shop::load::run(load(args.duration, true), std::future::pending()).await.context("the measured load")?;
    let after = cpu_of(&processes);
    let mut cpu = BTreeMap::new();
    for (pid, kind) in &processes {
        if let (Some(a), Some(b)) = (after.get(pid), before.get(pid)) {
            *cpu.entry(*kind).or_insert(0.0) += a - b;
        }
    }
    let mut latency_us = Histogram::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?;
    for route in summary.routes.values() {
        latency_us.add(&route.latency_us).context("merging latencies")?;
    }
    Ok(Run {
        traces,
        requests: summary.total(),
        errors: summary.total_errors(),
        rate: summary.total() as f64 / summary.elapsed.as_secs_f64().max(0.001),
        latency_us,
        cpu,
    })
}

/// One figure of a run.
type Figure = fn(&Run) -> f64;

fn on_off(traces: bool) -> &'static str {
    if traces { "on" } else { "off" }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

pub async fn tracing(args: TracingArgs) -> Result<()> {
    let mut runs = Vec::new();
    for pair in 0..args.pairs.max(1) {
        let order = if pair % 2 == 0 { [false, true] } else { [true, false] };
        for traces in order {
            runs.push(one_run(&args, traces).await?);
        }
    }
    println!(
        "{:<5} {:>11} {:>6} {:>7} {:>7} {:>7}  {:>16} {:>13} {:>13} {:>13}",
        "trace", "requests/s", "errors", "p50 ms", "p90 ms", "p99 ms", "shop CPU ms/req", "agents", "collector", "all"
    );
    for run in &runs {
        println!(
            "{:<5} {:>11.1} {:>6} {:>7.2} {:>7.2} {:>7.2}  {:>16.3} {:>13.3} {:>13.3} {:>13.3}",
            on_off(run.traces),
            run.rate,
            run.errors,
            run.quantile_ms(0.5),
            run.quantile_ms(0.9),
            run.quantile_ms(0.99),
            run.cpu_ms_per_request("shop"),
            run.cpu_ms_per_request("agent"),
            run.cpu_ms_per_request("collector"),
            run.cpu_ms_per_request("all"),
        );
    }
    let side = |traces: bool, figure: &dyn Fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.traces == traces).map(figure).collect())
    };
    println!("\nmedians of {} runs a side (on vs off):", args.pairs.max(1));
    let figures: [(&str, Figure); 7] = [
        ("requests/s", |r| r.rate),
        ("p50 ms", |r| r.quantile_ms(0.5)),
        ("p90 ms", |r| r.quantile_ms(0.9)),
        ("p99 ms", |r| r.quantile_ms(0.99)),
        ("shop CPU ms/request", |r| r.cpu_ms_per_request("shop")),
        ("collector CPU ms/request", |r| r.cpu_ms_per_request("collector")),
        ("cluster CPU ms/request", |r| r.cpu_ms_per_request("all")),
    ];
    for (name, figure) in figures {
        let (on, off) = (side(true, &figure), side(false, &figure));
        let change = if off > 0.0 { (on / off - 1.0) * 100.0 } else { 0.0 };
        println!("  {name:<26} {on:>9.3} vs {off:>9.3}  ({change:+.1} %)");
    }
    Ok(())
}
