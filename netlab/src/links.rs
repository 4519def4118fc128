//! The state of every host's link, as the switch applies it: who is cut off from whom,
//! and what each link delays and drops. Commands from other processes (`hale chaos
//! partition`) change it through a file, under a lock, each change a new generation; the
//! switch acknowledges a generation once its frames obey it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Every host's link; a host not listed has a clean link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    /// Bumped by every change; the switch writes the one it applied beside the file.
    pub generation: u64,
    #[serde(default)]
    pub hosts: BTreeMap<String, HostLink>,
}

/// One host's link. Delay and loss act on the frames the host sends, as netem on the
/// host's own interface would: a host delayed by 100 ms sees every round trip 100 ms
/// longer. A cut is symmetric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostLink {
    /// Cut off from these hosts; an empty set cuts it off from every other host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitioned_from: Option<BTreeSet<String>>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub loss_percent: f64,
}

impl HostLink {
    fn is_clean(&self) -> bool {
        self.partitioned_from.is_none() && self.delay_ms == 0 && self.loss_percent == 0.0
    }
}

/// A change to one host's link.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkCommand {
    /// Cut `host` off from `from` (every other host when empty).
    Partition { host: String, from: Vec<String> },
    /// Give `host` a clean link again: no cut, no delay, no loss.
    Heal { host: String },
    /// Delay every frame `host` sends by `ms` (0 removes the delay).
    Delay { host: String, ms: u64 },
    /// Drop `percent` of the frames `host` sends (0 removes the loss).
    Loss { host: String, percent: f64 },
}

/// The longest delay a link may be given: longer is not a slow link but a cut one.
pub const MAX_DELAY_MS: u64 = 60_000;

impl Links {
    /// Whether frames between `a` and `b` are cut.
    pub fn cut(&self, a: &str, b: &str) -> bool {
        let cuts = |x: &str, y: &str| {
            self.hosts
                .get(x)
                .and_then(|l| l.partitioned_from.as_ref())
                .is_some_and(|from| from.is_empty() || from.contains(y))
        };
        a != b && (cuts(a, b) || cuts(b, a))
    }

    /// Applies `command` for a lab of `hosts`; says what changed.
    pub fn apply(&mut self, command: &LinkCommand, hosts: &[String]) -> Result<String, Error> {
        let known = |h: &str| -> Result<(), Error> {
            if hosts.iter().any(|k| k == h) {
                Ok(())
            } else {
                Err(Error::Invalid(format!("no host {h:?} in this lab; the hosts are {}", hosts.join(", "))))
            }
        };
        let said = match command {
            LinkCommand::Partition { host, from } => {
                known(host)?;
                for f in from {
                    known(f)?;
                    if f == host {
                        return Err(Error::Invalid(format!("{host} cannot be cut off from itself")));
                    }
                }
                let slot = &mut self.hosts.entry(host.clone()).or_default().partitioned_from;
                match slot {
                    _ if from.is_empty() => {
                        *slot = Some(BTreeSet::new());
                        format!("{host} is cut off from every other host")
                    }
                    Some(cut) if cut.is_empty() => format!("{host} is already cut off from every other host"),
                    _ => {
                        slot.get_or_insert_with(BTreeSet::new).extend(from.iter().cloned());
                        format!("{host} is cut off from {}", from.join(", "))
                    }
                }
            }
            LinkCommand::Heal { host } => {
                known(host)?;
                self.hosts.remove(host);
                // Cuts other hosts made toward this one heal too.
                // (An emptied set would mean "from everyone": it goes instead.)
                for link in self.hosts.values_mut() {
                    if let Some(from) = &mut link.partitioned_from
                        && from.remove(host)
                        && from.is_empty()
                    {
                        link.partitioned_from = None;
                    }
                }
                format!("{host}'s link is whole again: no cut, no delay, no loss")
            }
            LinkCommand::Delay { host, ms } => {
                known(host)?;
                if *ms > MAX_DELAY_MS {
                    return Err(Error::Invalid(format!(
                        "a delay of {ms} ms is a cut, not a slow link; use partition, or at most {MAX_DELAY_MS} ms"
                    )));
                }
                self.hosts.entry(host.clone()).or_default().delay_ms = *ms;
                format!("{host} sends every frame {ms} ms late")
            }
            LinkCommand::Loss { host, percent } => {
                known(host)?;
                if !(0.0..=100.0).contains(percent) {
                    return Err(Error::Invalid(format!("--percent {percent}: give a share between 0 and 100")));
                }
                self.hosts.entry(host.clone()).or_default().loss_percent = *percent;
                format!("{host} loses {percent}% of the frames it sends")
            }
        };
        self.hosts.retain(|_, l| !l.is_clean());
        self.generation += 1;
        Ok(said)
    }

    /// Reads the links file; a missing file is a clean network.
    pub fn load(path: &Path) -> Result<Links, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}; remove it to heal every link", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Links::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Writes the links file whole (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut file = std::fs::File::create(&tmp).map_err(Error::io(format!("writing {}", tmp.display())))?;
        file.write_all(&text).map_err(Error::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(Error::io(format!("renaming {}", tmp.display())))
    }

    /// Applies `command` to the file at `path` under an exclusive lock (two chaos
    /// commands at once both take effect), and waits until the switch has applied it.
    pub fn command(path: &Path, command: &LinkCommand, hosts: &[String], wait: Duration) -> Result<String, Error> {
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(format!("opening {}", lock_path.display())))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(format!("locking {}", lock_path.display()))(e.into()))?;
        let mut links = Links::load(path)?;
        let said = links.apply(command, hosts)?;
        links.save(path)?;
        drop(lock);
        let applied = applied_path(path);
        let deadline = Instant::now() + wait;
        loop {
            let seen = std::fs::read_to_string(&applied).ok().and_then(|t| t.trim().parse::<u64>().ok());
            if seen.is_some_and(|g| g >= links.generation) {
                return Ok(said);
            }
            if Instant::now() >= deadline {
                return Err(Error::Invalid(format!(
                    "the lab's switch did not apply the change within {wait:?}: is the `hale up --netns` that made \
                     it still running?"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Where the switch writes the generation it applied.
pub fn applied_path(links: &Path) -> PathBuf {
    links.with_extension("applied")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        ["control", "node-1", "node-2", "node-3"].map(String::from).to_vec()
    }

    #[test]
    fn a_partition_cuts_both_ways_and_heals() {
        let mut l = Links::default();
        l.apply(&LinkCommand::Partition { host: "node-2".into(), from: vec![] }, &hosts()).expect("apply");
        assert!(l.cut("node-2", "control") && l.cut("control", "node-2") && l.cut("node-1", "node-2"));
        assert!(!l.cut("node-1", "control"), "others still talk");
        assert!(!l.cut("node-2", "node-2"));
        l.apply(&LinkCommand::Heal { host: "node-2".into() }, &hosts()).expect("heal");
        assert!(!l.cut("node-2", "control"));
        assert!(l.hosts.is_empty(), "a clean link is not kept");
        assert_eq!(l.generation, 2);
    }

    #[test]
    fn a_partial_partition_cuts_only_the_named_hosts() {
        let mut l = Links::default();
        let cmd = LinkCommand::Partition { host: "node-2".into(), from: vec!["node-3".into()] };
        l.apply(&cmd, &hosts()).expect("apply");
        assert!(l.cut("node-3", "node-2"));
        assert!(!l.cut("node-2", "control"), "still reaches its clients");
        // Healing the other side heals the cut made toward it.
        l.apply(&LinkCommand::Heal { host: "node-3".into() }, &hosts()).expect("heal");
        assert!(!l.cut("node-3", "node-2"));
        assert!(!l.cut("node-2", "control"), "an emptied cut is no cut, not a cut from everyone");
        assert!(l.hosts.is_empty());
    }

    #[test]
    fn bad_commands_are_refused_and_change_nothing() {
        let mut l = Links::default();
        for cmd in [
            LinkCommand::Partition { host: "node-9".into(), from: vec![] },
            LinkCommand::Partition { host: "node-1".into(), from: vec!["node-1".into()] },
            LinkCommand::Delay { host: "node-1".into(), ms: MAX_DELAY_MS + 1 },
            LinkCommand::Loss { host: "node-1".into(), percent: 101.0 },
            LinkCommand::Loss { host: "node-1".into(), percent: f64::NAN },
        ] {
            assert!(l.apply(&cmd, &hosts()).is_err(), "{cmd:?}");
        }
        assert_eq!(l, Links::default());
    }

    #[test]
    fn commands_through_the_file_wait_for_the_switch() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("links.json");
        let cmd = LinkCommand::Delay { host: "node-1".into(), ms: 50 };
        // No switch: the command is saved, then says the switch did not take it.
        let err = Links::command(&path, &cmd, &hosts(), Duration::from_millis(50)).expect_err("no switch");
        assert!(err.to_string().contains("still running"), "{err}");
        assert_eq!(Links::load(&path).expect("load").hosts["node-1"].delay_ms, 50);
        // A switch that acknowledges.
        std::fs::write(applied_path(&path), "2").expect("ack");
        let said = Links::command(
            &path,
            &LinkCommand::Loss { host: "node-1".into(), percent: 5.0 },
            &hosts(),
            Duration::from_secs(1),
        )
        .expect("applied");
        assert!(said.contains("5%"), "{said}");
    }
}
