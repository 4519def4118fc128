//! Network namespaces, managed with iproute2's `ip` (`ip netns add` makes the named,
//! bind-mounted namespaces every admin tool understands).

use std::os::fd::AsFd;
use std::process::Command;

use crate::Error;

/// Where `ip netns` keeps named namespaces.
pub const RUN_DIR: &str = "/run/netns";
/// Every lab namespace is `hale-<owner pid>-<host>`.
pub const PREFIX: &str = "hale-";

/// Runs `ip <args>`; its stderr is the error.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(Error::io(format!("running `{command}` (is iproute2 installed? `apt install iproute2`)")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

/// The name of `host`'s namespace in the lab of `owner`.
pub fn name(owner: u32, host: &str) -> String {
    format!("{PREFIX}{owner}-{host}")
}

pub fn add(name: &str) -> Result<(), Error> {
    ip(&["netns", "add", name]).map(drop)
}

/// Kills every process in the namespace (SIGKILL, by PID; never this process, which may
/// live there itself), then removes it.
pub fn remove(name: &str) -> Result<(), Error> {
    let me = std::process::id() as i32;
    for pid in pids(name).into_iter().filter(|&p| p != me) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    ip(&["netns", "del", name]).map(drop)
}

/// The processes in a namespace.
pub fn pids(name: &str) -> Vec<i32> {
    ip(&["netns", "pids", name])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Hale's lab namespaces on this machine, with their owner's PID.
pub fn list() -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir(RUN_DIR) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let owner = name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()?;
            Some((name, owner))
        })
        .collect()
}

/// Whether the lab owner `pid` still runs. A reused PID keeps a dead lab's namespaces
/// a while longer (harmless); a live owner's are never taken.
pub fn owner_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the namespaces of labs whose owner is gone (a kill -9 leaves them behind),
/// the processes inside first. Returns what it removed.
pub fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    for (name, owner) in list() {
        if !owner_alive(owner) && remove(&name).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// Moves the calling thread into namespace `name`. Threads it starts afterwards are born
/// there; call it before starting an async runtime.
pub fn enter(name: &str) -> Result<(), Error> {
    let path = format!("{RUN_DIR}/{name}");
    let file = std::fs::File::open(&path).map_err(Error::io(format!("opening {path}")))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io(format!("entering network namespace {name}"))(e.into()))
}

/// Whether this process can build a lab here: root, `ip`, and namespaces that can be
/// created. The error says what is missing.
pub fn check_available() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Invalid("network namespaces need root: run with sudo, or leave out --netns".into()));
    }
    // One probe name per call: threads of one process may ask at once.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("{PREFIX}probe{}x{n}", std::process::id());
    add(&probe)?;
    let created = std::path::Path::new(RUN_DIR).join(&probe).exists();
    let _ = ip(&["netns", "del", &probe]);
    if !created {
        return Err(Error::Invalid("`ip netns add` made no namespace under /run/netns".into()));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Error::Invalid("no /dev/net/tun: the lab's links are TAP devices (modprobe tun)".into()));
    }
    Ok(())
}
