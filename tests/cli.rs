//! The `hale` command line refuses bad input with messages that say what to do next.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

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
