//! Helpers every end-to-end test binary shares. Each binary uses some of them.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process killed (by PID) when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A free address on a loopback IP of its own (127.64–127.127.x.y), so that no two tests,
/// and nothing else on the machine (a `hale up` someone left running), race for it.
pub fn free_addr() -> SocketAddr {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        ^ std::process::id().rotate_left(16)
        ^ COUNTER.fetch_add(0x9e37_79b9, std::sync::atomic::Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::new(127, 64 + (n % 64) as u8, (n >> 8) as u8, 2 + ((n >> 16) % 250) as u8);
    TcpListener::bind((ip, 0)).expect("bind").local_addr().expect("addr")
}

/// The path of a Debian program the tests need, or a failure that says how to get it.
pub fn need(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: `apt-get install prometheus prometheus-node-exporter` (.ci/run does this)");
}

/// Polls `f` every 50 ms until it gives a value, failing after `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
