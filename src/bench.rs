//! `hale bench ingest`: sends a synthetic, realistic remote_write workload to a receiver
//! (the collector, or Prometheus with its remote-write receiver) and prints the rate.
//! The same arguments always produce the same payload, so two receivers can be compared.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// remote_write URL.
    #[arg(long)]
    pub url: String,
    /// Number of series.
    #[arg(long, default_value_t = 20_000)]
    pub series: usize,
    /// Samples per series, 15 s apart, ending now.
    #[arg(long, default_value_t = 241)]
    pub samples: usize,
    /// Series per request.
    #[arg(long, default_value_t = 1000)]
    pub batch_series: usize,
    /// Samples per series per request.
    #[arg(long, default_value_t = 10)]
    pub batch_samples: usize,
    /// Bearer token.
    #[arg(long, env = "HALE_INGEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Write the workload as OpenMetrics to this file instead of sending it (for
    /// `promtool tsdb create-blocks-from openmetrics`, to measure Prometheus's encoding).
    #[arg(long)]
    pub openmetrics: Option<std::path::PathBuf>,
    /// What the series look like: `synthetic` (50 metric names, six labels) or `fleet`
    /// (the HTTP histograms and node_exporter families Hale's dashboards read).
    #[arg(long, value_enum, default_value_t = Workload::Synthetic)]
    pub workload: Workload,
    /// The last sample's time plus one step (ms); now when absent. Set by benches that
    /// load the same data into several backends one after another.
    #[arg(skip)]
    pub end_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Synthetic,
    Fleet,
    /// The synthetic workload's series with values that vary as real ones do: counters
    /// growing by uneven steps, gauges drifting with noise at one decimal. The synthetic
    /// values repeat exactly, which a general-purpose compressor (VictoriaMetrics's zstd)
    /// folds to almost nothing; disk figures are taken on these instead.
    Noisy,
}

/// How a series' value moves from sample to sample (`k`, 15 s apart).
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// The synthetic workload's series `i` ([`value`]).
    Synthetic(usize),
    /// The noisy workload's series `i` ([`noisy`]).
    Noisy(usize),
    /// A counter growing at this rate per second.
    Counter(f64),
    /// A gauge wandering over `base ..= base + swing`.
    Gauge { base: f64, swing: f64, seed: usize },
    /// A cumulative histogram bucket: `share` of a counter growing at `rate` per second.
    Bucket { rate: f64, share: f64 },
}

impl Shape {
    pub fn at(&self, k: usize) -> f64 {
        let secs = k as f64 * 15.0;
        match *self {
            Shape::Synthetic(i) => value(i, k),
            Shape::Noisy(i) => noisy(i, k),
            Shape::Counter(rate) => (rate * secs * 1000.0).round() / 1000.0,
            Shape::Gauge { base, swing, seed } => base + swing * ((seed * 31 + k * 17) % 100) as f64 / 100.0,
            Shape::Bucket { rate, share } => (rate * secs * share).floor(),
        }
    }
}

fn labels(i: usize) -> Vec<Label> {
    let mut l = vec![
        Label { name: "__name__".into(), value: format!("bench_metric_{}", i % 50) },
        Label { name: "code".into(), value: ["200", "404", "500"][i % 3].into() },
        Label { name: "instance".into(), value: format!("10.0.{}.{}:9100", (i / 250) % 256, i % 250) },
        Label { name: "job".into(), value: format!("job-{}", i % 20) },
        Label { name: "method".into(), value: ["GET", "POST"][i % 2].into() },
        Label { name: "series".into(), value: i.to_string() },
    ];
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

/// A well-mixed 64-bit hash of a series and a step (SplitMix64's finaliser): noise that is
/// the same on every run, computed for any step without the ones before it.
fn mix(i: usize, k: usize) -> u64 {
    let mut z = ((i as u64) << 32 ^ k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A counter for even series: `k·r` plus noise below `r`, so it only grows, by between 1
/// and 2r − 1 a step. A gauge for odd ones: a daily wave around its own base with noise,
/// at one decimal.
fn noisy(i: usize, k: usize) -> f64 {
    let h = mix(i, k);
    if i.is_multiple_of(2) {
        let r = (i % 40 + 2) as u64;
        (k as u64 * r + h % r) as f64
    } else {
        let base = 20.0 + (i % 60) as f64;
        let wave = 10.0 * (k as f64 * std::f64::consts::TAU / 5760.0 + i as f64).sin();
        // Whole tenths, divided once: the decimal a scrape's text would carry.
        (((base + wave) * 10.0).round() + (h % 21) as f64 - 10.0) / 10.0
    }
}

/// A counter for even series, a jittery gauge for odd ones.
fn value(i: usize, k: usize) -> f64 {
    if i.is_multiple_of(2) { (k * (i % 7 + 1)) as f64 } else { 50.0 + ((i * 31 + k * 17) % 100) as f64 / 10.0 }
}

pub async fn ingest(args: IngestArgs) -> Result<()> {
    if args.series == 0 || args.samples == 0 || args.batch_series == 0 || args.batch_samples == 0 {
        bail!("--series, --samples, --batch-series and --batch-samples must be positive");
    }
    let now = args.end_ms.unwrap_or_else(hale_core::time::now_ms);
    let start = now - (args.samples as i64) * 15_000;
    if let Some(path) = &args.openmetrics {
        if args.workload != Workload::Synthetic {
            bail!("--openmetrics writes the synthetic workload only");
        }
        return write_openmetrics(path, &args, start);
    }
    let client = hale_client::tls::builder().timeout(Duration::from_secs(60)).build()?;
    let (all_labels, shapes): (Vec<Vec<Label>>, Vec<Shape>) = match args.workload {
        Workload::Synthetic => (0..args.series).map(|i| (labels(i), Shape::Synthetic(i))).unzip(),
        Workload::Noisy => (0..args.series).map(|i| (labels(i), Shape::Noisy(i))).unzip(),
        Workload::Fleet => crate::bench_fleet::series(args.series).into_iter().unzip(),
    };
    let series = all_labels.len();
    let mut sent = 0u64;
    let mut requests = 0u64;
    let begun = Instant::now();
    let mut encode_time = Duration::ZERO;
    for k0 in (0..args.samples).step_by(args.batch_samples) {
        let k1 = (k0 + args.batch_samples).min(args.samples);
        for s0 in (0..series).step_by(args.batch_series) {
            let s1 = (s0 + args.batch_series).min(series);
            let t = Instant::now();
            let timeseries = (s0..s1)
                .map(|i| TimeSeries {
                    exemplars: Vec::new(),
                    labels: all_labels[i].clone(),
                    samples: (k0..k1)
                        .map(|k| Sample { value: shapes[i].at(k), timestamp: start + k as i64 * 15_000 })
                        .collect(),
                })
                .collect();
            let body = remote_write::encode(&WriteRequest::of(timeseries));
            encode_time += t.elapsed();
            let mut req = client
                .post(&args.url)
                .header("content-encoding", "snappy")
                .header("content-type", "application/x-protobuf")
                .header("x-prometheus-remote-write-version", "0.1.0")
                .body(body);
            if let Some(token) = &args.token {
                req = req.bearer_auth(token);
            }
            let r = req.send().await.with_context(|| format!("sending to {}", args.url))?;
            if !r.status().is_success() {
                bail!("{} answered {}: {}", args.url, r.status(), r.text().await.unwrap_or_default());
            }
            sent += ((s1 - s0) * (k1 - k0)) as u64;
            requests += 1;
        }
        eprint!("\r{sent} samples sent ({:.0} %)", 100.0 * (k1 as f64) / args.samples as f64);
    }
    let secs = (begun.elapsed() - encode_time).as_secs_f64();
    eprintln!();
    println!(
        "series {series}  samples {sent}  requests {requests}  receiver time {secs:.2}s  ingest {:.0} samples/s",
        sent as f64 / secs
    );
    Ok(())
}

/// The same workload as OpenMetrics text: one family per metric name, samples in time order.
fn write_openmetrics(path: &std::path::Path, args: &IngestArgs, start: i64) -> Result<()> {
    use std::io::Write;
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    for name in 0..50.min(args.series) {
        writeln!(out, "# TYPE bench_metric_{name} gauge")?;
        for i in (name..args.series).step_by(50) {
            let l = labels(i);
            let text: Vec<String> =
                l.iter().filter(|l| l.name != "__name__").map(|l| format!("{}=\"{}\"", l.name, l.value)).collect();
            for k in 0..args.samples {
                let t = start + k as i64 * 15_000;
                writeln!(
                    out,
                    "bench_metric_{name}{{{}}} {} {}.{:03}",
                    text.join(","),
                    value(i, k),
                    t / 1000,
                    t % 1000
                )?;
            }
        }
    }
    writeln!(out, "# EOF")?;
    out.flush()?;
    println!("wrote {} samples to {}", args.series * args.samples, path.display());
    Ok(())
}
