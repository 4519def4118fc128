//! `hale bench logs`: the log path end to end, a collector and an agent tailing a file
//! into it over OTLP, both started here.
//!
//! - Backlog (the default): writes `--lines` JSON lines to a file, then times how fast
//!   they are stored, with the CPU of each process and the stages' counters, next to the
//!   machine's physical baseline for the same bytes (reading the file from the page cache,
//!   writing it sequentially with an fsync).
//! - Live (`--rate N`): a writer appends N lines a second for `--duration` while the
//!   agent follows the file; each line's delay is from its write until the collector's
//!   stored-lines count passes its number (sampled every 20 ms), with the agent's CPU.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_query::{Started, free_addr, spawn, spawn_collector, wait_ready};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Lines to write and ship (backlog mode).
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: usize,
    /// Bytes per line, newline included (JSON with a timestamp, level, message and fields,
    /// padded to this size; at least 120).
    #[arg(long, default_value_t = 200)]
    pub line_bytes: usize,
    /// Live mode: lines written per second while the agent follows the file.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Live mode: how long lines are written.
    #[arg(long, default_value = "30s")]
    pub duration: humantime::Duration,
    /// The agent's `logs_compression` (auto: none here, as the collector is on loopback).
    #[arg(long, default_value = "auto", value_parser = ["auto", "none", "gzip", "zstd"])]
    pub compression: String,
    /// Give up when the lines are not all stored after this long.
    #[arg(long, default_value = "10m")]
    pub timeout: humantime::Duration,
}

/// One JSON line of about `size` bytes (newline included).
fn line(i: usize, size: usize) -> String {
    let level = ["info", "info", "info", "warn", "error"][i % 5];
    let mut text = format!(
        "{{\"ts\":\"2026-12-06T12:{:02}:{:02}.{:03}Z\",\"level\":\"{level}\",\"msg\":\"request served\",\"route\":\"/api/items/{}\",\"status\":{},\"duration_ms\":{}.{},\"pad\":\"",
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1000,
        i % 10_000,
        [200, 200, 404, 500][i % 4],
        i % 97,
        i % 10
    );
    while text.len() + 3 < size {
        text.push((b'a' + (i + text.len()) as u8 % 26) as char);
    }
    text.push_str("\"}\n");
    text
}

/// User plus system CPU seconds of a process so far, and its minor page faults.
pub(crate) fn cpu_seconds(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let faults = fields.get(7).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok((ticks / per_second, faults))
}

/// The sum of every sample of `name` in a `/metrics` text.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn metrics(client: &reqwest::Client, base: &str) -> String {
    match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

/// A collector and an agent that follows `file` into it.
struct Pair {
    collector: Started,
    agent: Started,
    client: reqwest::Client,
    collector_base: String,
    agent_base: String,
}

impl Pair {
    async fn start(dir: &std::path::Path, file: &std::path::Path, compression: &str) -> Result<Pair> {
        let client = hale_client::tls::builder().timeout(Duration::from_secs(10)).build()?;
        let (collector_addr, agent_addr) = (free_addr()?, free_addr()?);
        let collector = spawn_collector(collector_addr, &dir.join("collector"))?;
        let collector_base = format!("http://{collector_addr}");
        wait_ready(&client, &format!("{collector_base}/-/ready")).await?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "node = \"bench\"\nlisten = \"{agent_addr}\"\ndata_dir = {:?}\nlogs_endpoint = \"{collector_base}/v1/logs\"\nlogs_compression = \"{compression}\"\n\n[[logs]]\npath = {:?}\nservice = \"bench\"\ninstance = \"bench-1\"\n",
                dir.join("agent").display().to_string(),
                file.display().to_string()
            ),
        )
        .context("writing agent.toml")?;
        let program = std::env::current_exe()?.display().to_string();
        let agent = spawn(&program, &["agent".into(), "--config".into(), config.display().to_string()])?;
        Ok(Pair { collector, agent, client, collector_base, agent_base: format!("http://{agent_addr}") })
    }

    async fn stored(&self) -> f64 {
        metric_sum(&metrics(&self.client, &self.collector_base).await, "hale_collector_log_lines_stored_total")
    }

    /// The stages' counters of both processes.
    async fn print_stages(&self, stored: f64, took: Duration) {
        let (agent_metrics, collector_metrics) =
            (metrics(&self.client, &self.agent_base).await, metrics(&self.client, &self.collector_base).await);
        let batches = metric_sum(&agent_metrics, "hale_agent_batches_sent_total");
        println!(
            "stages            tailed {:.0} lines; shipped {batches:.0} batches ({:.0} lines, {:.0} round trips/s); stored {:.0} lines",
            metric_sum(&agent_metrics, "hale_agent_log_lines_total"),
            stored / batches.max(1.0),
            batches / took.as_secs_f64(),
            metric_sum(&collector_metrics, "hale_collector_log_lines_stored_total"),
        );
        let stage = |name: &str| {
            let needle = format!("hale_agent_log_stage_seconds_total{{stage=\"{name}\"}}");
            agent_metrics.lines().find_map(|l| l.strip_prefix(&needle)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
        };
        println!(
            "agent stages      tail {:.2} s, encode {:.2} s, queue (append + fsync + checkpoint) {:.2} s, ship (request until answered, several in flight) {:.2} s",
            stage("tail"),
            stage("encode"),
            stage("queue"),
            stage("ship")
        );
        println!(
            "collector stages  ingest (OTLP to stored lines) {:.2} s, store (write, fsync, recent lines) {:.2} s; {:.0} fsyncs for {batches:.0} requests",
            metric_sum(&collector_metrics, "hale_collector_log_decode_seconds_total"),
            metric_sum(&collector_metrics, "hale_collector_log_store_seconds_total"),
            metric_sum(&collector_metrics, "hale_collector_log_fsyncs_total"),
        );
    }
}

pub async fn logs(args: LogsArgs) -> Result<()> {
    if args.lines == 0 || args.line_bytes < 120 {
        bail!("--lines must be positive and --line-bytes at least 120");
    }
    match args.rate {
        Some(0) => bail!("--rate must be positive"),
        Some(rate) => live(&args, rate).await,
        None => backlog(&args).await,
    }
}

/// A file written beforehand, caught up on.
async fn backlog(args: &LogsArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.log");
    // The workload, and the machine's baseline for the same bytes.
    let written = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
    for i in 0..args.lines {
        out.write_all(line(i, args.line_bytes).as_bytes())?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let bytes = std::fs::metadata(&file)?.len();
    eprintln!("wrote {} lines, {:.1} MB, in {:.1} s", args.lines, bytes as f64 / 1e6, written.elapsed().as_secs_f64());
    let read = Instant::now();
    let (mut buf, mut newlines) = (vec![0u8; 1 << 20], 0usize);
    let mut f = std::fs::File::open(&file)?;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        newlines += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    let read_took = read.elapsed();
    let copy = dir.path().join("copy.log");
    let wrote = Instant::now();
    {
        let mut src = std::fs::File::open(&file)?;
        let mut dst = std::fs::File::create(&copy)?;
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])?;
        }
        dst.sync_all()?;
    }
    let write_took = wrote.elapsed();
    std::fs::remove_file(&copy)?;
    debug_assert_eq!(newlines, args.lines);

    // A collector, and an agent tailing the file into it.
    let started = Instant::now();
    let pair = Pair::start(dir.path(), &file, &args.compression).await?;
    let deadline = started + *args.timeout;
    let mut last_print = Instant::now();
    let stored = loop {
        let stored = pair.stored().await;
        if stored as usize >= args.lines {
            break stored;
        }
        if Instant::now() > deadline {
            bail!("only {stored} of {} lines stored after {}", args.lines, args.timeout);
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let secs = started.elapsed().as_secs_f64();
            eprint!("\r{stored:.0} lines stored in {secs:.0} s ({:.0} lines/s)   ", stored / secs);
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    eprintln!();
    let ((agent_cpu, agent_faults), (collector_cpu, collector_faults)) =
        (cpu_seconds(pair.agent.0.id())?, cpu_seconds(pair.collector.0.id())?);
    println!(
        "{} lines of {} bytes ({:.1} MB) from a file, agent → collector over OTLP/HTTP",
        args.lines,
        args.line_bytes,
        bytes as f64 / 1e6
    );
    println!(
        "end to end        {:>10.1} s  {:>12.0} lines/s  {:>8.1} MB/s",
        took.as_secs_f64(),
        stored / took.as_secs_f64(),
        mb_per_s(bytes, took)
    );
    println!(
        "CPU               agent {agent_cpu:.1} s ({:.0} % of a core), collector {collector_cpu:.1} s ({:.0} %); page faults {agent_faults} and {collector_faults}",
        agent_cpu * 100.0 / took.as_secs_f64(),
        collector_cpu * 100.0 / took.as_secs_f64()
    );
    pair.print_stages(stored, took).await;
    println!(
        "baseline          read from the page cache {:.0} MB/s; sequential write + fsync {:.0} MB/s",
        mb_per_s(bytes, read_took),
        mb_per_s(bytes, write_took)
    );
    Ok(())
}

/// Lines written at `rate` a second while the agent follows the file.
async fn live(args: &LogsArgs, rate: u32) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("app.log");
    std::fs::File::create(&file)?;
    let pair = Pair::start(dir.path(), &file, &args.compression).await?;
    wait_ready(&pair.client, &format!("{}/metrics", pair.agent_base)).await?;
    let duration = *args.duration;
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    // The writer: every 10 ms, the lines due by then, appended (as a service's logger would).
    let (size, path) = (args.line_bytes, file.clone());
    let started = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<Vec<(usize, Instant)>> {
        let mut out = std::fs::OpenOptions::new().append(true).open(&path)?;
        let (mut written, mut marks) = (0usize, Vec::new());
        while written < total {
            let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(total);
            if due > written {
                let text: String = (written..due).map(|i| line(i, size)).collect();
                out.write_all(text.as_bytes())?;
                marks.push((due, Instant::now()));
                written = due;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(marks)
    });
    let agent_cpu_before = cpu_seconds(pair.agent.0.id())?.0;
    // The collector's stored count, every 20 ms, until every line is stored.
    let mut samples: Vec<(Instant, usize)> = Vec::new();
    let deadline = started + duration + *args.timeout;
    let mut last_print = Instant::now();
    let mut agent_cpu_written = None;
    loop {
        let stored = pair.stored().await as usize;
        samples.push((Instant::now(), stored));
        if writer.is_finished() && agent_cpu_written.is_none() {
            agent_cpu_written = Some((cpu_seconds(pair.agent.0.id())?.0, started.elapsed()));
        }
        if stored >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {stored} of {total} lines stored after {}", args.timeout);
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprint!("\r{stored} lines stored in {:.0} s   ", started.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!();
    let marks = match writer.join() {
        Ok(marks) => marks.context("writing the log file")?,
        Err(_) => bail!("the writer thread panicked"),
    };
    // Each line's delay: from the write that held it until the first sample whose count
    // passes its number.
    let mut delays = Vec::with_capacity(marks.len());
    let (mut from, mut sample) = (0usize, 0usize);
    for (upto, at) in &marks {
        while sample < samples.len() && samples[sample].1 < *upto {
            sample += 1;
        }
        let stored_at = samples.get(sample).map_or(Instant::now(), |s| s.0);
        delays.extend(std::iter::repeat_n(stored_at.saturating_duration_since(*at), upto - from));
        from = *upto;
    }
    delays.sort();
    let quantile = |q: f64| delays.get(((delays.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    let (agent_cpu, writing) = agent_cpu_written.unwrap_or((cpu_seconds(pair.agent.0.id())?.0, started.elapsed()));
    println!(
        "{total} lines of {} bytes written at {rate} lines/s for {}, agent → collector over OTLP/HTTP",
        args.line_bytes, args.duration
    );
    println!(
        "delay (write → stored)  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        quantile(0.5).as_secs_f64() * 1e3,
        quantile(0.99).as_secs_f64() * 1e3,
        quantile(1.0).as_secs_f64() * 1e3
    );
    println!(
        "agent CPU               {:.1} s while writing ({:.1} % of a core)",
        agent_cpu - agent_cpu_before,
        (agent_cpu - agent_cpu_before) * 100.0 / writing.as_secs_f64()
    );
    pair.print_stages(total as f64, writing).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_json_of_the_asked_size() {
        for i in [0, 7, 123_456] {
            let text = super::line(i, 200);
            assert_eq!(text.len(), 200, "{text}");
            let parsed: serde_json::Value = serde_json::from_str(text.trim_end()).expect("JSON");
            assert!(parsed["level"].is_string() && parsed["msg"] == "request served");
        }
    }

    #[test]
    fn metric_sums_add_every_labelled_sample_of_one_name_only() {
        let text = "# TYPE x counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_total_other 9\nx_total 1\n";
        assert_eq!(super::metric_sum(text, "x_total"), 6.0);
    }
}
