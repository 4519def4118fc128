//! The slim `hale-agent` binary: it takes `hale agent`'s flags, serves the agent's API and
//! host metrics, ships to a receiver, and stops cleanly on SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The agent process, killed if the test ends early.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// GETs `url` until it answers 200 (10 s at most), returning the body.
async fn get(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
            && let Ok(body) = r.text().await
        {
            return body;
        }
        assert!(Instant::now() < deadline, "{url} did not answer within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hale_agent_runs_the_agent_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tmp");
    let addr = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_hale-agent"))
        .args(["--node", "slim", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir.path().join("agent"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hale-agent");
    let mut agent = Agent(child);
    assert!(get(&format!("http://{addr}/healthz")).await.contains("\"node\":\"slim\""));
    let metrics = get(&format!("http://{addr}/metrics")).await;
    assert!(metrics.contains("node_uname_info{"), "host metrics are served");
    assert!(metrics.contains("node_memory_MemTotal_bytes"), "host metrics are served");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = agent.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "hale-agent did not stop within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn hale_agent_refuses_a_bad_config_with_the_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "node = \"n\"\nlisten = 12\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hale-agent")).arg("--config").arg(&path).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.toml") && err.contains("line 2"), "{err}");
}
