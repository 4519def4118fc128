//! #21: the collector's disk fills up. A small tmpfs the test mounts under its own temp
//! dir holds the data dir (root only; elsewhere the test says SKIPPED): ingest is refused
//! with 507 and `Retry-After` while queries are answered, the WAL stays consistent (every
//! acknowledged sample is there after a kill -9, the refused ones are not half there), and
//! ingest comes back as soon as space does — with nothing to restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proc, eventually, free_addr};
use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};

/// A tmpfs mounted on a directory of the test's, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "hale-test", &dir.display().to_string()])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({})", String::from_utf8_lossy(&out.stderr).trim());
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` until a write fails; the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).and_then(|()| file.sync_data()).is_ok() {}
    // The last partial chunk: byte by byte until nothing fits.
    while file.write_all(&[0]).and_then(|()| file.sync_data()).is_ok() {}
    path
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// Batch `i`: a new series `full_<i>` with the value `i`, and a sample of the shared
/// series `shared` (so later batches refer to a series an earlier one created).
fn batch(i: u32, at: i64) -> Vec<u8> {
    let series = |name: String, value: f64| {
        TimeSeries::new(
            vec![
                Label { name: "__name__".into(), value: name },
                Label { name: "job".into(), value: "disk".into() },
                Label { name: "pad".into(), value: "x".repeat(200) },
            ],
            vec![Sample { value, timestamp: at }],
        )
    };
    remote_write::encode(&WriteRequest {
        timeseries: vec![series(format!("full_{i}"), f64::from(i)), series("shared".into(), f64::from(i))],
        metadata: Vec::new(),
    })
}

async fn write(client: &reqwest::Client, addr: std::net::SocketAddr, body: Vec<u8>) -> reqwest::Response {
    client
        .post(format!("http://{addr}/api/v1/write"))
        .header("content-encoding", "snappy")
        .body(body)
        .send()
        .await
        .expect("the collector answers")
}

async fn start(addr: std::net::SocketAddr, data: &Path, out: &Path, min_free: &str) -> Proc {
    let args = ["--min-free-bytes".to_string(), min_free.to_string()];
    let mut proc = common::spawn_collector(addr, data, out, &args, &[]);
    common::collector_ready(&mut proc, addr, out).await;
    proc
}

/// Every acknowledged batch's series holds its value.
async fn assert_kept(client: &reqwest::Client, addr: std::net::SocketAddr, acked: &[u32], when: &str) {
    let base = format!("http://{addr}");
    let got = common::query(client, &base, r#"{job="disk", __name__=~"full_.*"}"#).await.expect("a query answer");
    let mut names: Vec<String> = got.iter().map(|s| s.metric["__name__"].clone()).collect();
    names.sort();
    let mut want: Vec<String> = acked.iter().map(|i| format!("full_{i}")).collect();
    want.sort();
    assert_eq!(names, want, "{when}: the acknowledged series, and only those");
    for s in &got {
        let i: f64 = s.metric["__name__"].trim_start_matches("full_").parse().expect("index");
        assert_eq!(s.value.1.parse::<f64>().expect("value"), i, "{when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_ingest_keeps_the_wal_whole_and_takes_data_again_once_space_is_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(mnt) = Tmpfs::mount(&tmp.path().join("mnt"), "24m") else { return };
    let (addr, data, out) = (free_addr(), mnt.0.join("data"), tmp.path().join("collector.out"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    // No reserve: the WAL itself runs into the full disk.
    let mut collector = start(addr, &data, &out, "0").await;
    let at = now_ms();
    let mut acked = Vec::new();
    for i in 0..3 {
        assert_eq!(write(&client, addr, batch(i, at)).await.status(), 204);
        acked.push(i);
    }
    let filler = fill(&mnt.0);
    // What still fits in the WAL file's last page is taken; then a write is refused.
    let mut refused = None;
    for i in 3..2000 {
        let r = write(&client, addr, batch(i, at)).await;
        match r.status().as_u16() {
            204 => acked.push(i),
            507 => {
                let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = r.text().await.expect("body");
                assert!(body.contains("disk is full") && body.contains("free space"), "{body}");
                assert_eq!(retry.as_deref(), Some("10"), "a sender is told when to come back");
                refused = Some(i);
                break;
            }
            other => panic!("batch {i}: {other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    let refused = refused.expect("the full disk refused a write");
    println!("the disk filled up: {} batches acknowledged, batch {refused} refused with 507", acked.len());
    // Refused again while full; queries go on, and show no trace of the refused batches.
    assert_eq!(write(&client, addr, batch(refused, at)).await.status(), 507);
    assert_kept(&client, addr, &acked, "while the disk is full").await;
    let metrics =
        client.get(format!("http://{addr}/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("hale_collector_ingest_refused_disk_full_total"), "counted");

    // Space back: the same batch is taken, with nothing restarted, and a later one that
    // refers to the series the refused batch created.
    std::fs::remove_file(&filler).expect("free the space");
    eventually("ingest taken again", Duration::from_secs(10), async || {
        (write(&client, addr, batch(refused, at)).await.status() == 204).then_some(())
    })
    .await;
    acked.push(refused);
    assert_eq!(write(&client, addr, batch(refused + 1, at + 1)).await.status(), 204);
    acked.push(refused + 1);
    assert_kept(&client, addr, &acked, "once space was back").await;

    // The WAL is whole: after a kill -9 everything acknowledged is replayed. Restarted
    // with a reserve larger than the disk, ingest is refused before anything is written.
    collector.kill_9();
    let _collector = start(addr, &data, &out, &(64u64 << 20).to_string()).await;
    assert_kept(&client, addr, &acked, "after kill -9 and a restart").await;
    let shared =
        common::query(&client, &format!("http://{addr}"), r#"shared{job="disk"}"#).await.expect("the shared series");
    assert_eq!(shared.len(), 1, "one shared series, written by every batch");
    let r = write(&client, addr, batch(5000, at)).await;
    assert_eq!(r.status(), 507, "below the reserve");
    assert!(r.text().await.expect("body").contains("--min-free-bytes"));
    assert_kept(&client, addr, &acked, "refused by the reserve").await;
}
