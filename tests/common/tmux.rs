//! A tmux server of a test's own, to drive the dashboard in a real terminal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmux server of the test's own, killed (with whatever it runs) when the test ends.
pub struct Tmux {
    pub socket: String,
    pub data_dir: PathBuf,
}

impl Tmux {
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new(super::need("tmux")).arg("-L").arg(&self.socket).args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "hale"])
    }

    /// Types `text` (literally), then presses Enter if asked.
    pub fn keys(&self, text: &str, enter: bool) {
        self.run(&["send-keys", "-t", "hale", "-l", text]);
        if enter {
            self.run(&["send-keys", "-t", "hale", "Enter"]);
        }
    }

    pub async fn shows(&self, what: &str, limit: Duration, wanted: &[&str]) -> String {
        super::eventually_or_dump(
            what,
            limit,
            async || {
                let screen = self.screen();
                wanted.iter().all(|w| screen.contains(w)).then_some(screen)
            },
            async || format!("--- screen\n{}", self.screen()),
        )
        .await
    }
}

/// Processes whose command line mentions `dir` (the cluster's, and nothing else).
pub fn processes_of(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
        for pid in processes_of(&self.data_dir) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}
