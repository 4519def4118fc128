//! Runs process specs as children: restarts a replica that dies with a growing backoff,
//! and stops them all (SIGTERM, then SIGKILL after a grace period) on shutdown.
//!
//! Every child is started with a parent-death signal, so even a `hale up` killed with
//! SIGKILL leaves no orphans. This module is written to move into the node agent (which
//! will supervise the replicas of its node) without changes to its interface.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hale_core::ProcessSpec;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a supervised process is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessState {
    Running { pid: u32, since: Instant },
    Restarting { after: Duration },
    Stopped,
}

#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub state: ProcessState,
    pub restarts: u32,
}

/// Restart backoff: 0.5 s doubling to 30 s; a run of more than a minute resets it.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(60);

pub struct Supervisor {
    status: Arc<Mutex<BTreeMap<String, ProcessStatus>>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    grace: Duration,
}

impl Supervisor {
    /// `grace`: how long a child has to exit after SIGTERM before it is killed.
    pub fn new(grace: Duration) -> Self {
        Supervisor { status: Arc::default(), tasks: Vec::new(), stop: watch::Sender::new(false), grace }
    }

    /// Starts `spec` and keeps it running until [`Supervisor::shutdown`].
    pub fn start(&mut self, spec: ProcessSpec) {
        let status = self.status.clone();
        status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), ProcessStatus { state: ProcessState::Stopped, restarts: 0 });
        let stop = self.stop.subscribe();
        let grace = self.grace;
        self.tasks.push(tokio::spawn(keep_running(spec, status, stop, grace)));
    }

    pub fn status(&self) -> Vec<ProcessStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Stops every child: SIGTERM, then SIGKILL for those still alive after the grace
    /// period. Returns once all have exited.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn set_state(status: &Mutex<BTreeMap<String, ProcessStatus>>, name: &str, f: impl FnOnce(&mut ProcessStatus)) {
    if let Some(s) = status.lock().unwrap_or_else(|p| p.into_inner()).get_mut(name) {
        f(s);
    }
}

async fn keep_running(
    spec: ProcessSpec,
    status: Arc<Mutex<BTreeMap<String, ProcessStatus>>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut backoff = BACKOFF_START;
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(e) => {
                eprintln!("hale: could not start {}: {e}", spec.name);
                set_state(&status, &spec.name, |s| s.state = ProcessState::Restarting { after: backoff });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        set_state(&status, &spec.name, |s| s.state = ProcessState::Running { pid, since: started });
        tokio::select! {
            exit = child.wait() => {
                if *stop.borrow() {
                    break;
                }
                let how = match exit {
                    Ok(s) => describe_exit(s),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > HEALTHY_RUN {
                    backoff = BACKOFF_START;
                }
                eprintln!("hale: {} ({}) {how}; restarting in {:.1}s", spec.name, spec.node, backoff.as_secs_f64());
                set_state(&status, &spec.name, |s| {
                    s.state = ProcessState::Restarting { after: backoff };
                    s.restarts += 1;
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            _ = stop.changed() => {
                terminate(&mut child, grace).await;
                break;
            }
        }
    }
    set_state(&status, &spec.name, |s| s.state = ProcessState::Stopped);
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!(
            "was killed by {}",
            Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
        ),
        _ => "exited".to_string(),
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<tokio::process::Child> {
    if let Some(parent) = spec.output_file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(&spec.output_file)?;
    let err = out.try_clone()?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    set_parent_death_signal(&mut command);
    command.spawn()
}

/// Asks the kernel to SIGTERM the child when its parent dies, however it dies.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut tokio::process::Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec; it only calls
    // async-signal-safe functions (prctl, getppid, kill) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                let _ = kill(nix::unistd::getpid(), Signal::SIGTERM);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, script: &str, dir: &std::path::Path) -> ProcessSpec {
        ProcessSpec {
            name: name.into(),
            service: "test".into(),
            node: "node-1".into(),
            listen: "127.0.0.1:1".parse().expect("addr"),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            output_file: dir.join(format!("{name}.out")),
        }
    }

    async fn wait_until(mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "condition not reached in 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn restarts_a_dead_child_and_stops_cleanly() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sup = Supervisor::new(Duration::from_secs(2));
        sup.start(spec("sleeper", "exec sleep 30", dir.path()));
        let pid = || match sup.status()[0].state {
            ProcessState::Running { pid, .. } => Some(pid),
            _ => None,
        };
        wait_until(|| pid().is_some()).await;
        let first = pid().expect("running");
        kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill");
        wait_until(|| pid().is_some_and(|p| p != first)).await;
        assert_eq!(sup.status()[0].restarts, 1);
        let second = pid().expect("running");
        sup.shutdown().await;
        assert!(kill(Pid::from_raw(second as i32), None).is_err(), "child is gone after shutdown");
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_grace() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut sup = Supervisor::new(Duration::from_millis(300));
        sup.start(spec("stubborn", "trap '' TERM; while true; do sleep 0.1; done", dir.path()));
        wait_until(|| matches!(sup.status()[0].state, ProcessState::Running { .. })).await;
        let ProcessState::Running { pid, .. } = sup.status()[0].state else { unreachable!() };
        let started = Instant::now();
        sup.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(kill(Pid::from_raw(pid as i32), None).is_err());
    }
}
