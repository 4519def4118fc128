//! End to end: the real `hale up` with its dashboard in a real terminal (tmux, on a
//! server socket of the test's own), read with capture-pane: the three nodes, the
//! services and the SLO table; views switched with keys; a service's traffic charted; a chaos action from the menu
//! and the healer's repair appearing; `q` quits, the terminal is restored and no process
//! is left behind.

mod common;

use common::tmux::{Tmux, processes_of};

use std::process::Command;
use std::time::Duration;

use hale_core::api::StatusReport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_runs_a_chaos_action_sees_the_repair_and_quits_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data_dir = tmp.path().join("data");
    let (prefix, control_ip, offset) = common::private_addresses();
    // A script, so the shell's own command line does not name the data dir.
    let script = tmp.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "{} up --load-rps 5 --data-dir {} --ip-prefix {prefix} --control-ip {control_ip} --port-offset {offset}\necho HALE-EXITED $?\nsleep 60\n",
            env!("CARGO_BIN_EXE_hale"),
            data_dir.display()
        ),
    )
    .expect("script");
    let t = Tmux { socket: format!("hale-test-{}-{offset}", std::process::id()), data_dir: data_dir.clone() };
    t.run(&["new-session", "-d", "-s", "hale", "-x", "160", "-y", "48", &format!("sh {}", script.display())]);

    // The overview: three nodes, the services, the SLO table.
    t.shows(
        "the overview with nodes, services and SLOs",
        Duration::from_secs(120),
        &[
            "node-1",
            "node-2",
            "node-3",
            "services",
            "catalog",
            "search",
            "orders",
            "SLOs",
            "gateway/availability",
            "collector ●",
            "healer ●",
        ],
    )
    .await;
    // `hale status` says the same for scripts: healthy, exit 0.
    let status = || {
        Command::new(env!("CARGO_BIN_EXE_hale"))
            .args(["status", "--json", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("hale status")
    };
    let out = common::eventually("hale status healthy", Duration::from_secs(30), async || {
        let out = status();
        out.status.success().then_some(out)
    })
    .await;
    let report: StatusReport = serde_json::from_slice(&out.stdout).expect("a StatusReport");
    assert_eq!((report.healthy, report.collector, report.services.len()), (true, true, 5), "{report:?}");
    // Views by name.
    t.keys(":alerts", true);
    t.shows("the alerts view", Duration::from_secs(10), &["Hale  alerts", "firing,"]).await;
    t.keys(":nodes", true);
    t.shows("the nodes view", Duration::from_secs(10), &["Hale  nodes", "processes it supervises", "gateway-1:"]).await;
    t.keys(":healer", true);
    t.shows("the healer view", Duration::from_secs(10), &["actions, newest first", "automatic repairs: on"]).await;
    t.keys("?", false);
    t.shows("the help", Duration::from_secs(10), &["any key closes this"]).await;
    t.keys("x", false);

    // Break something from the chaos menu: search-1 hangs.
    t.keys(":service search", true);
    t.shows(
        "the search service and its traffic",
        Duration::from_secs(20),
        &["search: replicas", "search-1", "requests/s: ", "p50 / p99: "],
    )
    .await;
    t.keys("c", false);
    t.shows("the chaos menu", Duration::from_secs(10), &["chaos: search-1", "hang (60 s)"]).await;
    t.keys("j", false);
    t.run(&["send-keys", "-t", "hale", "Enter"]);
    t.shows("the confirmation", Duration::from_secs(10), &["Inject `hang (60 s)` into search-1?"]).await;
    t.keys("y", false);
    t.shows("the fault injected", Duration::from_secs(15), &["search-1: fault injected"]).await;
    // The healer's repair appears in its view.
    t.keys(":healer", true);
    let screen =
        t.shows("the healer's restart of search-1", Duration::from_secs(60), &["restart", "instance/search-1"]).await;
    assert!(screen.contains("ReplicaDown"), "{screen}");

    // Quit: asked first, then the cluster stops and the terminal is itself again.
    t.keys("q", false);
    t.shows("the quit question", Duration::from_secs(10), &["Quit? The cluster this dashboard started stops."]).await;
    t.keys("y", false);
    t.shows("hale up exited", Duration::from_secs(60), &["HALE-EXITED 0"]).await;
    let flags = t.run(&["display-message", "-p", "-t", "hale", "#{alternate_on} #{cursor_flag}"]);
    assert_eq!(flags.trim(), "0 1", "alternate screen left and the cursor shown again");
    common::eventually("no process of the cluster left", Duration::from_secs(20), async || {
        processes_of(&data_dir).is_empty().then_some(())
    })
    .await;
    // With the cluster gone, `hale status` fails and says why.
    let out = status();
    assert_eq!(out.status.code(), Some(1));
    let report: StatusReport = serde_json::from_slice(&out.stdout).expect("a StatusReport");
    assert!(!report.healthy);
    assert!(report.problems.iter().any(|p| p.contains("no data from the collector")), "{report:?}");
}
