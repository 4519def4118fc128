//! Host metrics with node_exporter's names, labels, types and units, so the community
//! Node Exporter dashboards work unchanged. Each module reads its kernel files the way
//! node_exporter's collector of the same name does, under a root directory (`/` on a
//! host; a fixture tree in tests):
//!
//! - `mod.rs`: `/proc/stat` (CPU seconds per mode, context switches, boot time,
//!   interrupts, forks, processes running and blocked) and the load average;
//! - [`net`]: `/proc/net/dev`, `/sys/class/net` (netclass), `/proc/net/{netstat,snmp,snmp6}`,
//!   `/proc/net/sockstat{,6}`, conntrack;
//! - [`textfile`]: node_exporter's textfile collector (`*.prom` files merged in).
//!
//! A file that cannot be read leaves its families out (as node_exporter does when a
//! collector fails); nothing is reported as zero for being unknown.

use std::collections::BTreeMap;
use hale_core::metrics::{Family, MetricKind};

pub mod net;
pub mod textfile;

pub struct HostCollector {
    system: sysinfo::System,
    disks: sysinfo::Disks,
    networks: sysinfo::Networks,
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

impl HostCollector {
    pub fn new() -> Result<Self, HostError> {
        let system = sysinfo::System::new().map_err(|e| HostError(e.to_string()))?;
        let disks = sysinfo::Disks::new_with_refreshed_list().map_err(|e| HostError(e.to_string()))?;
        let networks = sysinfo::Networks::new_with_refreshed_list().map_err(|e| HostError(e.to_string()))?;
        Ok(HostCollector { system, disks, networks, ticks_per_second: procfs::ticks_per_second() as f64 })
    }

    /// One collection: every host family, freshly read.
    pub fn collect(&mut self) -> Vec<Family> {
        let mut out = Vec::with_capacity(32);
        self.cpu(&mut out);
        self.memory(&mut out);
        self.filesystems(&mut out);
        self.network(&mut out);
        let load = sysinfo::System::load_average().ok();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        singles(
            &mut out,
            [
                ("node_load1", "1m load average.", MetricKind::Gauge, load.as_ref().map(|l| l.one)),
                ("node_load5", "5m load average.", MetricKind::Gauge, load.as_ref().map(|l| l.five)),
                ("node_load15", "15m load average.", MetricKind::Gauge, load.as_ref().map(|l| l.fifteen)),
                ("node_time_seconds", "System time in seconds since epoch (1970).", MetricKind::Gauge, Some(now)),
            ],
        );
        out
    }

    fn cpu(&self, out: &mut Vec<Family>) {
        // Read directly: the `cpu` label must be the CPU's number from its `cpuN` line
        // (offline CPUs leave gaps), which procfs's list does not keep.
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return };
        let parsed = parse_proc_stat(&stat, self.ticks_per_second);
        let mut seconds =
            Family::new("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", MetricKind::Counter);
        for (cpu, mode, value) in &parsed.cpu_seconds {
            seconds.push(&[("cpu", cpu), ("mode", mode)], *value);
        }
        out.push(seconds);
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
            ],
        );
    }

    fn memory(&mut self, out: &mut Vec<Family>) {
        self.system.refresh_memory();
        let s = &self.system;
        for (name, help, value) in [
            ("node_memory_MemTotal_bytes", "Memory information field MemTotal_bytes.", s.total_memory()),
            ("node_memory_MemFree_bytes", "Memory information field MemFree_bytes.", s.free_memory()),
            ("node_memory_MemAvailable_bytes", "Memory information field MemAvailable_bytes.", s.available_memory()),
            ("node_memory_SwapTotal_bytes", "Memory information field SwapTotal_bytes.", s.total_swap()),
            ("node_memory_SwapFree_bytes", "Memory information field SwapFree_bytes.", s.free_swap()),
        ] {
            out.push(Family::single(name, help, MetricKind::Gauge, value as f64));
        }
    }

    fn filesystems(&mut self, out: &mut Vec<Family>) {
        self.disks.refresh(true);
        let [mut size, mut avail, mut readonly] = [
            ("node_filesystem_size_bytes", "Filesystem size in bytes."),
            ("node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes."),
            ("node_filesystem_readonly", "Filesystem read-only status."),
        ]
        .map(|(name, help)| Family::new(name, help, MetricKind::Gauge));
        // Several mounts can share one block device; its I/O is counted once.
        let mut io: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for disk in self.disks.iter() {
            let device = disk.name().to_string_lossy().into_owned();
            let fstype = disk.file_system().to_string_lossy().into_owned();
            let mountpoint = disk.mount_point().to_string_lossy().into_owned();
            let labels =
                [("device", device.as_str()), ("fstype", fstype.as_str()), ("mountpoint", mountpoint.as_str())];
            size.push(&labels, disk.total_space() as f64);
            avail.push(&labels, disk.available_space() as f64);
            readonly.push(&labels, if disk.is_read_only() { 1.0 } else { 0.0 });
            let usage = disk.usage();
            let short = device.trim_start_matches("/dev/").to_string();
            io.entry(short).or_insert((usage.total_read_bytes, usage.total_written_bytes));
        }
        let [mut read, mut written] = [
            ("node_disk_read_bytes_total", "The total number of bytes read successfully."),
            ("node_disk_written_bytes_total", "The total number of bytes written successfully."),
        ]
        .map(|(name, help)| Family::new(name, help, MetricKind::Counter));
        for (device, (r, w)) in &io {
            read.push(&[("device", device)], *r as f64);
            written.push(&[("device", device)], *w as f64);
        }
        out.extend([size, avail, readonly, read, written]);
    }

    fn network(&mut self, out: &mut Vec<Family>) {
        self.networks.refresh(true);
        let mut families = [
            ("node_network_receive_bytes_total", "Network device statistic receive_bytes."),
            ("node_network_transmit_bytes_total", "Network device statistic transmit_bytes."),
            ("node_network_receive_packets_total", "Network device statistic receive_packets."),
            ("node_network_transmit_packets_total", "Network device statistic transmit_packets."),
            ("node_network_receive_errs_total", "Network device statistic receive_errs."),
            ("node_network_transmit_errs_total", "Network device statistic transmit_errs."),
        ]
        .map(|(name, help)| Family::new(name, help, MetricKind::Counter));
        let mut interfaces: Vec<_> = self.networks.iter().collect();
        interfaces.sort_by(|a, b| a.0.cmp(b.0));
        for (device, data) in interfaces {
            let values = [
                data.total_received(),
                data.total_transmitted(),
                data.total_packets_received(),
                data.total_packets_transmitted(),
                data.total_errors_on_received(),
                data.total_errors_on_transmitted(),
            ];
            for (family, value) in families.iter_mut().zip(values) {
                family.push(&[("device", &device.to_string_lossy())], value as f64);
            }
        }
        out.extend(families);
    }
}

/// What `/proc/stat` says that node_exporter reports.
#[derive(Debug, Default, PartialEq)]
struct ProcStat {
    /// (cpu number, mode, seconds)
    cpu_seconds: Vec<(String, &'static str, f64)>,
    context_switches: Option<f64>,
    boot_time: Option<f64>,
}

fn parse_proc_stat(text: &str, ticks_per_second: f64) -> ProcStat {
    const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    let mut out = ProcStat::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some(name) if name.len() > 3 && name.starts_with("cpu") => {
                let id = &name[3..];
                if !id.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                for (mode, ticks) in MODES.iter().zip(fields) {
                    if let Ok(t) = ticks.parse::<u64>() {
                        out.cpu_seconds.push((id.to_string(), mode, t as f64 / ticks_per_second));
                    }
                }
            }
            Some("ctxt") => out.context_switches = fields.next().and_then(|v| v.parse().ok()),
            Some("btime") => out.boot_time = fields.next().and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_stat_keeps_cpu_numbers_across_offline_gaps() {
        let text = "cpu  10 0 5 100 0 0 0 0 0 0\ncpu0 5 0 2 50 1 0 0 0 0 0\ncpu2 5 0 3 50 0 0 0 0 0 0\nctxt 1234\nbtime 1700000000\n";
        let parsed = parse_proc_stat(text, 100.0);
        let cpus: Vec<&str> = parsed.cpu_seconds.iter().map(|c| c.0.as_str()).collect();
        assert!(cpus.iter().all(|c| *c == "0" || *c == "2"), "{cpus:?}");
        assert!(parsed.cpu_seconds.contains(&("2".into(), "system", 0.03)));
        assert_eq!(parsed.context_switches, Some(1234.0));
        assert_eq!(parsed.boot_time, Some(1_700_000_000.0));
    }

    use super::*;

    #[test]
    fn collects_node_exporter_families_with_their_types() {
        let mut host = HostCollector::new().expect("host");
        let families = host.collect();
        let kind = |name: &str| families.iter().find(|f| f.name == name).map(|f| f.kind);
        assert_eq!(kind("node_cpu_seconds_total"), Some(MetricKind::Counter));
        assert_eq!(kind("node_memory_MemAvailable_bytes"), Some(MetricKind::Gauge));
        assert_eq!(kind("node_load1"), Some(MetricKind::Gauge));
        assert_eq!(kind("node_network_receive_bytes_total"), Some(MetricKind::Counter));
        assert_eq!(kind("node_filesystem_avail_bytes"), Some(MetricKind::Gauge));
        let cpu = families.iter().find(|f| f.name == "node_cpu_seconds_total").expect("cpu");
        let idle = cpu.samples.iter().find(|s| s.labels.contains(&("mode".into(), "idle".into()))).expect("idle");
        assert!(idle.value > 0.0);
        assert!(cpu.samples.iter().all(|s| s.labels[0].0 == "cpu" && s.labels[1].0 == "mode"));
        let lo = families
            .iter()
            .find(|f| f.name == "node_network_receive_bytes_total")
            .and_then(|f| f.samples.iter().find(|s| s.labels[0].1 == "lo"));
        assert!(lo.is_some(), "loopback interface is reported");
    }
}
