//! `hale bench logs`: the log path end to end. Writes `--lines` JSON lines to a file,
//! starts a collector and an agent that tails the file and ships it over OTLP, and reports
//! how fast the lines are stored, the CPU each process used and the stages' counters, next
//! to the machine's physical baseline for the same bytes: reading the file from the page
//! cache, and writing it sequentially with an fsync.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_query::{free_addr, spawn, spawn_collector, wait_ready};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Lines to write and ship.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: usize,
    /// Bytes per line, newline included (JSON with a timestamp, level, message and fields,
    /// padded to this size; at least 120).
    #[arg(long, default_value_t = 200)]
    pub line_bytes: usize,
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
fn cpu_seconds(pid: u32) -> Result<(f64, u64)> {
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

pub async fn logs(args: LogsArgs) -> Result<()> {
    if args.lines == 0 || args.line_bytes < 120 {
        bail!("--lines must be positive and --line-bytes at least 120");
    }
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
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let (collector_addr, agent_addr) = (free_addr()?, free_addr()?);
    let collector = spawn_collector(collector_addr, &dir.path().join("collector"))?;
    let collector_base = format!("http://{collector_addr}");
    wait_ready(&client, &format!("{collector_base}/-/ready")).await?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "node = \"bench\"\nlisten = \"{agent_addr}\"\ndata_dir = {:?}\nlogs_endpoint = \"{collector_base}/v1/logs\"\n\n[[logs]]\npath = {:?}\nservice = \"bench\"\ninstance = \"bench-1\"\n",
            dir.path().join("agent").display().to_string(),
            file.display().to_string()
        ),
    )
    .context("writing agent.toml")?;
    let started = Instant::now();
    let program = std::env::current_exe()?.display().to_string();
    let agent = spawn(&program, &["agent".into(), "--config".into(), config.display().to_string()])?;
    let agent_base = format!("http://{agent_addr}");
    let deadline = started + *args.timeout;
    let mut last_print = Instant::now();
    let stored = loop {
        let stored = metric_sum(&metrics(&client, &collector_base).await, "hale_collector_log_lines_stored_total");
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
        (cpu_seconds(agent.0.id())?, cpu_seconds(collector.0.id())?);
    let (agent_metrics, collector_metrics) =
        (metrics(&client, &agent_base).await, metrics(&client, &collector_base).await);

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
        "agent stages      tail {:.2} s, encode {:.2} s, queue (append + fsync + checkpoint) {:.2} s, ship (round trips) {:.2} s",
        stage("tail"),
        stage("encode"),
        stage("queue"),
        stage("ship")
    );
    println!(
        "baseline          read from the page cache {:.0} MB/s; sequential write + fsync {:.0} MB/s",
        mb_per_s(bytes, read_took),
        mb_per_s(bytes, write_took)
    );
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
