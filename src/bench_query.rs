//! `hale bench query`: PromQL latency side by side. The same `hale bench ingest` workload
//! goes into a collector, Debian's Prometheus 2.42 (remote-write receiver) and Debian's
//! VictoriaMetrics 1.79, each started here on loopback with a data dir of its own, and
//! so does the fleet workload ([`crate::bench_fleet`]) the queries of Hale's dashboards
//! read; then every query runs as a range query (the last hour at a 15 s step, as Grafana
//! asks) and as an instant query, `--runs` times on each, and the medians and ratios are
//! printed.
//! VictoriaMetrics runs with its response cache off, so each run computes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Series of each workload to load: this many synthetic ones (each of the 50 metric
    /// names gets an equal share) and about as many fleet ones (HTTP histograms and
    /// node_exporter families, which the dashboards' queries read).
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Samples per series, 15 s apart, ending now (241: one hour).
    #[arg(long, default_value_t = 241)]
    pub samples: usize,
    /// Runs of each query on each backend; the median is printed.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// The queries: the shapes dashboards ask for over the bench's series (rates summed by
/// labels, ratios, quantiles, top-k, plain selectors).
const QUERIES: [&str; 10] = [
    "sum(rate(bench_metric_0[5m]))",
    "sum by (instance) (rate(bench_metric_0[5m]))",
    "sum by (job, code) (rate({__name__=~\"bench_metric_(0|2|4|6|8)\"}[5m]))",
    "sum by (job) (rate(bench_metric_0{code=\"500\"}[5m])) / sum by (job) (rate(bench_metric_0[5m]))",
    "topk(5, sum by (instance) (rate(bench_metric_2[5m])))",
    "quantile by (job) (0.99, rate(bench_metric_4[5m]))",
    "avg_over_time(bench_metric_1[5m])",
    "max by (job) (max_over_time(bench_metric_3[10m]))",
    "bench_metric_5",
    "count by (code) (bench_metric_7)",
];

/// A process started for the bench, killed when dropped.
pub(crate) struct Started(pub(crate) Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn spawn(program: &str, args: &[String]) -> Result<Started> {
    let child =
        Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| {
            format!("starting {program}: is it installed? (apt-get install prometheus victoria-metrics)")
        })?;
    Ok(Started(child))
}

/// A collector of this binary on `addr`, keeping its data in `dir`.
pub(crate) fn spawn_collector(addr: SocketAddr, dir: &std::path::Path) -> Result<Started> {
    let program = std::env::current_exe()?.display().to_string();
    // A throwaway collector on loopback, fed by the bench alone.
    let args = [
        "collector".into(),
        "--insecure-open-ingest".into(),
        "--listen".into(),
        addr.to_string(),
        "--data-dir".into(),
        dir.display().to_string(),
    ];
    spawn(&program, &args)
}

pub(crate) async fn wait_ready(client: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer within 30 s")
}

/// The number of bench series a backend can query (VictoriaMetrics makes new series
/// searchable after a moment).
async fn loaded(client: &reqwest::Client, base: &str, at: f64) -> Option<usize> {
    let every = "count({__name__=~\"bench_metric_.*|http_server_.*|node_.*\"})";
    crate::bench_retention::scalar(client, base, every, at).await.map(|v| v as usize)
}

/// One timed query: its wall time, failing on an error answer.
async fn timed(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> Result<Duration> {
    let t = Instant::now();
    let r = client.get(url).query(params).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let took = t.elapsed();
    if !status.is_success() {
        bail!("{url} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(took)
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

pub async fn query(args: QueryArgs) -> Result<()> {
    if args.series == 0 || args.samples < 21 || args.runs == 0 {
        bail!("--series and --runs must be positive and --samples at least 21 (five minutes)");
    }
    let dir = tempfile::tempdir()?;
    let client = hale_client::tls::builder().timeout(Duration::from_secs(120)).build()?;
    let (hale, prom, vm) = (free_addr()?, free_addr()?, free_addr()?);
    let _collector = spawn_collector(hale, &dir.path().join("hale"))?;
    std::fs::write(dir.path().join("prometheus.yml"), "global:\n  scrape_interval: 1m\n")?;
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("prom").display()),
            format!("--web.listen-address={prom}"),
            "--web.enable-remote-write-receiver".into(),
        ],
    )?;
    let _victoria = spawn(
        "victoria-metrics",
        &[
            format!("-httpListenAddr={vm}"),
            format!("-storageDataPath={}", dir.path().join("vm").display()),
            "-retentionPeriod=1y".into(),
            "-search.disableCache".into(),
            "-search.latencyOffset=0s".into(),
        ],
    )?;
    let backends = [
        ("collector", format!("http://{hale}")),
        ("prometheus", format!("http://{prom}")),
        ("victoria", format!("http://{vm}")),
    ];
    for (ready, (_, base)) in ["/-/ready", "/-/ready", "/health"].iter().zip(&backends) {
        wait_ready(&client, &format!("{base}{ready}")).await?;
    }
    // The same workload into each, from the same clock reading.
    let end_ms = hale_core::time::now_ms();
    use crate::bench::Workload;
    let total = args.series + crate::bench_fleet::series(args.series).len();
    for (name, base) in &backends {
        for workload in [Workload::Synthetic, Workload::Fleet] {
            eprintln!("loading {workload:?} series × {} samples into {name}", args.samples);
            crate::bench::ingest(crate::bench::IngestArgs {
                url: format!("{base}/api/v1/write"),
                series: args.series,
                samples: args.samples,
                batch_series: 1000,
                batch_samples: 10,
                token: None,
                openmetrics: None,
                workload,
                end_ms: Some(end_ms),
            })
            .await?;
        }
    }
    // The last sample is a little before now; the window ends on it.
    let end = (end_ms - 15_000) as f64 / 1000.0;
    let start = end - 3600.0;
    for (name, base) in &backends {
        let deadline = Instant::now() + Duration::from_secs(60);
        while loaded(&client, base, end).await != Some(total) {
            if Instant::now() > deadline {
                bail!("{name} does not show all {total} series a minute after loading");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    println!(
        "{} synthetic + {} fleet series × {} samples; median of {} runs; range: 1 h at 15 s; ms",
        args.series,
        total - args.series,
        args.samples,
        args.runs
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>7} {:>7}  query",
        "kind", "collector", "prometheus", "victoria", "c/p", "c/v"
    );
    // Sums of ln(collector/other) and counts, for all queries and for range ones.
    let mut log_ratios = [[0.0f64; 2]; 2];
    let mut counts = [0usize; 2];
    let mut slowest_vs_prometheus = (0.0f64, String::new());
    for q in QUERIES.iter().chain(&crate::bench_fleet::DASHBOARD_QUERIES) {
        for kind in ["range", "instant"] {
            let mut medians = Vec::new();
            for (_, base) in &backends {
                let (path, params): (&str, Vec<(&str, String)>) = match kind {
                    "range" => (
                        "query_range",
                        vec![
                            ("query", q.to_string()),
                            ("start", start.to_string()),
                            ("end", end.to_string()),
                            ("step", "15".into()),
                        ],
                    ),
                    _ => ("query", vec![("query", q.to_string()), ("time", end.to_string())]),
                };
                let url = format!("{base}/api/v1/{path}");
                // One warm-up run, then the measured ones.
                timed(&client, &url, &params).await?;
                let mut runs = Vec::with_capacity(args.runs);
                for _ in 0..args.runs {
                    runs.push(timed(&client, &url, &params).await?);
                }
                medians.push(median(runs));
            }
            let ms: Vec<f64> = medians.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            let (cp, cv) = (ms[0] / ms[1], ms[0] / ms[2]);
            for (which, counted) in [(0, true), (1, kind == "range")] {
                if counted {
                    log_ratios[which][0] += cp.ln();
                    log_ratios[which][1] += cv.ln();
                    counts[which] += 1;
                }
            }
            if cp > slowest_vs_prometheus.0 {
                slowest_vs_prometheus = (cp, format!("{kind} {q}"));
            }
            println!("{kind:<8} {:>10.1} {:>10.1} {:>10.1} {cp:>7.2} {cv:>7.2}  {q}", ms[0], ms[1], ms[2]);
        }
    }
    for (which, what) in [(0, "all queries"), (1, "range queries")] {
        let n = counts[which].max(1) as f64;
        println!(
            "geometric mean of collector/other, {what}: {:.2}× Prometheus, {:.2}× VictoriaMetrics (below 1: the collector is faster)",
            (log_ratios[which][0] / n).exp(),
            (log_ratios[which][1] / n).exp()
        );
    }
    println!("slowest against Prometheus: {:.2}× ({})", slowest_vs_prometheus.0, slowest_vs_prometheus.1);
    Ok(())
}
