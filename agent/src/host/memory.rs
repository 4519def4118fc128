//! Memory and scheduling, as node_exporter's meminfo, vmstat, pressure, schedstat,
//! filefd and entropy collectors report them.

use std::path::Path;

use hale_core::metrics::{Family, MetricKind};

use super::read;

/// Appends the families read under `root`.
pub fn collect(root: &Path, out: &mut Vec<Family>) {
    if let Some(text) = read(root, "proc/meminfo") {
        out.extend(meminfo(&text));
    }
    if let Some(text) = read(root, "proc/vmstat") {
        out.extend(vmstat(&text));
    }
    out.extend(pressure(root));
    if let Some(text) = read(root, "proc/schedstat") {
        out.extend(schedstat(&text));
    }
    // filefd: allocated handles and the system's maximum (`/proc/sys/fs/file-nr`).
    if let Some(text) = read(root, "proc/sys/fs/file-nr") {
        let fields: Vec<f64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if let [allocated, _, maximum] = fields.as_slice() {
            out.push(Family::single(
                "node_filefd_allocated",
                "File descriptor statistics: allocated.",
                MetricKind::Gauge,
                *allocated,
            ));
            out.push(Family::single(
                "node_filefd_maximum",
                "File descriptor statistics: maximum.",
                MetricKind::Gauge,
                *maximum,
            ));
        }
    }
    let entropy = |file: &str| read(root, &format!("proc/sys/kernel/random/{file}"))?.trim().parse::<f64>().ok();
    for (name, help, value) in [
        ("node_entropy_available_bits", "Bits of available entropy.", entropy("entropy_avail")),
        ("node_entropy_pool_size_bits", "Bits of entropy pool.", entropy("poolsize")),
    ] {
        out.extend(value.map(|v| Family::single(name, help, MetricKind::Gauge, v)));
    }
}

/// Every `/proc/meminfo` field, as node_exporter names it: `Active(anon)` becomes
/// `Active_anon`, a field in kB becomes `<field>_bytes` (×1024), one without a unit
/// (`HugePages_Total`) keeps its bare name.
pub fn meminfo(text: &str) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        let mut parts = rest.split_whitespace();
        let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        let key = key.trim().replace('(', "_").replace(')', "");
        let (field, value) = match parts.next() {
            Some("kB") => (format!("{key}_bytes"), value * 1024.0),
            _ => (key, value),
        };
        let name = format!("node_memory_{field}");
        if out.iter().any(|f| f.name == name) {
            continue;
        }
        let help = format!("Memory information field {field}.");
        out.push(Family::single(name, help, MetricKind::Gauge, value));
    }
    out
}

/// The `/proc/vmstat` fields node_exporter reports by default (untyped, as it does):
/// out-of-memory kills, paging and swapping, faults.
pub fn vmstat(text: &str) -> Vec<Family> {
    let wanted = |k: &str| {
        k.starts_with("oom_kill")
            || k.starts_with("pgpg")
            || k.starts_with("pswp")
            || (k.starts_with("pg") && k.contains("fault"))
    };
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            let value: f64 = value.trim().parse().ok()?;
            wanted(key).then(|| {
                Family::single(
                    format!("node_vmstat_{key}"),
                    format!("/proc/vmstat information field {key}."),
                    MetricKind::Untyped,
                    value,
                )
            })
        })
        .collect()
}

/// Pressure stall information (`/proc/pressure/{cpu,io,memory}`): the `total=` of the
/// `some` line (waiting) and of the `full` line (stalled), in microseconds → seconds.
/// CPU's `full` line is not reported, as node_exporter does not.
fn pressure(root: &Path) -> Vec<Family> {
    let mut out = Vec::new();
    for (resource, what) in [("cpu", "for CPU time"), ("io", "due to IO congestion"), ("memory", "for memory")] {
        let Some(text) = read(root, &format!("proc/pressure/{resource}")) else { continue };
        for (kind, line) in text.lines().filter_map(|l| l.split_once(' ')) {
            let Some(total) = line.split_whitespace().find_map(|f| f.strip_prefix("total=")?.parse::<f64>().ok())
            else {
                continue;
            };
            let (suffix, help) = match (kind, resource) {
                ("some", _) => ("waiting", format!("Total time in seconds that processes have waited {what}")),
                ("full", "cpu") => continue,
                ("full", _) => (
                    "stalled",
                    format!(
                        "Total time in seconds no process could make progress {}",
                        if resource == "io" { "due to IO congestion" } else { "due to memory congestion" }
                    ),
                ),
                _ => continue,
            };
            out.push(Family::single(
                format!("node_pressure_{resource}_{suffix}_seconds_total"),
                help,
                MetricKind::Counter,
                total / 1e6,
            ));
        }
    }
    out
}

/// `/proc/schedstat`'s per-CPU lines: time running and waiting (ns → s) and timeslices.
pub fn schedstat(text: &str) -> Vec<Family> {
    let mut families = [
        ("node_schedstat_running_seconds_total", "Number of seconds CPU spent running a process."),
        ("node_schedstat_waiting_seconds_total", "Number of seconds spent by processing waiting for this CPU."),
        ("node_schedstat_timeslices_total", "Number of timeslices executed by CPU."),
    ]
    .map(|(name, help)| Family::new(name, help, MetricKind::Counter));
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else { continue };
        let values: Vec<f64> = fields.filter_map(|v| v.parse().ok()).collect();
        // cpu<N> then nine counters; the last three are running ns, waiting ns, slices.
        if values.len() < 9 {
            continue;
        }
        let tail = &values[values.len() - 3..];
        families[0].push(&[("cpu", cpu)], tail[0] / 1e9);
        families[1].push(&[("cpu", cpu)], tail[1] / 1e9);
        families[2].push(&[("cpu", cpu)], tail[2]);
    }
    families.into_iter().filter(|f| !f.samples.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(families: &[Family], name: &str) -> Option<f64> {
        families.iter().find(|f| f.name == name).map(|f| f.samples[0].value)
    }

    #[test]
    fn meminfo_keeps_every_field_with_node_exporters_names() {
        let text = "MemTotal:        8000000 kB\nActive(anon):      1000 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\nbroken line\n";
        let families = meminfo(text);
        assert_eq!(value(&families, "node_memory_MemTotal_bytes"), Some(8_192_000_000.0));
        assert_eq!(value(&families, "node_memory_Active_anon_bytes"), Some(1_024_000.0));
        assert_eq!(value(&families, "node_memory_HugePages_Total"), Some(0.0));
        assert_eq!(value(&families, "node_memory_Hugepagesize_bytes"), Some(2_097_152.0));
        assert_eq!(families.len(), 4);
    }

    #[test]
    fn vmstat_reports_node_exporters_default_fields_untyped() {
        let families = vmstat("nr_free_pages 10\npgfault 100\npgmajfault 3\noom_kill 1\npswpin 0\npgpgout 7\nbad\n");
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node_vmstat_pgfault",
                "node_vmstat_pgmajfault",
                "node_vmstat_oom_kill",
                "node_vmstat_pswpin",
                "node_vmstat_pgpgout"
            ]
        );
        assert!(families.iter().all(|f| f.kind == MetricKind::Untyped));
    }

    #[test]
    fn pressure_and_schedstat_are_in_seconds() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("proc/pressure")).expect("dir");
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n";
        for resource in ["cpu", "io", "memory"] {
            std::fs::write(dir.path().join(format!("proc/pressure/{resource}")), psi).expect("psi");
        }
        let families = pressure(dir.path());
        assert_eq!(value(&families, "node_pressure_cpu_waiting_seconds_total"), Some(2.5));
        assert_eq!(value(&families, "node_pressure_io_stalled_seconds_total"), Some(1.0));
        assert!(value(&families, "node_pressure_cpu_stalled_seconds_total").is_none());
        assert_eq!(families.len(), 5);
        let sched = schedstat("version 15\ntimestamp 1\ncpu0 0 0 0 0 0 0 2000000000 500000000 42\ndomain0 f 1 2\n");
        assert_eq!(value(&sched, "node_schedstat_running_seconds_total"), Some(2.0));
        assert_eq!(value(&sched, "node_schedstat_waiting_seconds_total"), Some(0.5));
        assert_eq!(value(&sched, "node_schedstat_timeslices_total"), Some(42.0));
    }
}
