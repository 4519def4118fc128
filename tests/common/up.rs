//! The real `hale up --headless` for end-to-end tests: on a loopback /24, port offset and
//! data dir of its own, so it runs beside other tests and beside a `hale up` someone left
//! running; killed with every process it started (found by PID) however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use hale_core::ClusterConfig;

use super::eventually;

/// A running `hale up --headless`.
pub struct Cluster {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    /// Its stdout and stderr.
    pub out: PathBuf,
    /// The node IP prefix (`127.b.c`), the control IP and the port offset it runs on.
    pub prefix: String,
    pub control_ip: String,
    pub offset: u16,
    /// Runs in a network lab of its own (`hale up --netns`).
    pub netns: bool,
    /// Runs over TLS (`hale up --tls`).
    pub tls: bool,
}

impl Cluster {
    /// Starts `hale up --headless` in `tmp` (data in `tmp/data`, output in `tmp/up.out`)
    /// and waits for its banner.
    pub async fn start(tmp: &Path, load_rps: u32, extra: &[String]) -> Cluster {
        let (prefix, control_ip, offset) = super::private_addresses();
        let mut cluster = Cluster {
            child: None,
            data_dir: tmp.join("data"),
            out: tmp.join("up.out"),
            prefix,
            control_ip,
            offset,
            netns: false,
            tls: extra.iter().any(|a| a == "--tls"),
        };
        cluster.run(load_rps, extra).await;
        cluster
    }

    /// Starts `hale up --headless --netns` in `tmp`: its hosts are network namespaces of
    /// its own, so the lab's addresses (10.77.0.0/24) are private to it and need no offset.
    pub async fn start_netns(tmp: &Path, load_rps: u32, extra: &[String]) -> Cluster {
        let mut cluster = Cluster {
            child: None,
            data_dir: tmp.join("data"),
            out: tmp.join("up.out"),
            prefix: "10.77.0".into(),
            control_ip: "10.77.0.254".into(),
            offset: 0,
            netns: true,
            tls: extra.iter().any(|a| a == "--tls"),
        };
        cluster.run(load_rps, extra).await;
        cluster
    }

    /// The running lab of a `--netns` cluster.
    pub fn lab(&self) -> hale_netlab::LabFile {
        hale_netlab::LabFile::read(&self.data_dir.join("netns")).expect("lab file").expect("a running lab")
    }

    /// Stops it as Ctrl-C would and waits (a minute at most) for it to exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hale up did not stop within a minute of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it, then starts it again on the same data dir and addresses, its output in
    /// `out`; waits for the new banner.
    pub async fn restart(&mut self, out: &Path, load_rps: u32) {
        self.stop();
        self.out = out.to_path_buf();
        self.run(load_rps, &[]).await;
    }

    async fn run(&mut self, load_rps: u32, extra: &[String]) {
        let out = std::fs::File::create(&self.out).expect("out file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hale"));
        cmd.args(["up", "--headless", "--load-rps", &load_rps.to_string(), "--data-dir"]).arg(&self.data_dir);
        if self.netns {
            cmd.arg("--netns");
        } else {
            cmd.args(["--ip-prefix", &self.prefix, "--control-ip", &self.control_ip])
                .args(["--port-offset", &self.offset.to_string()]);
        }
        cmd.args(extra);
        self.child = Some(super::spawn_logged(&mut cmd, out, "hale up"));
        let path = self.out.clone();
        eventually("cluster up and seeded", Duration::from_secs(90), async || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("hale up exited early ({status}):\n{text}");
            }
            text.contains("Hale demo cluster is up").then_some(())
        })
        .await;
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    pub fn gateway(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.control_ip, 8080 + self.offset)
    }

    pub fn collector(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.control_ip, 9464 + self.offset)
    }

    /// A client of the cluster, as `hale tui` beside it: over TLS, trusting its CA and
    /// showing the `hale` certificate `hale up --tls` issued.
    pub fn client(&self) -> reqwest::Client {
        client_of(&self.data_dir)
    }

    /// The cluster as `hale up` ran it (the data dir's cluster.toml).
    pub fn config(&self) -> ClusterConfig {
        effective_config(&self.data_dir)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // SIGKILL works on stopped (node-down) processes too.
        for pid in pids_under(&self.data_dir) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // A lab whose owner was killed: its namespaces (and what still runs there) go.
        if self.netns {
            hale_netlab::ns::remove_stale();
        }
    }
}

/// Runs `body` on a thread of its own inside `host` of `lab`, on a runtime of its own
/// (threads are born in their parent's network namespace); a panic in it is the caller's.
pub fn on_host<F, Fut>(lab: &hale_netlab::LabFile, host: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (lab, host) = (lab.clone(), host.to_string());
    let joined = std::thread::spawn(move || {
        lab.enter(&host).expect("entering the host's namespace");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(body());
    })
    .join();
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

/// PIDs whose command line mentions `dir` (a cluster's children all do).
pub fn pids_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a.contains(&needle)) && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// [`Cluster::client`] for a data dir: its CA and `hale` certificate when it has them.
pub fn client_of(data_dir: &Path) -> reqwest::Client {
    let flags = hale_client::tls::ClientTlsFlags::default().or_from_dir(&data_dir.join("certs"), "hale");
    hale_client::tls::builder_with(&flags)
        .expect("the cluster's certificates load")
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client")
}

/// The cluster as `hale up` ran it (the data dir's cluster.toml).
pub fn effective_config(data_dir: &Path) -> ClusterConfig {
    ClusterConfig::parse(&std::fs::read_to_string(data_dir.join("cluster.toml")).expect("cluster.toml")).expect("parse")
}

/// Runs `hale chaos <args> --data-dir <data_dir>` and expects it to succeed.
pub fn chaos(data_dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .arg("chaos")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("hale chaos");
    assert!(out.status.success(), "hale chaos {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Reads each product of `expected` (id, what was written) from `base` (the gateway, or a
/// catalog replica) and compares its name, description, price, stock and tags with what
/// was written: an acknowledged write that is missing or changed fails, saying `when`.
pub async fn assert_products(
    client: &reqwest::Client,
    base: &str,
    expected: &[(i64, hale_shop::catalog::CreateProduct)],
    when: &str,
) {
    for (id, want) in expected {
        let r = client.get(format!("{base}/api/products/{id}")).send().await;
        let r = r.unwrap_or_else(|e| panic!("{when}: product {id}: {e}"));
        assert_eq!(r.status(), 200, "{when}: product {id} ({want:?}) lost");
        let got: hale_shop::catalog::store::Product = r.json().await.expect("a product");
        assert_eq!(got.id, *id, "{when}");
        let got = hale_shop::catalog::CreateProduct {
            name: got.name,
            description: got.description,
            price_cents: got.price_cents,
            stock: got.stock,
            tags: got.tags,
        };
        assert_eq!(got, *want, "{when}: product {id} as written");
    }
}
