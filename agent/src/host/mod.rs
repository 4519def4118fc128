//! Host metrics with node_exporter's names, labels, types and units, so the community
//! Node Exporter dashboards work unchanged. Each module reads its kernel files the way
//! node_exporter's collector of the same name does, under a root directory (`/` on a
//! host; a fixture tree in tests):
//!
//! - `mod.rs`: `/proc/stat` (CPU seconds per mode, context switches, boot time,
//!   interrupts, forks, processes running and blocked), the load average and the time;
//! - [`memory`]: `/proc/meminfo` (every field), `/proc/vmstat`, `/proc/pressure/*`,
//!   `/proc/schedstat`, entropy;
//! - [`disk`]: `/proc/diskstats` (every statistic the kernel gives) and the mounted
//!   filesystems (`statvfs`);
//! - [`net`]: `/proc/net/dev`, `/sys/class/net` (netclass), `/proc/net/{netstat,snmp,snmp6}`,
//!   `/proc/net/sockstat{,6}`, conntrack;
//! - [`system`]: `uname`, `/etc/os-release`, `adjtimex` (timex), thermal zones and hwmon;
//! - [`textfile`]: node_exporter's textfile collector (`*.prom` files merged in).
//!
//! A file that cannot be read leaves its families out (as node_exporter does when a
//! collector fails); nothing is reported as zero for being unknown.

use std::path::{Path, PathBuf};

use hale_core::metrics::{Family, MetricKind};

pub mod disk;
pub mod memory;
pub mod net;
pub mod system;
pub mod textfile;

pub struct HostCollector {
    /// `/` on a host.
    root: PathBuf,
    /// node_exporter's `--collector.textfile.directory`.
    textfile_dir: Option<PathBuf>,
    ticks_per_second: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read host statistics: {0}")]
pub struct HostError(String);

/// Families of one unlabelled sample each, for the values that could be read.
fn singles<const N: usize>(out: &mut Vec<Family>, values: [(&str, &str, MetricKind, Option<f64>); N]) {
    out.extend(
        values.into_iter().filter_map(|(name, help, kind, value)| Some(Family::single(name, help, kind, value?))),
    );
}

/// A file under `root` as text; `None` when it cannot be read.
fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path)).ok()
}

impl HostCollector {
    /// The collector of this host (`/proc`, `/sys` and `/etc` under `/`).
    pub fn new() -> Result<Self, HostError> {
        if !Path::new("/proc/stat").exists() {
            return Err(HostError("/proc is not mounted: host metrics need Linux's procfs".into()));
        }
        Ok(HostCollector::at(Path::new("/")))
    }

    /// The collector of the tree under `root`.
    pub fn at(root: &Path) -> Self {
        HostCollector {
            root: root.to_path_buf(),
            textfile_dir: None,
            ticks_per_second: procfs::ticks_per_second() as f64,
        }
    }

    /// Merges the `*.prom` files of `dir` into every collection, as node_exporter's
    /// `--collector.textfile.directory` does.
    pub fn with_textfile_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.set_textfile_dir(dir);
        self
    }

    /// A reloaded config's textfile directory.
    pub fn set_textfile_dir(&mut self, dir: Option<PathBuf>) {
        self.textfile_dir = dir;
    }

    /// One collection: every host family, freshly read.
    pub fn collect(&mut self) -> Vec<Family> {
        let root = self.root.as_path();
        let mut out = Vec::with_capacity(256);
        self.stat(&mut out);
        load_and_time(root, &mut out);
        memory::collect(root, &mut out);
        disk::collect(root, &mut out);
        net::collect(root, &mut out);
        system::collect(root, &mut out);
        // A family with no sample says nothing (and an exposition with one is untidy).
        out.retain(|f| !f.samples.is_empty());
        if let Some(dir) = &self.textfile_dir {
            textfile::collect(dir, &mut out);
        }
        out
    }

    fn stat(&self, out: &mut Vec<Family>) {
        // Read directly: the `cpu` label must be the CPU's number from its `cpuN` line
        // (offline CPUs leave gaps), which procfs's list does not keep.
        let Some(stat) = read(&self.root, "proc/stat") else { return };
        let parsed = parse_proc_stat(&stat, self.ticks_per_second);
        let mut seconds =
            Family::new("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", MetricKind::Counter);
        for (cpu, mode, value) in &parsed.cpu_seconds {
            seconds.push(&[("cpu", cpu), ("mode", mode)], *value);
        }
        let mut guest = Family::new(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            MetricKind::Counter,
        );
        for (cpu, mode, value) in &parsed.guest_seconds {
            guest.push(&[("cpu", cpu), ("mode", mode)], *value);
        }
        out.extend([seconds, guest]);
        singles(
            out,
            [
                (
                    "node_context_switches_total",
                    "Total number of context switches.",
                    MetricKind::Counter,
                    parsed.context_switches,
                ),
                ("node_boot_time_seconds", "Node boot time, in unixtime.", MetricKind::Gauge, parsed.boot_time),
                ("node_intr_total", "Total number of interrupts serviced.", MetricKind::Counter, parsed.interrupts),
                ("node_forks_total", "Total number of forks.", MetricKind::Counter, parsed.forks),
                (
                    "node_procs_running",
                    "Number of processes in runnable state.",
                    MetricKind::Gauge,
                    parsed.procs_running,
                ),
                (
                    "node_procs_blocked",
                    "Number of processes blocked waiting for I/O to complete.",
                    MetricKind::Gauge,
                    parsed.procs_blocked,
                ),
            ],
        );
    }
}

/// The load averages (`/proc/loadavg`) and the clock.
fn load_and_time(root: &Path, out: &mut Vec<Family>) {
    let load: Vec<f64> = read(root, "proc/loadavg")
        .map(|text| text.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    singles(
        out,
        [
            ("node_load1", "1m load average.", MetricKind::Gauge, load.first().copied()),
            ("node_load5", "5m load average.", MetricKind::Gauge, load.get(1).copied()),
            ("node_load15", "15m load average.", MetricKind::Gauge, load.get(2).copied()),
            ("node_time_seconds", "System time in seconds since epoch (1970).", MetricKind::Gauge, Some(now)),
        ],
    );
}

/// What `/proc/stat` says that node_exporter reports.
#[derive(Debug, Default, PartialEq)]
struct ProcStat {
    /// (cpu number, mode, seconds)
    cpu_seconds: Vec<(String, &'static str, f64)>,
    /// (cpu number, `user` or `nice`, seconds) spent running guests.
    guest_seconds: Vec<(String, &'static str, f64)>,
    context_switches: Option<f64>,
    boot_time: Option<f64>,
    interrupts: Option<f64>,
    forks: Option<f64>,
    procs_running: Option<f64>,
    procs_blocked: Option<f64>,
}

fn parse_proc_stat(text: &str, ticks_per_second: f64) -> ProcStat {
    const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    const GUEST: [&str; 2] = ["user", "nice"];
    let mut out = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = |fields: &mut std::str::SplitWhitespace<'_>| fields.next().and_then(|v| v.parse().ok());
        match fields.next() {
            Some(name) if name.len() > 3 && name.starts_with("cpu") => {
                let id = &name[3..];
                if !id.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let ticks: Vec<u64> = fields.map_while(|t| t.parse().ok()).collect();
                for (mode, t) in MODES.iter().zip(&ticks) {
                    out.cpu_seconds.push((id.to_string(), mode, *t as f64 / ticks_per_second));
                }
                // Columns 9 and 10: guest and guest_nice (also counted in user and nice).
                for (mode, t) in GUEST.iter().zip(ticks.iter().skip(8)) {
                    out.guest_seconds.push((id.to_string(), mode, *t as f64 / ticks_per_second));
                }
            }
            Some("ctxt") => out.context_switches = first(&mut fields),
            Some("btime") => out.boot_time = first(&mut fields),
            // The first number is the total; the rest count each interrupt.
            Some("intr") => out.interrupts = first(&mut fields),
            Some("processes") => out.forks = first(&mut fields),
            Some("procs_running") => out.procs_running = first(&mut fields),
            Some("procs_blocked") => out.procs_blocked = first(&mut fields),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_keeps_cpu_numbers_across_offline_gaps() {
        let text = "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 1 0 0 0 0 0\ncpu2 5 0 3 50 0 0 0 0 7 1\n\
                    intr 99 1 2 3\nctxt 1234\nbtime 1700000000\nprocesses 4321\nprocs_running 3\nprocs_blocked 1\n";
        let parsed = parse_proc_stat(text, 100.0);
        let cpus: Vec<&str> = parsed.cpu_seconds.iter().map(|c| c.0.as_str()).collect();
        assert!(cpus.iter().all(|c| *c == "0" || *c == "2"), "{cpus:?}");
        assert!(parsed.cpu_seconds.contains(&("2".into(), "system", 0.03)));
        assert!(parsed.guest_seconds.contains(&("2".into(), "user", 0.07)));
        assert_eq!(parsed.context_switches, Some(1234.0));
        assert_eq!(parsed.boot_time, Some(1_700_000_000.0));
        assert_eq!((parsed.interrupts, parsed.forks), (Some(99.0), Some(4321.0)));
        assert_eq!((parsed.procs_running, parsed.procs_blocked), (Some(3.0), Some(1.0)));
    }

    #[test]
    fn collects_node_exporter_families_with_their_types() {
        let mut host = HostCollector::new().expect("host");
        let families = host.collect();
        let kind = |name: &str| families.iter().find(|f| f.name == name).map(|f| f.kind);
        assert_eq!(kind("node_cpu_seconds_total"), Some(MetricKind::Counter));
        assert_eq!(kind("node_memory_MemAvailable_bytes"), Some(MetricKind::Gauge));
        assert_eq!(kind("node_load1"), Some(MetricKind::Gauge));
        assert_eq!(kind("node_intr_total"), Some(MetricKind::Counter));
        assert_eq!(kind("node_filesystem_avail_bytes"), Some(MetricKind::Gauge));
        assert_eq!(kind("node_disk_io_time_seconds_total"), Some(MetricKind::Counter));
        assert_eq!(kind("node_uname_info"), Some(MetricKind::Gauge));
        let cpu = families.iter().find(|f| f.name == "node_cpu_seconds_total").expect("cpu");
        let idle = cpu.samples.iter().find(|s| s.labels.contains(&("mode".into(), "idle".into()))).expect("idle");
        assert!(idle.value > 0.0);
        assert!(cpu.samples.iter().all(|s| s.labels[0].0 == "cpu" && s.labels[1].0 == "mode"));
        let mut names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "no family twice");
    }

    #[test]
    fn an_unreadable_tree_reports_nothing_rather_than_zeros() {
        let empty = tempfile::tempdir().expect("tmp");
        let families = HostCollector::at(empty.path()).collect();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("node_time") || n.starts_with("node_uname") || n.starts_with("node_timex")),
            "{names:?}"
        );
    }
}
