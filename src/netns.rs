//! `hale up --netns`: the demo on hosts that are network namespaces (`hale-netlab`), so
//! every message between nodes crosses a network that `hale chaos partition|delay|loss`
//! can break; and how other commands (`hale chaos`, `tui`, `status`) reach a cluster
//! that runs there.
//!
//! Both happen before the async runtime starts: a thread's network namespace is the one
//! its threads are born in, so the main thread joins the control host first.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hale_netlab::{Host, Lab, LabFile};

/// The host of the collector, the healer, the gateway and the load.
pub const CONTROL: &str = "control";
/// The lab's /24 unless `--ip-prefix` says otherwise: it exists only inside the lab's
/// namespaces, so every cluster may use the same one.
pub const DEFAULT_PREFIX: &str = "10.77.0";
/// The control host's last octet.
pub const CONTROL_HOST: u8 = 254;

/// Where a data dir keeps its lab's file and links.
pub fn lab_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("netns")
}

/// The control host's address for a node prefix of three octets.
pub fn control_ip(prefix: &str) -> Result<Ipv4Addr> {
    format!("{prefix}.{CONTROL_HOST}")
        .parse()
        .with_context(|| format!("--ip-prefix {prefix:?}: expected three octets such as 10.77.0"))
}

/// Builds the lab for `hale up --netns` — a host per node and one for the control plane —
/// and moves this thread into the control host.
pub fn start_for_up(args: &crate::up::UpArgs) -> Result<Lab> {
    let cluster = crate::up::cluster_from(args)?;
    crate::up::create_private_dir(&args.data_dir)?;
    let hosts: Vec<Host> = cluster.nodes.iter().map(|n| Host { name: n.name.clone(), ip: n.ip }).collect();
    println!(
        "hale: building the network lab: {} hosts in {}.0/24 (network namespaces, a switch of our own)",
        hosts.len(),
        prefix_of(hosts[0].ip)
    );
    let lab = Lab::create(&lab_dir(&args.data_dir), &hosts).context("building the network lab for --netns")?;
    for stale in &lab.stale_removed {
        println!("hale: removed namespace {stale}, left behind by a `hale up --netns` that was killed");
    }
    lab.file().enter(CONTROL).context("joining the control host")?;
    Ok(lab)
}

fn prefix_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}", o[0], o[1], o[2])
}

/// A command aimed at the cluster of `data_dir` joins its lab's control host when the
/// cluster runs in one, so its addresses are reachable.
pub fn join_if_lab(data_dir: &Path) -> Result<()> {
    if let Some(lab) = LabFile::read(&lab_dir(data_dir))? {
        lab.enter(CONTROL).context("joining the lab's control host (network namespaces need root)")?;
    }
    Ok(())
}

/// The running lab of `data_dir`, for link faults.
pub fn lab_of(data_dir: &Path) -> Result<LabFile> {
    LabFile::read(&lab_dir(data_dir))?.with_context(|| {
        format!(
            "no network lab runs for {}: partition, heal, delay and loss need a cluster started with \
             `sudo hale up --netns --data-dir {0}`",
            data_dir.display()
        )
    })
}
