//! A lab: hosts, each a network namespace with one address, wired to one switch; and the
//! file (`netns.json`) through which other commands find it and steer its links.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::links::{LinkCommand, Links, applied_path};
use crate::switch::Switch;
use crate::{Error, ns, tap};

/// A host to create: its name and its address (all of a lab's in one /24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// What other processes need to find a running lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabFile {
    /// The process that made the lab (and runs its switch).
    pub owner: u32,
    pub hosts: Vec<LabHost>,
    /// The links file the switch obeys.
    pub links: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHost {
    pub name: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
}

/// The lab file's name in its directory.
pub const FILE: &str = "netns.json";
/// How long a link command waits for the switch to apply it.
const APPLY_WAIT: Duration = Duration::from_secs(3);

/// A running lab. Dropping it (or [`Lab::remove`]) stops the switch, kills what still
/// runs in its namespaces and removes them.
pub struct Lab {
    file: LabFile,
    path: PathBuf,
    switch: Option<Switch>,
    /// Namespaces of dead labs removed on the way in.
    pub stale_removed: Vec<String>,
}

impl Lab {
    /// Builds the lab in `dir` (which keeps `netns.json` and the links file): a namespace
    /// per host with `lo` and `eth0` up and the host's address on `eth0`, and no route
    /// beyond the hosts' own /24.
    pub fn create(dir: &Path, hosts: &[Host]) -> Result<Lab, Error> {
        check_hosts(hosts)?;
        ns::check_available()?;
        let stale_removed = ns::remove_stale();
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let owner = std::process::id();
        let links = dir.join("links.json");
        for stale in [links.clone(), applied_path(&links)] {
            let _ = std::fs::remove_file(stale);
        }
        let mut lab = Lab {
            file: LabFile { owner, hosts: Vec::new(), links: links.clone() },
            path: dir.join(FILE),
            switch: None,
            stale_removed,
        };
        let mut ports = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let namespace = ns::name(owner, &host.name);
            ns::add(&namespace)?;
            lab.file.hosts.push(LabHost { name: host.name.clone(), namespace: namespace.clone(), ip: host.ip });
            // Made here, then moved: its file stays the switch's end of the wire.
            let tap_name = format!("hl{owner}t{i}");
            let port = tap::create(&tap_name)?;
            let address = format!("{}/24", host.ip);
            ns::ip(&["link", "set", &tap_name, "netns", &namespace])?;
            ns::ip(&["-n", &namespace, "link", "set", &tap_name, "name", "eth0"])?;
            ns::ip(&["-n", &namespace, "addr", "add", &address, "dev", "eth0"])?;
            ns::ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ns::ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            ports.push((host.name.clone(), port));
        }
        Links::default().save(&links)?;
        lab.switch = Some(Switch::start(ports, links)?);
        let text = serde_json::to_vec_pretty(&lab.file).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(&lab.path, text).map_err(Error::io(format!("writing {}", lab.path.display())))?;
        Ok(lab)
    }

    pub fn file(&self) -> &LabFile {
        &self.file
    }

    /// Removes the lab now, saying what could not be removed.
    pub fn remove(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        self.switch.take();
        let mut first_error = None;
        for host in self.file.hosts.drain(..) {
            if let Err(e) = ns::remove(&host.namespace) {
                first_error.get_or_insert(e);
            }
        }
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(applied_path(&self.file.links));
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!(error = %e, "removing the lab left something behind; the next lab removes it");
        }
    }
}

fn check_hosts(hosts: &[Host]) -> Result<(), Error> {
    let Some(first) = hosts.first() else { return Err(Error::Invalid("a lab needs at least one host".into())) };
    for (i, h) in hosts.iter().enumerate() {
        if h.name.is_empty() || !h.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::Invalid(format!("host name {:?}: letters, digits, - and _ only", h.name)));
        }
        if hosts[..i].iter().any(|o| o.name == h.name || o.ip == h.ip) {
            return Err(Error::Invalid(format!("host {} ({}) is given twice", h.name, h.ip)));
        }
        if h.ip.octets()[..3] != first.ip.octets()[..3] || h.ip.is_loopback() || h.ip.is_unspecified() {
            return Err(Error::Invalid(format!(
                "host {} at {}: every host of a lab is in one /24 ({}.0/24), not loopback",
                h.name,
                h.ip,
                first.ip.octets()[..3].iter().map(u8::to_string).collect::<Vec<_>>().join(".")
            )));
        }
    }
    Ok(())
}

impl LabFile {
    /// The lab running in `dir`: `None` when there is none, or its owner is gone.
    pub fn read(dir: &Path) -> Result<Option<LabFile>, Error> {
        let path = dir.join(FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
        };
        let file: LabFile = serde_json::from_slice(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}; remove it if no lab runs", path.display())))?;
        Ok(ns::owner_alive(file.owner).then_some(file))
    }

    pub fn host(&self, name: &str) -> Option<&LabHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Moves the calling thread into `host`'s namespace (before any runtime starts).
    pub fn enter(&self, host: &str) -> Result<(), Error> {
        let h = self.host(host).ok_or_else(|| Error::Invalid(format!("no host {host:?} in the lab")))?;
        ns::enter(&h.namespace)
    }

    /// Changes a link and waits until the switch applies it; says what changed.
    pub fn command(&self, command: &LinkCommand) -> Result<String, Error> {
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        Links::command(&self.links, command, &names, APPLY_WAIT)
    }

    /// The links as they stand.
    pub fn links(&self) -> Result<Links, Error> {
        Links::load(&self.links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, ip: [u8; 4]) -> Host {
        Host { name: name.into(), ip: ip.into() }
    }

    #[test]
    fn hosts_are_checked_before_anything_is_made() {
        assert!(check_hosts(&[host("control", [10, 77, 0, 254]), host("node-1", [10, 77, 0, 1])]).is_ok());
        for bad in [
            vec![],
            vec![host("a b", [10, 77, 0, 1])],
            vec![host("a", [10, 77, 0, 1]), host("a", [10, 77, 0, 2])],
            vec![host("a", [10, 77, 0, 1]), host("b", [10, 77, 0, 1])],
            vec![host("a", [10, 77, 0, 1]), host("b", [10, 78, 0, 2])],
            vec![host("a", [127, 0, 0, 1])],
        ] {
            assert!(check_hosts(&bad).is_err(), "{bad:?}");
        }
    }
}
