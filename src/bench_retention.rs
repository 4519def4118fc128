//! `hale bench retention`: a long retention side by side. The same week of the
//! `hale bench ingest` noisy workload (by default 10,000 series × 7 days at 15 s, simulated
//! timestamps ending now) goes into a collector, Debian's Prometheus 2.42 (remote-write
//! receiver) and Debian's VictoriaMetrics 1.79, one after another, each started here on
//! loopback with a data dir of its own. Once each has settled (the collector's and
//! Prometheus's heads moved to blocks, VictoriaMetrics flushed), it prints resident
//! memory, disk bytes per sample and the latency of queries over the whole range, and
//! checks that every backend counts every sample.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_query::{Started, free_addr, spawn, wait_ready};

#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Series to load (each of the 50 metric names gets an equal share).
    #[arg(long, default_value_t = 10_000)]
    pub series: usize,
    /// Days of samples, 15 s apart, ending now.
    #[arg(long, default_value_t = 7)]
    pub days: usize,
    /// Runs of each query on each backend; the median is printed.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where the three data dirs go (a fresh temporary folder inside it; removed after).
    /// A week of 10,000 series takes about 10 GB while loading.
    #[arg(long, default_value = "/var/tmp")]
    pub dir: std::path::PathBuf,
    /// Leave out backends (collector, prometheus, victoria), e.g. to measure one alone.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
}

struct Backend {
    name: &'static str,
    base: String,
    process: Started,
    data: std::path::PathBuf,
    load_secs: f64,
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du` counts them).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// (VmRSS, RssAnon) of a process, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// One instant query's single value.
pub(crate) async fn scalar(client: &reqwest::Client, base: &str, query: &str, at: f64) -> Option<f64> {
    use hale_core::api::{Envelope, QueryResult};
    let answer: Envelope<QueryResult> = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query), ("time", &at.to_string())])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    match answer.into_data().ok()? {
        QueryResult::Vector(samples) => samples.first()?.value.value(),
        _ => None,
    }
}

/// A metric of a `/metrics` page (the first sample of that name).
async fn metric(client: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ').or_else(|| rest.split_once("} ").map(|(_, v)| v))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Waits until `done` holds, printing what it waits for; fails after `limit`.
async fn settle<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> Result<()> {
    let begun = Instant::now();
    while !done().await {
        if begun.elapsed() > limit {
            bail!("{what}: not done after {} s", limit.as_secs());
        }
        eprint!("\r{what}: waiting ({} s)", begun.elapsed().as_secs());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!("\r{what}: settled after {} s", begun.elapsed().as_secs());
    Ok(())
}

pub async fn retention(args: RetentionArgs) -> Result<()> {
    if args.series < 50 || args.days == 0 || args.runs == 0 {
        bail!("--series must be at least 50 (one per metric name), --days and --runs positive");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = tempfile::tempdir_in(&args.dir)?;
    let samples = args.days * 24 * 240;
    let total = (args.series * samples) as u64;
    let client = hale_client::tls::builder().timeout(Duration::from_secs(300)).build()?;
    let end_ms = hale_core::time::now_ms();
    let end = (end_ms - 15_000) as f64 / 1000.0;
    let start = end - (samples as f64 - 1.0) * 15.0;
    eprintln!(
        "{} series × {samples} samples ({} days at 15 s) = {total} samples, into each backend in turn",
        args.series, args.days
    );

    let mut backends = Vec::new();
    for name in ["collector", "prometheus", "victoria"] {
        if args.skip.iter().any(|s| s == name) {
            continue;
        }
        let addr = free_addr()?;
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data)?;
        let (process, ready) = match name {
            "collector" => {
                let program = std::env::current_exe()?.display().to_string();
                // Checkpoints each minute keep the WAL of a load this fast to a few GB.
                let flags = [
                    "collector",
                    "--insecure-open-ingest",
                    "--listen",
                    &addr.to_string(),
                    "--data-dir",
                    &data.display().to_string(),
                    "--retention",
                    "30d",
                    "--checkpoint-interval",
                    "1m",
                ]
                .map(String::from);
                (spawn(&program, &flags)?, "/-/ready")
            }
            "prometheus" => {
                std::fs::write(dir.path().join("prometheus.yml"), "global:\n  scrape_interval: 1m\n")?;
                let flags = [
                    format!("--config.file={}", dir.path().join("prometheus.yml").display()),
                    format!("--storage.tsdb.path={}", data.display()),
                    "--storage.tsdb.retention.time=30d".into(),
                    format!("--web.listen-address={addr}"),
                    "--web.enable-remote-write-receiver".into(),
                ];
                (spawn("prometheus", &flags)?, "/-/ready")
            }
            _ => {
                let flags = [
                    format!("-httpListenAddr={addr}"),
                    format!("-storageDataPath={}", data.display()),
                    "-retentionPeriod=1y".into(),
                    "-search.disableCache".into(),
                    "-search.latencyOffset=0s".into(),
                ];
                (spawn("victoria-metrics", &flags)?, "/health")
            }
        };
        let base = format!("http://{addr}");
        wait_ready(&client, &format!("{base}{ready}")).await?;
        eprintln!("loading {name}");
        let begun = Instant::now();
        crate::bench::ingest(crate::bench::IngestArgs {
            url: format!("{base}/api/v1/write"),
            series: args.series,
            samples,
            batch_series: 1000,
            batch_samples: 40,
            token: None,
            openmetrics: None,
            workload: crate::bench::Workload::Noisy,
            end_ms: Some(end_ms),
        })
        .await?;
        let load_secs = begun.elapsed().as_secs_f64();
        let metrics = format!("{base}/metrics");
        match name {
            "collector" => {
                // Everything but the last 2–4 hours in blocks, and whole days compacted.
                let on_disk = (args.series * samples.saturating_sub(4 * 240 + 120)) as f64;
                let most_blocks = (args.days + 13) as f64;
                settle("collector: head to blocks", Duration::from_secs(900), || async {
                    let samples = metric(&client, &metrics, "hale_collector_block_samples").await.unwrap_or(0.0);
                    let blocks = metric(&client, &metrics, "hale_collector_blocks").await.unwrap_or(f64::MAX);
                    samples >= on_disk && blocks <= most_blocks
                })
                .await?;
                // And the load's WAL folded into a checkpoint (once a minute here).
                let wal = data.join("wal");
                settle("collector: WAL checkpointed", Duration::from_secs(300), || async {
                    disk_bytes(&wal) <= 33 << 20
                })
                .await?;
            }
            "prometheus" => {
                let head_from = end_ms as f64 - 4.0 * 3600e3;
                settle("prometheus: head compacted", Duration::from_secs(900), || async {
                    metric(&client, &metrics, "prometheus_tsdb_head_min_time").await.unwrap_or(0.0) >= head_from
                })
                .await?;
                // Then the compactions of blocks into longer ones: until their count holds
                // for 10 s.
                let (begun, mut last) = (Instant::now(), -1.0);
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let n = metric(&client, &metrics, "prometheus_tsdb_blocks_loaded").await.unwrap_or(-2.0);
                    if n == last {
                        break;
                    }
                    last = n;
                    if begun.elapsed() > Duration::from_secs(900) {
                        bail!("prometheus: blocks still compacting after 900 s");
                    }
                    eprintln!("prometheus: {n} blocks");
                }
            }
            _ => {
                // Flushed, then until its parts on disk stop changing for 10 s.
                client.get(format!("{base}/internal/force_flush")).send().await?;
                let (begun, mut last) = (Instant::now(), u64::MAX);
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let now = disk_bytes(&data);
                    if now == last || begun.elapsed() > Duration::from_secs(900) {
                        break;
                    }
                    last = now;
                }
            }
        }
        backends.push(Backend { name, base, process, data, load_secs });
    }

    // Resident memory once settled, before any query (queries decode into memory that
    // each process gives back at its own pace); again after them, below.
    let rss_settled: Vec<(u64, u64)> = backends.iter().map(|b| rss(b.process.0.id())).collect();
    // Every backend holds every sample: a count over the whole range, per metric name.
    let count = format!("sum(count_over_time(bench_metric_2[{}d]))", args.days);
    let want = (args.series / 50 + usize::from(args.series % 50 > 2)) * samples;
    for b in &backends {
        settle(&format!("{}: all samples counted", b.name), Duration::from_secs(120), || async {
            scalar(&client, &b.base, &count, end).await == Some(want as f64)
        })
        .await?;
    }

    let queries: [(&str, String); 3] = [
        ("range 1h step", "sum(rate(bench_metric_0[1h]))".into()),
        ("range 1h step", "max by (job) (max_over_time(bench_metric_1[1h]))".into()),
        ("instant", count),
    ];
    let mut latencies: Vec<Vec<f64>> = Vec::new();
    for (kind, q) in &queries {
        let mut row = Vec::new();
        for b in &backends {
            let (path, params): (&str, Vec<(&str, String)>) = if *kind == "instant" {
                ("query", vec![("query", q.clone()), ("time", end.to_string())])
            } else {
                (
                    "query_range",
                    vec![
                        ("query", q.clone()),
                        ("start", (start + 3600.0).to_string()),
                        ("end", end.to_string()),
                        ("step", "3600".into()),
                    ],
                )
            };
            let url = format!("{}/api/v1/{path}", b.base);
            let mut runs = Vec::new();
            for _ in 0..=args.runs {
                let t = Instant::now();
                let r = client.get(&url).query(&params).send().await?;
                let status = r.status();
                let body = r.bytes().await?;
                if !status.is_success() {
                    bail!("{} answered {status} to {q}: {}", b.name, String::from_utf8_lossy(&body));
                }
                runs.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            runs.remove(0); // warm-up
            runs.sort_by(f64::total_cmp);
            row.push(runs[runs.len() / 2]);
        }
        latencies.push(row);
    }

    println!(
        "{} series × {samples} samples ({} days at 15 s, simulated timestamps) = {total} samples; queries: median of {} runs over the whole range",
        args.series, args.days, args.runs
    );
    print!("{:<34}", "figure");
    for b in &backends {
        print!(" {:>12}", b.name);
    }
    println!();
    let row = |label: &str, values: Vec<String>| {
        print!("{label:<34}");
        for v in values {
            print!(" {v:>12}");
        }
        println!();
    };
    row("load, s", backends.iter().map(|b| format!("{:.0}", b.load_secs)).collect());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_after: Vec<(u64, u64)> = backends.iter().map(|b| rss(b.process.0.id())).collect();
    let mib = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
    row("resident memory, MiB", rss_settled.iter().map(|r| mib(r.0)).collect());
    row("  of it anonymous (heap), MiB", rss_settled.iter().map(|r| mib(r.1)).collect());
    row("  10 s after the queries, MiB", rss_after.iter().map(|r| mib(r.0)).collect());
    let disk: Vec<u64> = backends.iter().map(|b| disk_bytes(&b.data)).collect();
    row("data dir, MiB", disk.iter().map(|d| mib(*d)).collect());
    row("data dir, bytes per sample", disk.iter().map(|d| format!("{:.2}", *d as f64 / total as f64)).collect());
    // Without the write-ahead logs (the collector's WAL and checkpoint, Prometheus's WAL
    // and head chunks): what the retention itself costs.
    let blocks: Vec<u64> = backends
        .iter()
        .map(|b| match b.name {
            "collector" => disk_bytes(&b.data.join("blocks")),
            "prometheus" => std::fs::read_dir(&b.data)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.path().join("meta.json").exists())
                        .map(|e| disk_bytes(&e.path()))
                        .sum()
                })
                .unwrap_or(0),
            _ => disk_bytes(&b.data),
        })
        .collect();
    row("blocks only, bytes per sample", blocks.iter().map(|d| format!("{:.2}", *d as f64 / total as f64)).collect());
    for ((kind, q), ms) in queries.iter().zip(&latencies) {
        row(&format!("{kind} ms"), ms.iter().map(|m| format!("{m:.1}")).collect());
        println!("  {q}");
    }
    Ok(())
}
