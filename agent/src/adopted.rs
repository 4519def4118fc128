//! Services the agent watches and acts on but does not run: a `[[services]]` entry with
//! `managed = {...}` names who runs it — a systemd unit, or a pidfile — and, optionally,
//! the commands that restart, stop or start it. The actuator's restart and stop reach
//! such a service through its manager; its process (found through the manager) is
//! reported like a supervised one (`GET /api/v1/processes`, `hale_process_*`).
//!
//! What runs is only ever what the agent's own config names: a systemd unit's verbs go to
//! `systemctl` with the unit as one argument, commands are argument vectors run without
//! a shell, with a timeout, and nothing from a request is ever added to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hale_core::api::{ProcessInfo, ProcessState};
use serde::{Deserialize, Serialize};

/// How long a stopped pidfile process has after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Who runs a service the agent adopts, and how to act on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Managed {
    /// A systemd unit (`nginx.service`): `systemctl restart|stop|start <unit>`, its
    /// process from `systemctl show` (MainPID, ActiveState).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<String>,
    /// A pidfile: the service runs while the process it names does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    /// Commands (argument vectors, no shell) replacing the manager's own verbs. A
    /// pidfile service restarts by `restart`, or by stopping (SIGTERM, then SIGKILL after
    /// 10 s) and running `start`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start: Vec<String>,
    /// The instance name the process is listed and acted on by (the service's name by
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Where it listens, as shown in the process list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// How long a command may run.
    #[serde(default = "Managed::default_timeout_ms")]
    pub command_timeout_ms: u64,
}

impl Managed {
    fn default_timeout_ms() -> u64 {
        30_000
    }

    /// Checks the entry: exactly one manager, commands that name a program, a way to
    /// restart.
    pub fn check(&self) -> Result<(), String> {
        match (&self.systemd, &self.pidfile) {
            (Some(_), Some(_)) => return Err("name either `systemd` or `pidfile`, not both".into()),
            (None, None) => {
                return Err("needs `systemd = \"<unit>\"` or `pidfile = \"<path>\"` (to know whether it runs)".into());
            }
            (Some(unit), None) if unit.trim().is_empty() || unit.starts_with('-') => {
                return Err(format!("systemd unit {unit:?} is not a unit name"));
            }
            (None, Some(_)) if self.restart.is_empty() && self.start.is_empty() => {
                return Err("a pidfile service needs `restart` or `start` commands to be restarted".into());
            }
            _ => {}
        }
        for (verb, command) in [("restart", &self.restart), ("stop", &self.stop), ("start", &self.start)] {
            if command.first().is_some_and(|program| program.trim().is_empty()) {
                return Err(format!("`{verb}` must start with a program"));
            }
        }
        if !(100..=600_000).contains(&self.command_timeout_ms) {
            return Err("`command_timeout_ms` must be between 100 and 600000".into());
        }
        Ok(())
    }

    /// Who manages it, as the process list says (`systemd:nginx.service`).
    pub fn describe(&self) -> String {
        match (&self.systemd, &self.pidfile) {
            (Some(unit), _) => format!("systemd:{unit}"),
            (None, Some(path)) => format!("pidfile:{}", path.display()),
            (None, None) => "unknown".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what} did not finish within {timeout_ms} ms")]
    Timeout { what: String, timeout_ms: u64 },
    #[error("{0}")]
    Manager(String),
}

/// A service the agent adopts, as its config names it.
#[derive(Debug, Clone)]
pub struct AdoptedService<'a> {
    pub template: &'a crate::config::ServiceTemplate,
    pub service: &'a str,
    pub instance: String,
    pub managed: &'a Managed,
}

/// The adopted services' restart counts (what the actuator did), by instance.
#[derive(Default)]
pub struct Adopted {
    restarts: Mutex<HashMap<String, u64>>,
}

/// The adopted services of a config.
pub fn services(config: &crate::config::AgentConfig) -> Vec<AdoptedService<'_>> {
    config
        .services
        .iter()
        .filter_map(|s| {
            let managed = s.managed.as_ref()?;
            Some(AdoptedService {
                template: s,
                service: &s.name,
                instance: managed.instance.clone().unwrap_or_else(|| s.name.clone()),
                managed,
            })
        })
        .collect()
}

/// The process a service's manager says runs it, if one does.
pub async fn main_pid(managed: &Managed) -> Option<u32> {
    match (&managed.systemd, &managed.pidfile) {
        (Some(unit), _) => {
            let out = run(
                managed,
                "systemctl show",
                &[
                    "systemctl".to_string(),
                    "show".into(),
                    "--property=MainPID,ActiveState".into(),
                    "--".into(),
                    unit.clone(),
                ],
            )
            .await
            .ok()?;
            systemd_main_pid(&out)
        }
        (None, Some(path)) => pidfile_pid(path).filter(|pid| alive(*pid)),
        (None, None) => None,
    }
}

/// MainPID of an active unit, from `systemctl show --property=MainPID,ActiveState`.
fn systemd_main_pid(show: &str) -> Option<u32> {
    let value = |key: &str| show.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='));
    let active = matches!(value("ActiveState")?, "active" | "reloading" | "activating");
    value("MainPID")?.trim().parse::<u32>().ok().filter(|pid| active && *pid > 0)
}

/// The pid a pidfile holds (its first word).
fn pidfile_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok().filter(|pid| *pid > 0)
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32).and_then(|p| p.stat()).is_ok_and(|stat| !matches!(stat.state, 'Z' | 'X'))
}

/// An unnamed file (O_TMPFILE, mode 0600) a command's output goes to. Not a pipe: a
/// start command that leaves a daemon behind hands it its stdout, and a pipe would then
/// never reach its end.
fn capture() -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())
        .ok()
}

/// The first 64 KiB of what a command wrote to `file`.
fn read_back(file: Option<std::fs::File>) -> String {
    use std::io::{Read, Seek};
    let Some(mut file) = file else { return String::new() };
    let mut text = Vec::new();
    let _ = file.rewind().and_then(|()| file.take(64 * 1024).read_to_end(&mut text));
    String::from_utf8_lossy(&text).into_owned()
}

/// Runs `argv` (no shell) within the timeout; its stdout, or why it failed (with the
/// end of its stderr). A command past its timeout is killed.
async fn run(managed: &Managed, what: &str, argv: &[String]) -> Result<String, AdoptError> {
    let (program, args) = argv.split_first().ok_or_else(|| AdoptError::Manager(format!("{what}: no command")))?;
    let (stdout, stderr) = (capture(), capture());
    let output = |file: &Option<std::fs::File>| {
        file.as_ref().and_then(|f| f.try_clone().ok()).map_or_else(std::process::Stdio::null, Into::into)
    };
    let mut command = tokio::process::Command::new(program);
    // The agent's tokens are not the service manager's.
    for key in hale_core::withheld_from_children(|_| false) {
        command.env_remove(key);
    }
    command.args(args).stdin(std::process::Stdio::null()).stdout(output(&stdout)).stderr(output(&stderr));
    let failed = |detail: String| AdoptError::Command { what: what.to_string(), detail };
    let mut child = command.kill_on_drop(true).spawn().map_err(|e| failed(format!("cannot run {program:?}: {e}")))?;
    let timeout_ms = managed.command_timeout_ms;
    let status = match tokio::time::timeout(Duration::from_millis(timeout_ms), child.wait()).await {
        Ok(status) => status.map_err(|e| failed(e.to_string()))?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(AdoptError::Timeout { what: what.to_string(), timeout_ms });
        }
    };
    if status.success() {
        return Ok(read_back(stdout));
    }
    let stderr = read_back(stderr);
    let tail: String = stderr.trim().chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
    Err(failed(format!("{status}: {tail}")))
}

/// The systemctl invocation of `verb` for `unit`.
fn systemctl(verb: &str, unit: &str) -> Vec<String> {
    vec!["systemctl".into(), verb.into(), "--".into(), unit.into()]
}

impl Adopted {
    /// The adopted services as the process list shows them.
    pub async fn list(&self, config: &crate::config::AgentConfig) -> Vec<ProcessInfo> {
        let mut out = Vec::new();
        for s in services(config) {
            let pid = main_pid(s.managed).await;
            out.push(ProcessInfo {
                restarts: self
                    .restarts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&s.instance)
                    .copied()
                    .unwrap_or(0),
                name: s.instance,
                service: s.service.to_string(),
                node: config.node.clone(),
                listen: s.managed.listen.clone().unwrap_or_default(),
                pid,
                state: if pid.is_some() { ProcessState::Running } else { ProcessState::Stopped },
                uptime_secs: pid.and_then(uptime_secs),
                last_exit: None,
                managed_by: Some(s.managed.describe()),
                url: s.managed.listen.as_ref().map(|listen| s.template.url(listen)),
            });
        }
        out
    }

    /// Restarts the adopted service listed as `instance` through its manager. `None`
    /// when no adopted service has that name.
    pub async fn restart(&self, config: &crate::config::AgentConfig, instance: &str) -> Option<Result<(), AdoptError>> {
        let all = services(config);
        let s = all.iter().find(|s| s.instance == instance)?;
        let m = s.managed;
        let outcome = if !m.restart.is_empty() {
            run(m, "restart", &m.restart).await.map(drop)
        } else if let Some(unit) = &m.systemd {
            run(m, "systemctl restart", &systemctl("restart", unit)).await.map(drop)
        } else {
            match self.stop_process(m).await {
                Ok(()) => run(m, "start", &m.start).await.map(drop),
                Err(e) => Err(e),
            }
        };
        if outcome.is_ok() {
            *self.restarts.lock().unwrap_or_else(|p| p.into_inner()).entry(instance.to_string()).or_default() += 1;
        }
        Some(outcome)
    }

    /// Stops the adopted service listed as `instance`. `None` when there is none.
    pub async fn stop(&self, config: &crate::config::AgentConfig, instance: &str) -> Option<Result<(), AdoptError>> {
        let all = services(config);
        let s = all.iter().find(|s| s.instance == instance)?;
        Some(self.stop_process(s.managed).await)
    }

    /// `stop`, else `systemctl stop`, else SIGTERM to the pidfile's process and SIGKILL
    /// after [`STOP_GRACE`].
    async fn stop_process(&self, m: &Managed) -> Result<(), AdoptError> {
        if !m.stop.is_empty() {
            return run(m, "stop", &m.stop).await.map(drop);
        }
        if let Some(unit) = &m.systemd {
            return run(m, "systemctl stop", &systemctl("stop", unit)).await.map(drop);
        }
        let Some(pid) = m.pidfile.as_deref().and_then(pidfile_pid).filter(|pid| alive(*pid)) else {
            return Ok(());
        };
        signal(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if alive(pid) {
            tracing::warn!(pid, "the adopted process outlived its grace after SIGTERM; killing it");
            signal(pid, nix::sys::signal::Signal::SIGKILL)?;
        }
        Ok(())
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> Result<(), AdoptError> {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(AdoptError::Manager(format!("cannot signal pid {pid}: {e}"))),
    }
}

/// Seconds since `pid` started, from /proc.
fn uptime_secs(pid: u32) -> Option<u64> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    let ticks = procfs::ticks_per_second();
    let uptime = <procfs::Uptime as procfs::Current>::current().ok()?.uptime;
    Some((uptime - stat.starttime as f64 / ticks as f64).max(0.0) as u64)
}

/// The start time (unix seconds) of `pid`, from /proc.
pub fn start_time_unix(pid: u32) -> Option<f64> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    let boot = procfs::boot_time_secs().ok()? as f64;
    Some(boot + stat.starttime as f64 / procfs::ticks_per_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(toml: &str) -> Managed {
        toml::from_str(toml).expect("parses")
    }

    #[test]
    fn entries_name_one_manager_and_a_way_to_restart() {
        assert!(managed("systemd = \"nginx.service\"").check().is_ok());
        assert!(managed("pidfile = \"/run/x.pid\"\nrestart = [\"x-ctl\", \"restart\"]").check().is_ok());
        for (bad, says) in [
            ("", "needs `systemd"),
            ("systemd = \"a\"\npidfile = \"/p\"", "not both"),
            ("pidfile = \"/run/x.pid\"", "needs `restart` or `start`"),
            ("systemd = \"--now\"", "not a unit name"),
            ("systemd = \"a\"\nstop = [\"\"]", "`stop` must start with a program"),
        ] {
            let e = managed(bad).check().expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn systemd_main_pid_only_for_an_active_unit() {
        assert_eq!(systemd_main_pid("MainPID=412\nActiveState=active\n"), Some(412));
        assert_eq!(systemd_main_pid("ActiveState=failed\nMainPID=0\n"), None);
        assert_eq!(systemd_main_pid("MainPID=412\nActiveState=inactive\n"), None);
        assert_eq!(systemd_main_pid("garbage"), None);
    }

    #[tokio::test]
    async fn a_pidfile_process_is_found_stopped_with_sigterm_and_started_by_its_command() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("svc.pid");
        // The service: a process that writes its pidfile, as daemons do.
        let start = vec!["sh".to_string(), "-c".into(), format!("sleep 300 & echo $! > {}", pidfile.display())];
        let m = Managed {
            systemd: None,
            pidfile: Some(pidfile.clone()),
            restart: Vec::new(),
            stop: Vec::new(),
            start: start.clone(),
            instance: None,
            listen: None,
            command_timeout_ms: 5000,
        };
        assert_eq!(main_pid(&m).await, None, "no pidfile yet: not running");
        run(&m, "start", &start).await.expect("start");
        let first = main_pid(&m).await.expect("running");
        assert!(start_time_unix(first).is_some());
        let adopted = Adopted::default();
        adopted.stop_process(&m).await.expect("stop");
        assert_eq!(main_pid(&m).await, None, "stopped by SIGTERM");
        run(&m, "start", &start).await.expect("start again");
        let second = main_pid(&m).await.expect("running again");
        assert_ne!(first, second);
        adopted.stop_process(&m).await.expect("stop");
    }

    #[tokio::test]
    async fn a_failing_or_hanging_command_says_why() {
        let m = managed("pidfile = \"/nonexistent\"\nstart = [\"x\"]\ncommand_timeout_ms = 200");
        let e =
            run(&m, "restart", &["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()]).await.expect_err("fails");
        assert!(e.to_string().contains("exit status: 3") && e.to_string().contains("nope"), "{e}");
        let e = run(&m, "restart", &["sleep".into(), "5".into()]).await.expect_err("hangs");
        assert!(matches!(e, AdoptError::Timeout { .. }), "{e}");
    }
}
