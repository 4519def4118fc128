//! Runs the node's replicas from process specs: restarts one that dies, with a growing
//! backoff and a crash-loop guard, restarts or stops one on request, and stops them all
//! (SIGTERM, then SIGKILL after a grace period) on shutdown.
//!
//! Every child gets a parent-death signal, so even a supervisor killed with SIGKILL leaves
//! no orphans. Specs only ever come from the agent's own configuration.
//!
//! Restart backoff runs from 0.5 s doubling to 30 s, and a run longer than a minute resets
//! it. Five exits within a minute is a crash loop (in the spirit of systemd's
//! `StartLimitBurst`): the next start waits five minutes. Each process is also reported as
//! `hale_process_*` series (up, CPU, memory, open files, starts, restarts, exits) read
//! from `/proc`. `hale up` supervises the agents themselves with the same code.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hale_core::ProcessSpec;
use hale_core::metrics::{Family, MetricKind};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Restart backoff: 0.5 s doubling to 30 s; a run longer than a minute resets it.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Crash-loop guard (in the spirit of systemd's StartLimitBurst): this many exits within
/// the window and the next restart waits [`CRASH_LOOP_BACKOFF`].
const CRASH_LOOP_EXITS: usize = 5;
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
const CRASH_LOOP_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SuperviseError {
    #[error("no process named {0:?} on this node")]
    NotFound(String),
    #[error("a process named {0:?} already runs on this node")]
    Exists(String),
}

/// What a supervised process is doing, and a process as `GET /api/v1/processes` shows
/// it: wire types, so they live in core.
pub use hale_core::api::{ProcessInfo, ProcessState as State};

struct Entry {
    spec: ProcessSpec,
    state: State,
    pid: Option<u32>,
    since: Option<Instant>,
    started_unix: Option<f64>,
    restarts: u64,
    starts: u64,
    exits: u64,
    last_exit: Option<String>,
    commands: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

enum Command {
    /// Restart; the duration, when given, replaces the grace before SIGKILL.
    Restart(oneshot::Sender<()>, Option<Duration>),
    Stop(oneshot::Sender<()>),
}

type Table = Arc<Mutex<BTreeMap<String, Entry>>>;

/// The supervisor of one node's processes; cheap to share behind an `Arc`.
pub struct Supervisor {
    table: Table,
    grace: Duration,
}

fn lock(table: &Table) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervisor {
    /// `grace`: how long a child has to exit after SIGTERM before it is killed.
    pub fn new(grace: Duration) -> Self {
        Supervisor { table: Arc::default(), grace }
    }

    /// Starts `spec` and keeps it running until it is stopped.
    pub fn start(&self, spec: ProcessSpec) -> Result<(), SuperviseError> {
        let mut table = lock(&self.table);
        if table.contains_key(&spec.name) {
            return Err(SuperviseError::Exists(spec.name));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let name = spec.name.clone();
        table.insert(
            name.clone(),
            Entry {
                spec: spec.clone(),
                state: State::Starting,
                pid: None,
                since: None,
                started_unix: None,
                restarts: 0,
                starts: 0,
                exits: 0,
                last_exit: None,
                commands: tx,
                task: None,
            },
        );
        let task = tokio::spawn(keep_running(spec, self.table.clone(), rx, self.grace));
        if let Some(entry) = table.get_mut(&name) {
            entry.task = Some(task);
        }
        Ok(())
    }

    fn send(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<oneshot::Receiver<()>, SuperviseError> {
        let table = lock(&self.table);
        let entry = table.get(name).ok_or_else(|| SuperviseError::NotFound(name.to_string()))?;
        let (done_tx, done_rx) = oneshot::channel();
        entry.commands.send(make(done_tx)).map_err(|_| SuperviseError::NotFound(name.to_string()))?;
        Ok(done_rx)
    }

    /// Restarts a process now (SIGTERM, then a fresh start with the backoff reset).
    /// Returns once the new process has been spawned.
    pub async fn restart(&self, name: &str) -> Result<(), SuperviseError> {
        self.restart_with_grace(name, None).await
    }

    /// `restart` with another grace before SIGKILL: a replica that is hung will not finish
    /// its requests, so waiting for it only delays the repair.
    pub async fn restart_with_grace(&self, name: &str, grace: Option<Duration>) -> Result<(), SuperviseError> {
        let done = self.send(name, |done| Command::Restart(done, grace))?;
        let _ = done.await;
        Ok(())
    }

    /// Stops a process gracefully and forgets it.
    pub async fn stop(&self, name: &str) -> Result<(), SuperviseError> {
        let done = self.send(name, Command::Stop)?;
        let _ = done.await;
        let task = lock(&self.table).remove(name).and_then(|mut e| e.task.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(())
    }

    /// Stops every process, in parallel.
    pub async fn shutdown(&self) {
        let names: Vec<String> = lock(&self.table).keys().cloned().collect();
        futures::future::join_all(names.iter().map(|n| self.stop(n))).await;
    }

    pub fn spec(&self, name: &str) -> Option<ProcessSpec> {
        lock(&self.table).get(name).map(|e| e.spec.clone())
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        lock(&self.table)
            .values()
            .map(|e| ProcessInfo {
                name: e.spec.name.clone(),
                service: e.spec.service.clone(),
                node: e.spec.node.clone(),
                listen: e.spec.listen.to_string(),
                pid: e.pid,
                state: e.state,
                restarts: e.restarts,
                uptime_secs: e.since.filter(|_| e.state == State::Running).map(|s| s.elapsed().as_secs()),
                last_exit: e.last_exit.clone(),
                managed_by: None,
                url: None,
            })
            .collect()
    }

    /// `hale_process_*` families for every supervised process, read from /proc.
    pub fn families(&self) -> Vec<Family> {
        process_families(&self.rows())
    }

    /// What `hale_process_*` says of each supervised process.
    pub fn rows(&self) -> Vec<ProcessRow> {
        lock(&self.table)
            .values()
            .map(|e| ProcessRow {
                service: e.spec.service.clone(),
                instance: e.spec.name.clone(),
                node: e.spec.node.clone(),
                pid: e.pid.filter(|_| e.state == State::Running),
                restarts: e.restarts,
                counts: Some((e.starts, e.exits)),
                started_unix: e.started_unix,
            })
            .collect()
    }
}

/// A process as the `hale_process_*` series report it: a supervised one, or one a
/// manager runs for the agent ([`crate::adopted`]).
pub struct ProcessRow {
    pub service: String,
    pub instance: String,
    pub node: String,
    /// The running process, if one runs.
    pub pid: Option<u32>,
    pub restarts: u64,
    /// Starts and exits, where the agent sees them (its own children).
    pub counts: Option<(u64, u64)>,
    pub started_unix: Option<f64>,
}

/// The `hale_process_*` families of `rows`, resources read from /proc.
pub fn process_families(rows: &[ProcessRow]) -> Vec<Family> {
    let [mut up, mut cpu, mut rss, mut fds, mut start, mut restarts, mut starts, mut exits] = [
        ("hale_process_up", "1 if the process is running.", MetricKind::Gauge),
        ("hale_process_cpu_seconds_total", "CPU time of the process, user and system.", MetricKind::Counter),
        ("hale_process_resident_memory_bytes", "Resident memory of the process.", MetricKind::Gauge),
        ("hale_process_open_fds", "Open file descriptors of the process.", MetricKind::Gauge),
        ("hale_process_start_time_seconds", "Start time of the process, in unixtime.", MetricKind::Gauge),
        ("hale_process_restarts_total", "Times the agent restarted the process.", MetricKind::Counter),
        ("hale_process_starts_total", "Times the process was started.", MetricKind::Counter),
        ("hale_process_exits_total", "Times the process exited on its own.", MetricKind::Counter),
    ]
    .map(|(name, help, kind)| Family::new(name, help, kind));
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size() as f64;
    for row in rows {
        let labels =
            [("service", row.service.as_str()), ("instance", row.instance.as_str()), ("node", row.node.as_str())];
        up.push(&labels, if row.pid.is_some() { 1.0 } else { 0.0 });
        restarts.push(&labels, row.restarts as f64);
        if let Some((started, exited)) = row.counts {
            starts.push(&labels, started as f64);
            exits.push(&labels, exited as f64);
        }
        if let Some(unix) = row.started_unix {
            start.push(&labels, unix);
        }
        let Some(pid) = row.pid else { continue };
        let Ok(process) = procfs::process::Process::new(pid as i32) else { continue };
        if let Ok(stat) = process.stat() {
            cpu.push(&labels, (stat.utime + stat.stime) as f64 / ticks);
            rss.push(&labels, stat.rss as f64 * page);
        }
        if let Ok(n) = process.fd_count() {
            fds.push(&labels, n as f64);
        }
    }
    vec![up, cpu, rss, fds, start, restarts, starts, exits]
}

fn update(table: &Table, name: &str, f: impl FnOnce(&mut Entry)) {
    if let Some(entry) = lock(table).get_mut(name) {
        f(entry);
    }
}

async fn keep_running(
    spec: ProcessSpec,
    table: Table,
    mut commands: mpsc::UnboundedReceiver<Command>,
    grace: Duration,
) {
    let mut backoff = BACKOFF_START;
    let mut exits: Vec<Instant> = Vec::new();
    loop {
        let started = Instant::now();
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(process = %spec.name, error = %e, "could not start process");
                update(&table, &spec.name, |en| {
                    en.state = State::Restarting;
                    en.last_exit = Some(format!("could not start: {e}"));
                });
                match wait_or_command(&mut commands, backoff).await {
                    Some(Command::Stop(done)) => return finish(&table, &spec.name, done),
                    Some(Command::Restart(done, _)) => {
                        let _ = done.send(());
                    }
                    None => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(process = %spec.name, pid, "process started");
        update(&table, &spec.name, |en| {
            en.state = State::Running;
            en.starts += 1;
            en.pid = pid;
            en.since = Some(started);
            en.started_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs_f64());
        });
        tokio::select! {
            exit = child.wait() => {
                let how = match exit {
                    Ok(status) => describe_exit(status),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > HEALTHY_RUN {
                    backoff = BACKOFF_START;
                }
                exits.retain(|t| t.elapsed() < CRASH_LOOP_WINDOW);
                exits.push(Instant::now());
                let crash_loop = exits.len() >= CRASH_LOOP_EXITS;
                let wait = if crash_loop { CRASH_LOOP_BACKOFF } else { backoff };
                if crash_loop {
                    tracing::error!(process = %spec.name, exits = exits.len(), "process {how}; crash loop, next start in {}s", wait.as_secs());
                } else {
                    tracing::warn!(process = %spec.name, "process {how}; restarting in {:.1}s", wait.as_secs_f64());
                }
                update(&table, &spec.name, |en| {
                    en.state = if crash_loop { State::CrashLoop } else { State::Restarting };
                    en.pid = None;
                    en.last_exit = Some(how);
                    en.exits += 1;
                    en.restarts += 1;
                });
                match wait_or_command(&mut commands, wait).await {
                    Some(Command::Stop(done)) => return finish(&table, &spec.name, done),
                    Some(Command::Restart(done, _)) => {
                        backoff = BACKOFF_START;
                        let _ = done.send(());
                    }
                    None => backoff = (backoff * 2).min(BACKOFF_MAX),
                }
            }
            command = commands.recv() => {
                update(&table, &spec.name, |en| en.state = State::Stopping);
                let grace = match &command {
                    Some(Command::Restart(_, Some(g))) => *g,
                    _ => grace,
                };
                terminate(&mut child, grace).await;
                match command {
                    Some(Command::Restart(done, _)) => {
                        tracing::info!(process = %spec.name, "process restarted on request");
                        update(&table, &spec.name, |en| {
                            en.restarts += 1;
                            en.pid = None;
                            en.last_exit = Some("restarted on request".into());
                        });
                        backoff = BACKOFF_START;
                        exits.clear();
                        let _ = done.send(());
                    }
                    Some(Command::Stop(done)) => return finish(&table, &spec.name, done),
                    None => return finish_quietly(&table, &spec.name),
                }
            }
        }
    }
}

fn finish(table: &Table, name: &str, done: oneshot::Sender<()>) {
    finish_quietly(table, name);
    let _ = done.send(());
}

fn finish_quietly(table: &Table, name: &str) {
    tracing::info!(process = %name, "process stopped");
    update(table, name, |en| {
        en.state = State::Stopped;
        en.pid = None;
    });
}

/// Sleeps for `wait` unless a command arrives first.
async fn wait_or_command(commands: &mut mpsc::UnboundedReceiver<Command>, wait: Duration) -> Option<Command> {
    tokio::select! {
        _ = tokio::time::sleep(wait) => None,
        command = commands.recv() => command,
    }
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
    for key in hale_core::withheld_from_children(|name| spec.env.iter().any(|(k, _)| k == name)) {
        command.env_remove(key);
    }
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
    // async-signal-safe functions (prctl, getppid, getpid, kill) and allocates nothing.
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

    fn pid(sup: &Supervisor, name: &str) -> Option<u32> {
        sup.list().into_iter().find(|p| p.name == name).and_then(|p| p.pid.filter(|_| p.state == State::Running))
    }

    /// A supervisor with `grace` running `script` as `name`, and its pid once it runs.
    async fn running(grace: Duration, name: &str, script: &str, dir: &std::path::Path) -> (Supervisor, u32) {
        let sup = Supervisor::new(grace);
        sup.start(spec(name, script, dir)).expect("start");
        wait_until(|| pid(&sup, name).is_some()).await;
        let pid = pid(&sup, name).expect("running");
        (sup, pid)
    }

    #[test]
    fn a_child_inherits_none_of_the_supervisors_tokens() {
        let mut child = spec("shop", "true", std::path::Path::new("/tmp"));
        child.env = vec![("HALE_LOAD_PASSWORD".into(), "its own".into())];
        let parent = ["HALE_AGENT_TOKEN", "HALE_INGEST_TOKEN", "HALE_LOAD_PASSWORD", "PATH", "RUST_LOG"];
        let given = |name: &str| child.env.iter().any(|(k, _)| k == name);
        let removed = hale_core::not_inherited(parent.iter().map(std::ffi::OsString::from), given);
        assert_eq!(removed, ["HALE_AGENT_TOKEN", "HALE_INGEST_TOKEN"]);
    }

    #[tokio::test]
    async fn restarts_a_killed_child_and_reports_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sup, first) = running(Duration::from_secs(2), "sleeper", "exec sleep 30", dir.path()).await;
        assert_eq!(sup.start(spec("sleeper", "true", dir.path())), Err(SuperviseError::Exists("sleeper".into())));
        kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill");
        wait_until(|| pid(&sup, "sleeper").is_some_and(|p| p != first)).await;
        let info = &sup.list()[0];
        assert_eq!(info.restarts, 1);
        assert_eq!(info.last_exit.as_deref(), Some("was killed by SIGKILL"));
        let families = sup.families();
        let up = families.iter().find(|f| f.name == "hale_process_up").expect("up");
        assert_eq!(up.samples[0].value, 1.0);
        assert!(
            families
                .iter()
                .find(|f| f.name == "hale_process_resident_memory_bytes")
                .is_some_and(|f| f.samples[0].value > 0.0)
        );
        let second = pid(&sup, "sleeper").expect("running");
        sup.shutdown().await;
        assert!(kill(Pid::from_raw(second as i32), None).is_err(), "child is gone after shutdown");
    }

    #[tokio::test]
    async fn restart_and_stop_on_request() {
        let dir = tempfile::tempdir().expect("tmp");
        let (sup, first) = running(Duration::from_secs(2), "svc", "exec sleep 30", dir.path()).await;
        sup.restart("svc").await.expect("restart");
        wait_until(|| pid(&sup, "svc").is_some_and(|p| p != first)).await;
        assert!(kill(Pid::from_raw(first as i32), None).is_err());
        let second = pid(&sup, "svc").expect("pid");
        sup.stop("svc").await.expect("stop");
        assert!(sup.list().is_empty());
        assert!(kill(Pid::from_raw(second as i32), None).is_err());
        assert_eq!(sup.restart("svc").await, Err(SuperviseError::NotFound("svc".into())));
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_grace() {
        let dir = tempfile::tempdir().expect("tmp");
        let script = "trap '' TERM; while true; do sleep 0.1; done";
        let (sup, pid) = running(Duration::from_millis(300), "stubborn", script, dir.path()).await;
        // Without the SIGKILL after the grace, the shutdown would wait for ever.
        tokio::time::timeout(Duration::from_secs(60), sup.shutdown()).await.expect("killed after the grace");
        assert!(kill(Pid::from_raw(pid as i32), None).is_err());
    }

    #[tokio::test]
    async fn a_restart_takes_the_grace_it_is_given() {
        let dir = tempfile::tempdir().expect("tmp");
        let (marker, stubborn) = (dir.path().join("trapped"), dir.path().join("stubborn"));
        // The child says when it ignores SIGTERM, so no signal races its `trap`; it ignores
        // SIGTERM while `stubborn` exists and exits on it once that is gone.
        let script = format!(
            "trap '[ -e {} ] || exit 0' TERM; touch {}; while true; do sleep 0.05; done",
            stubborn.display(),
            marker.display()
        );
        std::fs::write(&stubborn, "").expect("stubborn");
        // A default grace of an hour: a restart that finishes in time took the grace it
        // was given, not the default. The deadline only tells "the grace given" from "an hour".
        let deadline = Duration::from_secs(60);
        let sup = Supervisor::new(Duration::from_secs(3600));
        sup.start(spec("stubborn", &script, dir.path())).expect("start");
        wait_until(|| marker.exists()).await;
        let first = pid(&sup, "stubborn").expect("pid");
        // The marker goes before each restart, never after: the new child may touch it the
        // moment the restart returns (removing it then waited forever, once in CI).
        std::fs::remove_file(&marker).expect("rm");
        let started = Instant::now();
        let restart = sup.restart_with_grace("stubborn", Some(Duration::from_millis(1500)));
        tokio::time::timeout(deadline, restart).await.expect("the grace given, not the default").expect("restart");
        assert!(started.elapsed() >= Duration::from_millis(1400), "it ignored SIGTERM for the grace");
        assert!(kill(Pid::from_raw(first as i32), None).is_err(), "the first child is gone");
        wait_until(|| marker.exists()).await;
        let second = pid(&sup, "stubborn").expect("pid");
        assert_ne!(second, first);
        // No grace: SIGKILL at once, where the default would wait an hour.
        std::fs::remove_file(&marker).expect("rm");
        let restart = sup.restart_with_grace("stubborn", Some(Duration::ZERO));
        tokio::time::timeout(deadline, restart).await.expect("no grace: killed at once").expect("restart");
        assert!(kill(Pid::from_raw(second as i32), None).is_err(), "the second child is gone");
        let info = sup.list().into_iter().find(|p| p.name == "stubborn").expect("listed");
        assert_eq!(info.last_exit.as_deref(), Some("restarted on request"));
        // Willing to go now: stopped on SIGTERM, well within the default grace.
        wait_until(|| marker.exists()).await;
        std::fs::remove_file(&stubborn).expect("rm");
        tokio::time::timeout(deadline, sup.stop("stubborn")).await.expect("stopped on SIGTERM").expect("stop");
        assert!(sup.list().is_empty());
    }

    #[tokio::test]
    async fn a_crash_loop_is_held_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let sup = Supervisor::new(Duration::from_secs(1));
        sup.start(spec("crasher", "exit 3", dir.path())).expect("start");
        // 0.5 + 1 + 2 + 4 s of backoff before the fifth exit.
        tokio::time::pause();
        wait_until(|| sup.list()[0].state == State::CrashLoop).await;
        let info = &sup.list()[0];
        assert_eq!(info.last_exit.as_deref(), Some("exited with status 3"));
        assert!(info.restarts >= 5);
        sup.shutdown().await;
    }
}
