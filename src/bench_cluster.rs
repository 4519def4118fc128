//! A demo cluster of a benchmark's own: `hale up --headless` on a private loopback range,
//! ports and data dir (beside any cluster already running), stopped and removed when the
//! benchmark is done with it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hale_core::ClusterConfig;

pub struct DemoCluster {
    pub dir: PathBuf,
    pub config: ClusterConfig,
    child: std::process::Child,
}

impl DemoCluster {
    /// Starts a cluster with `extra` flags for `hale up` and waits for its banner.
    pub async fn start(name: &str, extra: &[String]) -> Result<DemoCluster> {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hale-bench-{name}-{}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let n = (std::process::id() + k * 37) % 200;
        let (prefix, control, offset) = (format!("127.201.{n}"), format!("127.201.{n}.254"), 20_000 + (n as u16) * 10);
        let out = std::fs::File::create(dir.join("up.out"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["up", "--headless", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--ip-prefix", &prefix, "--control-ip", &control, "--port-offset", &offset.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting hale up")?;
        let mut cluster = DemoCluster {
            dir: dir.clone(),
            config: ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).context("the embedded cluster.toml")?,
            child,
        };
        eprintln!("starting a demo cluster in {} ...", dir.display());
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
            if text.contains("Hale demo cluster is up") {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) || cluster.child.try_wait().ok().flatten().is_some() {
                bail!("hale up did not start:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let path = dir.join("data").join("cluster.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        cluster.config = ClusterConfig::parse(&text).with_context(|| path.display().to_string())?;
        Ok(cluster)
    }

    /// The `hale up` process: every component is a descendant of it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
