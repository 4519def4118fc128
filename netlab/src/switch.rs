//! The userspace switch: one thread that reads frames from every host's TAP file, routes
//! them through the [`Fabric`], holds delayed ones until they are due, and re-reads the
//! links file when it changes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::Error;
use crate::fabric::{Delivery, Fabric};
use crate::links::{Links, applied_path};

/// How often the links file is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// Frames held for delay, at most (bytes); beyond, a delayed link drops, as a full
/// netem queue does.
const MAX_HELD_BYTES: usize = 64 << 20;

/// The running switch; stops (and joins its thread) when dropped.
pub struct Switch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A delayed frame, due at `due`; `seq` keeps frames of one link in order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: Instant,
    seq: u64,
    port: usize,
    frame: Vec<u8>,
}

impl Switch {
    /// Starts switching between `ports` (host name, TAP file), under the links at `links`.
    pub fn start(ports: Vec<(String, File)>, links: PathBuf) -> Result<Switch, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netlab-switch".into())
            .spawn(move || run(ports, links, &stopping))
            .map_err(Error::io("starting the switch thread"))?;
        Ok(Switch { stop, thread: Some(thread) })
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(ports: Vec<(String, File)>, links_path: PathBuf, stop: &AtomicBool) {
    let (names, files): (Vec<String>, Vec<File>) = ports.into_iter().unzip();
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut fabric = Fabric::new(names, seed);
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let (mut held_bytes, mut seq, mut overflowed) = (0usize, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    let mut out: Vec<Delivery> = Vec::new();
    let mut seen: Option<u64> = None;
    let mut next_check = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_check {
            reload(&links_path, &mut fabric, &mut seen);
            next_check = now + CHECK_EVERY;
        }
        let until = held.peek().map_or(next_check, |h| h.0.due.min(next_check));
        let wait = until.saturating_duration_since(now);
        let mut fds: Vec<PollFd> = files.iter().map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
        let timeout = PollTimeout::try_from(wait.as_millis().max(1) as u64).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).is_err() {
            continue; // EINTR
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, fd)| fd.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN)))
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        let now = Instant::now();
        for from in ready {
            // Drain what the host sent, a bounded number at a time so no host starves others.
            for _ in 0..256 {
                let n = match (&files[from]).read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                };
                fabric.route(from, &buf[..n], &mut out);
                for d in &out {
                    if d.delay.is_zero() {
                        let _ = (&files[d.port]).write(&buf[..n]);
                    } else if held_bytes + n <= MAX_HELD_BYTES {
                        seq += 1;
                        held_bytes += n;
                        held.push(Reverse(Held { due: now + d.delay, seq, port: d.port, frame: buf[..n].to_vec() }));
                    } else {
                        overflowed += 1;
                    }
                }
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.0.due <= now) {
            let Some(Reverse(h)) = held.pop() else { break };
            held_bytes -= h.frame.len();
            // A full interface queue drops the frame, as a real one would.
            let _ = (&files[h.port]).write(&h.frame);
        }
    }
    tracing::debug!(counts = ?fabric.counts, overflowed, "lab switch stopped");
}

/// Takes on the links file when its generation changed, and acknowledges it. The file
/// is a few hundred bytes: reading it twenty times a second costs nothing and needs no
/// trust in modification times.
fn reload(path: &std::path::Path, fabric: &mut Fabric, seen: &mut Option<u64>) {
    match Links::load(path) {
        Ok(links) if *seen != Some(links.generation) => {
            fabric.set_links(&links);
            let _ = std::fs::write(applied_path(path), links.generation.to_string());
            *seen = Some(links.generation);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the lab's links file is unreadable; keeping the links as they were"),
    }
}
