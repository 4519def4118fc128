//! The `hale` command line refuses bad input with messages that say what to do next,
//! and says what it did.

mod common;

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use hale_core::api::{ProcessInfo, ProcessState};

fn hale(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hale");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

#[test]
fn up_reports_config_errors_with_their_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("cluster.toml");
    let text = hale_core::DEFAULT_CLUSTER_TOML.replacen("name = \"node-3\"", "name = \"node-3\"\ncolour = \"blue\"", 1);
    std::fs::write(&config, &text).expect("write");
    let out = hale(
        &[
            "up",
            "--headless",
            "--config",
            config.to_str().expect("utf8"),
            "--data-dir",
            dir.path().to_str().expect("utf8"),
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.starts_with("colour")).expect("line") + 1;
    assert!(stderr.contains(&format!("line {line}")) && stderr.contains("colour"), "{stderr}");
}

#[test]
fn up_names_the_way_out_when_an_address_is_taken() {
    let dir = tempfile::tempdir().expect("tmp");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    // Put the gateway (port 8080 + offset) exactly on the port we hold.
    let offset = port.checked_sub(8080).expect("ephemeral ports lie above 8080").to_string();
    let out = hale(
        &[
            "up",
            "--headless",
            "--control-ip",
            "127.0.0.1",
            "--ip-prefix",
            "127.201.7",
            "--port-offset",
            &offset,
            "--data-dir",
            dir.path().to_str().expect("utf8"),
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gateway-1") && stderr.contains("--port-offset"), "{stderr}");
}

#[test]
fn hash_password_prints_an_argon2_hash_auth_accepts() {
    let out = hale(&["shop", "hash-password"], Some("correct horse\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).expect("utf8");
    assert!(hash.trim().starts_with("$argon2id$"), "{hash}");
    let empty = hale(&["shop", "hash-password"], Some("\n"));
    assert!(!empty.status.success());
}

#[test]
fn load_rejects_a_bad_mix_before_sending_anything() {
    let out = hale(&["load", "--gateway", "http://127.0.0.1:9", "--mix", "browse=0", "--duration", "1s"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mix"));
}

#[test]
fn collector_reports_config_errors_with_their_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nretention = \"soon\"\n").expect("write");
    let out = hale(&["collector", "--config", config.to_str().expect("utf8")], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2") && stderr.contains("retention"), "{stderr}");
    let out = hale(&["collector", "--retention", "whenever", "--data-dir", dir.path().to_str().expect("utf8")], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("15d"));
}

/// #21 (THREAT_MODEL.md): telemetry drives the healer, so a collector stores it only for
/// senders with the ingest token — or, for a throwaway collector, when told in so many
/// words. Started with neither, it says what to give and does not start.
#[test]
fn a_collector_without_an_ingest_token_refuses_to_start_unless_told_to_be_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    let listen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let args = ["collector", "--listen", &listen, "--data-dir", data_dir.to_str().expect("utf8")];
    let out = hale(&args, None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--ingest-token-file") && stderr.contains("--insecure-open-ingest"), "{stderr}");
    let both = [&args[..], &["--ingest-token", "t0k3n-of-sixteen+", "--insecure-open-ingest"]].concat();
    let out = hale(&both, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("contradict"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue #12, finding 14: without its data dir, `hale status` and `hale tui` used to fall
/// back to 127.0.0.1 and could report on another cluster. They say what is missing and
/// what to do, and fail.
#[test]
fn status_and_tui_refuse_a_data_dir_without_a_cluster() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().to_str().expect("utf8");
    for command in ["status", "tui"] {
        let out = hale(&[command, "--data-dir", data_dir], None);
        assert!(!out.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no cluster.toml in") && stderr.contains("hale up") && stderr.contains("--collector"),
            "{command}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{command} reported on some cluster: {}", String::from_utf8_lossy(&out.stdout));
    }
    // A broken cluster.toml is named with its line, never ignored.
    std::fs::write(dir.path().join("cluster.toml"), "[[nodes]]\nname = 7\n").expect("write");
    for command in ["status", "tui", "silence"] {
        let args: &[&str] = if command == "silence" { &["silence", "list"] } else { &[command] };
        let out = hale(&[args, &["--data-dir", data_dir]].concat(), None);
        assert!(!out.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cluster.toml") && stderr.contains("line 2"), "{command}: {stderr}");
    }
}

/// Explicit addresses still work without a data dir: the report is about them.
#[test]
fn status_takes_explicit_addresses_without_a_data_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    let nobody = "http://127.0.0.1:9"; // the discard port: nothing answers
    let out = hale(
        &["status", "--data-dir", dir.path().to_str().expect("utf8"), "--collector", nobody, "--healer", nobody],
        None,
    );
    assert!(!out.status.success(), "an unreachable collector is not healthy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("collector BAD"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Only one of the two: the other would be a guess.
    let out = hale(&["status", "--data-dir", dir.path().to_str().expect("utf8"), "--collector", nobody], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--healer"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `hale silence` reads the collector and the admin token from the data dir like the
/// other commands, and a refusal names the flag and variable that carry the token.
#[test]
fn silence_takes_the_data_dir_and_names_the_token_flag_on_401() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().to_str().expect("utf8");
    let out = hale(&["silence", "list", "--data-dir", data_dir], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no cluster.toml in") && stderr.contains("hale up"), "{stderr}");
    // A collector that refuses every token, as a wrong one is refused.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\r\n\r\n") {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let body =
            r#"{"status":"error","errorType":"unauthorized","error":"missing or wrong bearer token (--admin-token)"}"#;
        let reply = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).expect("write");
        String::from_utf8_lossy(&request).to_string()
    });
    let mut cluster = hale_core::ClusterConfig::parse(hale_core::DEFAULT_CLUSTER_TOML).expect("default config");
    cluster.collector.listen = addr;
    cluster.secrets.admin_token = "the-data-dirs-own-admin-token".into();
    std::fs::write(dir.path().join("cluster.toml"), cluster.to_toml()).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["silence", "expire", "some-id", "--data-dir", data_dir])
        .env_remove("HALE_ADMIN_TOKEN")
        .output()
        .expect("run hale");
    let request = server.join().expect("server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(request.to_lowercase().contains("authorization: bearer the-data-dirs-own-admin-token"), "{request}");
    assert!(stderr.contains("--token") && stderr.contains("HALE_ADMIN_TOKEN"), "{stderr}");
    assert!(!stderr.contains("--admin-token"), "hale silence has no --admin-token: {stderr}");
}

/// Issue #12, findings 17 and 18: the line `hale up` ends with counts the replicas'
/// restarts (their agents restart them, not `hale up`: it used to say "0 restarts" after
/// several), and says where the data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_counts_replica_restarts_when_it_stops_and_says_where_the_data_stays() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut up = common::up::Cluster::start(tmp.path(), 0, &[]).await;
    let data_dir = up.data_dir.clone();
    let read = || std::fs::read_to_string(tmp.path().join("up.out")).unwrap_or_default();
    let (prefix, offset) = (up.prefix.clone(), up.offset);
    let agent = hale_client::Agent::new(&format!("http://{prefix}.3:{}", 9100 + offset)).expect("agent client");
    let search_1 = async || -> Option<ProcessInfo> {
        agent.processes().await.ok()?.processes.into_iter().find(|p| p.name == "search-1")
    };
    let restarts = async || -> Option<u64> { Some(search_1().await?.restarts) };
    let running = async || -> Option<()> {
        let p = search_1().await?;
        (p.state == ProcessState::Running && p.pid.is_some()).then_some(())
    };
    for round in 1..=2u64 {
        common::eventually("search-1 running", std::time::Duration::from_secs(30), running).await;
        let kill = hale(&["chaos", "kill", "search-1", "--data-dir", data_dir.to_str().expect("utf8")], None);
        assert!(kill.status.success(), "{}", String::from_utf8_lossy(&kill.stderr));
        common::eventually("search-1 restarted by its agent", std::time::Duration::from_secs(20), async || {
            restarts().await.filter(|n| *n >= round)
        })
        .await;
    }
    let counted = restarts().await.expect("search-1's restarts");
    up.stop().expect("hale up was running");
    let text = read();
    let line = text.lines().find(|l| l.starts_with("hale: stopped")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("and 9 replicas"), "{line}");
    let said: u64 = line
        .split("replicas were restarted ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no replica restarts in: {line}"));
    assert!(said >= counted && counted >= 2, "{said} restarts said, search-1 alone had {counted}: {line}");
    assert!(text.contains(&format!("the data stays in {}", data_dir.canonicalize().expect("dir").display())), "{text}");
}

/// The healer's intake token must not be its write token: one credential would then both
/// feed it alerts and approve, pause and reset it.
#[test]
fn the_healer_refuses_an_intake_token_equal_to_its_write_token() {
    let out = Command::new(env!("CARGO_BIN_EXE_hale"))
        .args(["healer", "--cluster", "/nonexistent/cluster.toml", "--policies", "/nonexistent/policies.yaml"])
        .env("HALE_HEALER_TOKEN", "one-token-for-everything")
        .env("HALE_HEALER_INTAKE_TOKEN", "one-token-for-everything")
        .output()
        .expect("hale healer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--intake-token is the same as --token"), "{stderr}");
}
