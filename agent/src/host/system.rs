//! The system itself, as node_exporter's uname, os, timex, thermal_zone and hwmon
//! collectors report it. The community node dashboards find hosts through
//! `node_uname_info` (its `nodename`), so it is never left out on Linux.

use std::path::Path;

use hale_core::metrics::{Family, MetricKind};

use super::read;

/// Appends the families read under `root` (uname and timex are system calls: the host's).
pub fn collect(root: &Path, out: &mut Vec<Family>) {
    out.extend(uname());
    if let Some(text) = read(root, "etc/os-release").or_else(|| read(root, "usr/lib/os-release")) {
        out.extend(os_release(&text));
    }
    out.extend(timex());
    out.extend(thermal_zones(root));
    out.extend(hwmon(root));
}

fn uname() -> Option<Family> {
    let u = nix::sys::utsname::uname().ok()?;
    let text = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
    let mut family = Family::new(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
        MetricKind::Gauge,
    );
    family.push(
        &[
            ("domainname", &text(u.domainname())),
            ("machine", &text(u.machine())),
            ("nodename", &text(u.nodename())),
            ("release", &text(u.release())),
            ("sysname", &text(u.sysname())),
            ("version", &text(u.version())),
        ],
        1.0,
    );
    Some(family)
}

/// `node_os_info` (every field node_exporter labels it with, empty when absent) and
/// `node_os_version` (the major.minor of `VERSION_ID`).
fn os_release(text: &str) -> Vec<Family> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
            .unwrap_or_default()
    };
    const KEYS: [(&str, &str); 12] = [
        ("build_id", "BUILD_ID"),
        ("id", "ID"),
        ("id_like", "ID_LIKE"),
        ("image_id", "IMAGE_ID"),
        ("image_version", "IMAGE_VERSION"),
        ("name", "NAME"),
        ("pretty_name", "PRETTY_NAME"),
        ("variant", "VARIANT"),
        ("variant_id", "VARIANT_ID"),
        ("version", "VERSION"),
        ("version_codename", "VERSION_CODENAME"),
        ("version_id", "VERSION_ID"),
    ];
    let values: Vec<(&str, String)> = KEYS.iter().map(|(label, key)| (*label, field(key))).collect();
    let labels: Vec<(&str, &str)> = values.iter().map(|(l, v)| (*l, v.as_str())).collect();
    let mut info = Family::new(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
        MetricKind::Gauge,
    );
    info.push(&labels, 1.0);
    let mut out = vec![info];
    // "12" → 12, "22.04" → 22.04, "3.18.4" → 3.18.
    let version_id = field("VERSION_ID");
    let major_minor: String = version_id.split('.').take(2).collect::<Vec<_>>().join(".");
    if let Ok(version) = major_minor.parse::<f64>() {
        let mut family = Family::new(
            "node_os_version",
            "Metric containing the major.minor part of the OS version.",
            MetricKind::Gauge,
        );
        family.push(&[("id", &field("ID")), ("id_like", &field("ID_LIKE")), ("name", &field("NAME"))], version);
        out.push(family);
    }
    out
}

/// The kernel clock's state (`adjtimex(2)` with no change asked), in node_exporter's
/// units: offsets in seconds (the kernel counts in ns or µs by `STA_NANO`), frequencies
/// in Hz from the kernel's 16-bit-fraction ppm. No crate wraps `adjtimex`; the one
/// `unsafe` call is a read (`modes == 0`) into a struct it owns.
#[allow(unsafe_code)]
fn timex() -> Vec<Family> {
    const STA_NANO: i32 = 0x2000;
    const TIME_ERROR: i32 = 5;
    const PPM16: f64 = 65536.0 * 1e6;
    // SAFETY: adjtimex with `modes == 0` only reads the kernel's clock state into the
    // zeroed struct it is given.
    let (status, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        let status = libc::adjtimex(&mut t);
        (status, t)
    };
    if status < 0 {
        return Vec::new();
    }
    let divisor = if t.status & STA_NANO != 0 { 1e9 } else { 1e6 };
    let g = MetricKind::Gauge;
    let c = MetricKind::Counter;
    [
        (
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            g,
            t.offset as f64 / divisor,
        ),
        ("node_timex_frequency_adjustment_ratio", "Local clock frequency adjustment.", g, 1.0 + t.freq as f64 / PPM16),
        ("node_timex_maxerror_seconds", "Maximum error in seconds.", g, t.maxerror as f64 / 1e6),
        ("node_timex_estimated_error_seconds", "Estimated error in seconds.", g, t.esterror as f64 / 1e6),
        ("node_timex_status", "Value of the status array bits.", g, f64::from(t.status)),
        ("node_timex_loop_time_constant", "Phase-locked loop time constant.", g, t.constant as f64),
        ("node_timex_tick_seconds", "Seconds between clock ticks.", g, t.tick as f64 / 1e6),
        ("node_timex_pps_frequency_hertz", "Pulse per second frequency.", g, t.ppsfreq as f64 / PPM16),
        ("node_timex_pps_jitter_seconds", "Pulse per second jitter.", g, t.jitter as f64 / divisor),
        ("node_timex_pps_shift_seconds", "Pulse per second interval duration.", g, f64::from(t.shift)),
        (
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            g,
            t.stabil as f64 / PPM16,
        ),
        ("node_timex_pps_jitter_total", "Pulse per second count of jitter limit exceeded events.", c, t.jitcnt as f64),
        ("node_timex_pps_calibration_total", "Pulse per second count of calibration intervals.", c, t.calcnt as f64),
        ("node_timex_pps_error_total", "Pulse per second count of calibration errors.", c, t.errcnt as f64),
        (
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            c,
            t.stbcnt as f64,
        ),
        ("node_timex_tai_offset_seconds", "International Atomic Time (TAI) offset.", g, f64::from(t.tai)),
        (
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            g,
            if status == TIME_ERROR { 0.0 } else { 1.0 },
        ),
    ]
    .into_iter()
    .map(|(name, help, kind, value)| Family::single(name, help, kind, value))
    .collect()
}

/// `/sys/class/thermal/thermal_zone*`: each zone's temperature (m°C → °C).
fn thermal_zones(root: &Path) -> Vec<Family> {
    let mut family = Family::new("node_thermal_zone_temp", "Zone temperature in Celsius", MetricKind::Gauge);
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/thermal")) else { return Vec::new() };
    let mut zones: Vec<_> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    zones.sort();
    for zone in zones.iter().filter(|z| z.starts_with("thermal_zone")) {
        let dir = format!("sys/class/thermal/{zone}");
        let Some(temp) = read(root, &format!("{dir}/temp")).and_then(|t| t.trim().parse::<f64>().ok()) else {
            continue;
        };
        let kind = read(root, &format!("{dir}/type")).unwrap_or_default();
        family.push(&[("type", kind.trim()), ("zone", zone.trim_start_matches("thermal_zone"))], temp / 1000.0);
    }
    if family.samples.is_empty() { Vec::new() } else { vec![family] }
}

/// `/sys/class/hwmon/hwmon*`: each chip's name and temperature sensors (m°C → °C).
fn hwmon(root: &Path) -> Vec<Family> {
    let Ok(entries) = std::fs::read_dir(root.join("sys/class/hwmon")) else { return Vec::new() };
    let mut names =
        Family::new("node_hwmon_chip_names", "Annotation metric for human-readable chip names", MetricKind::Gauge);
    let mut temps =
        Family::new("node_hwmon_temp_celsius", "Hardware monitor for temperature (input)", MetricKind::Gauge);
    let mut chips: Vec<_> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    chips.sort();
    for chip in &chips {
        let dir = format!("sys/class/hwmon/{chip}");
        let name = read(root, &format!("{dir}/name")).unwrap_or_default();
        names.push(&[("chip", chip), ("chip_name", name.trim())], 1.0);
        let Ok(files) = std::fs::read_dir(root.join(&dir)) else { continue };
        let mut sensors: Vec<String> = files
            .flatten()
            .filter_map(|f| f.file_name().to_str()?.strip_suffix("_input").map(str::to_string))
            .filter(|s| s.starts_with("temp"))
            .collect();
        sensors.sort();
        for sensor in sensors {
            if let Some(v) = read(root, &format!("{dir}/{sensor}_input")).and_then(|t| t.trim().parse::<f64>().ok()) {
                temps.push(&[("chip", chip), ("sensor", &sensor)], v / 1000.0);
            }
        }
    }
    [names, temps].into_iter().filter(|f| !f.samples.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_gives_info_and_version() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        let families = os_release(text);
        let info = &families[0].samples[0];
        assert_eq!(info.labels.len(), 12);
        assert!(info.labels.contains(&("version_codename".into(), "bookworm".into())));
        assert!(info.labels.contains(&("pretty_name".into(), "Debian GNU/Linux 12 (bookworm)".into())));
        assert_eq!(families[1].name, "node_os_version");
        assert_eq!(families[1].samples[0].value, 12.0);
        assert_eq!(os_release("VERSION_ID=22.04.3\n")[1].samples[0].value, 22.04);
    }

    #[test]
    fn uname_and_timex_answer_on_linux() {
        let u = uname().expect("uname");
        assert!(u.samples[0].labels.iter().any(|(k, v)| k == "sysname" && v == "Linux"));
        let t = timex();
        assert_eq!(t.len(), 17);
        let tick = t.iter().find(|f| f.name == "node_timex_tick_seconds").expect("tick").samples[0].value;
        assert!(tick > 0.0 && tick < 1.0, "{tick}");
    }

    #[test]
    fn thermal_zones_and_hwmon_are_read_in_celsius() {
        let dir = tempfile::tempdir().expect("tmp");
        let zone = dir.path().join("sys/class/thermal/thermal_zone0");
        std::fs::create_dir_all(&zone).expect("zone");
        std::fs::write(zone.join("temp"), "42500\n").expect("temp");
        std::fs::write(zone.join("type"), "x86_pkg_temp\n").expect("type");
        let chip = dir.path().join("sys/class/hwmon/hwmon0");
        std::fs::create_dir_all(&chip).expect("chip");
        std::fs::write(chip.join("name"), "coretemp\n").expect("name");
        std::fs::write(chip.join("temp1_input"), "51000\n").expect("input");
        let zones = thermal_zones(dir.path());
        assert_eq!(zones[0].samples[0].value, 42.5);
        let hw = hwmon(dir.path());
        assert_eq!(hw[1].samples[0].value, 51.0);
        assert!(hw[0].samples[0].labels.contains(&("chip_name".into(), "coretemp".into())));
    }
}
