//! The lab for real: namespaces, TAP links and the switch, with TCP between hosts in
//! threads that enter their namespaces. Needs root and network namespaces; skipped with
//! a message where they cannot be made.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hale_netlab::{Host, Lab, LabFile, LinkCommand};

fn available() -> bool {
    match hale_netlab::ns::check_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIPPED: cannot build a lab here: {e}");
            false
        }
    }
}

/// Runs `f` on a thread inside `host`'s namespace.
fn inside<T: Send + 'static>(lab: &LabFile, host: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let lab = lab.clone();
    let host = host.to_string();
    std::thread::spawn(move || {
        lab.enter(&host).expect("enter");
        f()
    })
    .join()
    .expect("thread")
}

/// An echo server on `addr` inside `host`, answering each connection once.
fn echo(lab: &LabFile, host: &str, addr: SocketAddr) {
    let listener = inside(lab, host, move || TcpListener::bind(addr).expect("bind"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4];
            if conn.read_exact(&mut buf).is_ok() {
                let _ = conn.write_all(&buf);
            }
        }
    });
}

/// A round trip from `host` to `addr`: its duration, or why it failed.
fn round_trip(lab: &LabFile, host: &str, addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    inside(lab, host, move || {
        let start = Instant::now();
        let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        conn.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(start.elapsed())
    })
}

#[test]
fn hosts_talk_through_the_switch_which_cuts_delays_and_drops_on_command() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let ip = |n: u8| Ipv4Addr::new(10, 77, 0, n);
    let hosts = [("control", 254), ("node-1", 1), ("node-2", 2)]
        .map(|(name, n)| Host { name: name.into(), ip: ip(n) })
        .to_vec();
    let lab = Lab::create(dir.path(), &hosts).expect("lab");
    let file = LabFile::read(dir.path()).expect("read").expect("a running lab");
    assert_eq!(&file, lab.file());
    let server = SocketAddr::from((ip(254), 7000));
    echo(&file, "control", server);
    let quick = Duration::from_secs(2);

    // Every host reaches the control host through the switch; nothing else is routed.
    for host in ["node-1", "node-2"] {
        round_trip(&file, host, server, quick).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    let outside = round_trip(&file, "node-1", SocketAddr::from(([10, 78, 0, 1], 7000)), quick);
    assert!(outside.as_ref().is_err_and(|e| e.contains("unreachable")), "no route out of the lab: {outside:?}");

    // A cut host's packets vanish (a timeout, not a refusal); the others still talk.
    let said = file.command(&LinkCommand::Partition { host: "node-2".into(), from: vec![] }).expect("partition");
    assert!(said.contains("cut off"), "{said}");
    let cut = round_trip(&file, "node-2", server, Duration::from_millis(800));
    assert!(cut.as_ref().is_err_and(|e| e.contains("timed out")), "{cut:?}");
    round_trip(&file, "node-1", server, quick).expect("node-1 unaffected");
    file.command(&LinkCommand::Heal { host: "node-2".into() }).expect("heal");
    round_trip(&file, "node-2", server, quick).expect("healed");

    // A delayed host: each of its frames leaves 150 ms late; a connect and an echo are at
    // least two of its frames in sequence.
    file.command(&LinkCommand::Delay { host: "node-1".into(), ms: 150 }).expect("delay");
    let slow = round_trip(&file, "node-1", server, quick).expect("slow but there");
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    // Total loss is a cut by another name.
    file.command(&LinkCommand::Loss { host: "node-1".into(), percent: 100.0 }).expect("loss");
    assert!(round_trip(&file, "node-1", server, Duration::from_millis(800)).is_err());
    file.command(&LinkCommand::Heal { host: "node-1".into() }).expect("heal");
    round_trip(&file, "node-1", server, quick).expect("healed");

    // Removing the lab removes its namespaces.
    let namespaces: Vec<String> = file.hosts.iter().map(|h| h.namespace.clone()).collect();
    lab.remove().expect("remove");
    for ns in namespaces {
        assert!(!std::path::Path::new("/run/netns").join(&ns).exists(), "{ns} left behind");
    }
    assert!(LabFile::read(dir.path()).expect("read").is_none());
}
