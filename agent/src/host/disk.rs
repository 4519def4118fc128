//! Disks and filesystems, as node_exporter's diskstats and filesystem collectors report
//! them: every statistic of `/proc/diskstats` for whole devices (partitions, RAM disks,
//! loop and floppy devices left out, by node_exporter 1.5's rule), `node_disk_info` with
//! what udev knows of the device, and `statfs` of every mounted filesystem but the
//! virtual ones.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use hale_core::metrics::{Family, MetricKind};

use super::read;

/// Appends the families read under `root`.
pub fn collect(root: &Path, out: &mut Vec<Family>) {
    if let Some(text) = read(root, "proc/diskstats") {
        out.extend(diskstats(root, &text));
    }
    let mounts = read(root, "proc/1/mounts").or_else(|| read(root, "proc/self/mounts"));
    if let Some(text) = mounts {
        out.extend(filesystems(root, &text));
    }
}

/// node_exporter 1.5's default `--collector.diskstats.device-exclude`:
/// `^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$`.
fn excluded_device(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let after_letter = |prefix: &str| {
        name.strip_prefix(prefix).is_some_and(|rest| {
            let mut chars = rest.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase()) && digits(chars.as_str())
        })
    };
    if ["ram", "loop", "fd"].iter().any(|p| name.strip_prefix(p).is_some_and(digits)) {
        return true;
    }
    if ["hd", "sd", "vd", "xvd"].iter().any(|p| after_letter(p)) {
        return true;
    }
    // nvme<N>n<N>p<N>: a partition of an NVMe namespace.
    name.strip_prefix("nvme")
        .and_then(|r| r.split_once('n'))
        .and_then(|(ctrl, r)| Some((ctrl, r.split_once('p')?)))
        .is_some_and(|(ctrl, (ns, part))| digits(ctrl) && digits(ns) && digits(part))
}

/// The statistics of `/proc/diskstats`, in its column order after major, minor and name:
/// (family, help, scale). Older kernels have 11 columns, 4.18 adds discards, 5.5 flushes;
/// a family is reported for the columns the line has. All are counters but `io_now`.
const STATS: [(&str, &str, f64); 17] = [
    ("node_disk_reads_completed_total", "The total number of reads completed successfully.", 1.0),
    ("node_disk_reads_merged_total", "The total number of reads merged.", 1.0),
    ("node_disk_read_bytes_total", "The total number of bytes read successfully.", 512.0),
    ("node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", 0.001),
    ("node_disk_writes_completed_total", "The total number of writes completed successfully.", 1.0),
    ("node_disk_writes_merged_total", "The number of writes merged.", 1.0),
    ("node_disk_written_bytes_total", "The total number of bytes written successfully.", 512.0),
    ("node_disk_write_time_seconds_total", "This is the total number of seconds spent by all writes.", 0.001),
    ("node_disk_io_now", "The number of I/Os currently in progress.", 1.0),
    ("node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", 0.001),
    ("node_disk_io_time_weighted_seconds_total", "The weighted # of seconds spent doing I/Os.", 0.001),
    ("node_disk_discards_completed_total", "The total number of discards completed successfully.", 1.0),
    ("node_disk_discards_merged_total", "The total number of discards merged.", 1.0),
    ("node_disk_discarded_sectors_total", "The total number of sectors discarded successfully.", 1.0),
    ("node_disk_discard_time_seconds_total", "This is the total number of seconds spent by all discards.", 0.001),
    ("node_disk_flush_requests_total", "The total number of flush requests completed successfully", 1.0),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        0.001,
    ),
];

fn diskstats(root: &Path, text: &str) -> Vec<Family> {
    let kind = |name: &str| if name.ends_with("_total") { MetricKind::Counter } else { MetricKind::Gauge };
    let mut families: Vec<Family> = STATS.iter().map(|(name, help, _)| Family::new(*name, *help, kind(name))).collect();
    let mut info = Family::new("node_disk_info", "Info of /sys/block/<block_device>.", MetricKind::Gauge);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [major, minor, device, stats @ ..] = fields.as_slice() else { continue };
        if excluded_device(device) || stats.len() < 11 {
            continue;
        }
        let values: Vec<f64> = stats.iter().map_while(|v| v.parse().ok()).collect();
        for (family, (value, (_, _, scale))) in families.iter_mut().zip(values.iter().zip(STATS.iter())) {
            family.push(&[("device", device)], value * scale);
        }
        let udev = udev_properties(root, major, minor);
        let prop = |key: &str| udev.get(key).map(String::as_str).unwrap_or("");
        info.push(
            &[
                ("device", device),
                ("major", major),
                ("minor", minor),
                ("model", prop("ID_MODEL")),
                ("path", prop("ID_PATH")),
                ("revision", prop("ID_REVISION")),
                ("serial", prop("ID_SERIAL_SHORT")),
                ("wwn", prop("ID_WWN")),
            ],
            1.0,
        );
    }
    families.push(info);
    families.into_iter().filter(|f| !f.samples.is_empty()).collect()
}

/// What udev recorded of block device `major:minor` (`/run/udev/data/b<major>:<minor>`,
/// its `E:KEY=value` lines); empty without udev.
fn udev_properties(root: &Path, major: &str, minor: &str) -> HashMap<String, String> {
    read(root, &format!("run/udev/data/b{major}:{minor}"))
        .map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("E:")?.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// node_exporter 1.5's default mount point exclusion:
/// `^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
fn excluded_mount_point(mount: &str) -> bool {
    let Some(rest) = mount.strip_prefix('/') else { return false };
    let under = |dir: &str| rest == dir || rest.starts_with(&format!("{dir}/"));
    ["dev", "proc", "run", "sys", "mnt", "media"].iter().any(|d| under(d))
        || ["var/lib/docker/", "var/lib/containers/storage/"]
            .iter()
            .any(|d| rest.strip_prefix(d).is_some_and(|r| !r.is_empty()))
}

/// node_exporter 1.5's default filesystem type exclusion.
const EXCLUDED_FS_TYPES: [&str; 24] = [
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Filesystems that can hang a `statfs` (a server gone away): asked from a thread of
/// their own, given up after [`STATFS_TIMEOUT`], and not asked again until that call
/// returns, as node_exporter's mount timeout does.
const NETWORK_FS: [&str; 8] = ["nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "9p", "sshfs"];
const STATFS_TIMEOUT: Duration = Duration::from_secs(5);

/// Mount points whose `statfs` is still hanging.
static STUCK: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// A mount point's (size, free, available, files, files free), in bytes and inodes.
type Usage = (f64, f64, f64, f64, f64);

fn statfs(path: &Path) -> Option<Usage> {
    let s = nix::sys::statfs::statfs(path).ok()?;
    let bsize = s.block_size() as f64;
    Some((
        s.blocks() as f64 * bsize,
        s.blocks_free() as f64 * bsize,
        s.blocks_available() as f64 * bsize,
        s.files() as f64,
        s.files_free() as f64,
    ))
}

/// `statfs` that gives up on a hung network filesystem.
fn statfs_bounded(path: &Path, mount: &str, fstype: &str) -> Option<Usage> {
    let networked = NETWORK_FS.contains(&fstype) || fstype.starts_with("fuse.");
    if !networked {
        return statfs(path);
    }
    let stuck = |f: &mut dyn FnMut(&mut HashSet<String>)| {
        let mut guard = STUCK.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.get_or_insert_with(HashSet::new))
    };
    let mut already = false;
    stuck(&mut |set| already = set.contains(mount));
    if already {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let (owned_path, owned_mount) = (path.to_path_buf(), mount.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(statfs(&owned_path));
        let mut guard = STUCK.lock().unwrap_or_else(|p| p.into_inner());
        guard.get_or_insert_with(HashSet::new).remove(&owned_mount);
    });
    match rx.recv_timeout(STATFS_TIMEOUT) {
        Ok(usage) => usage,
        Err(_) => {
            tracing::warn!(mount, "statfs did not return within 5 s; the mount is marked failing until it does");
            stuck(&mut |set| {
                set.insert(mount.to_string());
            });
            None
        }
    }
}

/// `/proc/mounts` escapes spaces and the like as `\040` (octal).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn filesystems(root: &Path, mounts: &str) -> Vec<Family> {
    let mut families = [
        ("node_filesystem_size_bytes", "Filesystem size in bytes."),
        ("node_filesystem_free_bytes", "Filesystem free space in bytes."),
        ("node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes."),
        ("node_filesystem_files", "Filesystem total file nodes."),
        ("node_filesystem_files_free", "Filesystem total free file nodes."),
        ("node_filesystem_readonly", "Filesystem read-only status."),
        ("node_filesystem_device_error", "Whether an error occurred while getting statistics for the given device."),
    ]
    .map(|(name, help)| Family::new(name, help, MetricKind::Gauge));
    let mut seen = HashSet::new();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mount, fstype, options, ..] = fields.as_slice() else { continue };
        let (device, mount) = (unescape(device), unescape(mount));
        if excluded_mount_point(&mount)
            || EXCLUDED_FS_TYPES.contains(fstype)
            || !seen.insert((device.clone(), mount.clone()))
        {
            continue;
        }
        let labels = [("device", device.as_str()), ("fstype", *fstype), ("mountpoint", mount.as_str())];
        let readonly = options.split(',').any(|o| o == "ro");
        let path = root.join(mount.trim_start_matches('/'));
        match statfs_bounded(&path, &mount, fstype) {
            Some((size, free, avail, files, files_free)) => {
                for (family, value) in families.iter_mut().zip([size, free, avail, files, files_free]) {
                    family.push(&labels, value);
                }
                families[6].push(&labels, 0.0);
            }
            None => {
                families[6].push(&labels, 1.0);
            }
        }
        families[5].push(&labels, if readonly { 1.0 } else { 0.0 });
    }
    families.into_iter().filter(|f| !f.samples.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_excluded_as_node_exporter_excludes_them() {
        for excluded in ["ram0", "loop12", "fd0", "sda1", "vda2", "xvda1", "hdb3", "nvme0n1p1"] {
            assert!(excluded_device(excluded), "{excluded}");
        }
        for kept in ["sda", "vda", "nvme0n1", "dm-0", "zram0", "md0", "sr0", "mmcblk0"] {
            assert!(!excluded_device(kept), "{kept}");
        }
    }

    #[test]
    fn diskstats_scale_to_bytes_and_seconds_for_the_columns_a_kernel_has() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("run/udev/data")).expect("udev");
        std::fs::write(
            dir.path().join("run/udev/data/b8:0"),
            "S:disk/by-id/x\nE:ID_MODEL=Fast_Disk\nE:ID_SERIAL_SHORT=S123\n",
        )
        .expect("udev file");
        // 17 statistics (5.5+), 11 (older), a partition, a loop device, a short line.
        let text = "   8       0 sda 100 2 800 50 40 1 160 30 0 70 90 5 0 8 4 7 6\n\
                    \x20  8       1 sda1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n\
                    \x20  7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
                    \x20253       0 dm-0 10 0 16 5 4 0 8 3 1 9 9\n\
                    \x20  1       1 bad 1 2\n";
        let families = diskstats(dir.path(), text);
        let value = |name: &str, device: &str| {
            families
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.samples.iter().find(|s| s.labels.iter().any(|(k, v)| k == "device" && v == device)))
                .map(|s| s.value)
        };
        assert_eq!(value("node_disk_read_bytes_total", "sda"), Some(800.0 * 512.0));
        assert_eq!(value("node_disk_read_time_seconds_total", "sda"), Some(0.05));
        assert_eq!(value("node_disk_io_now", "sda"), Some(0.0));
        assert_eq!(value("node_disk_flush_requests_total", "sda"), Some(7.0));
        assert_eq!(value("node_disk_discarded_sectors_total", "sda"), Some(8.0), "sectors, not bytes");
        assert_eq!(value("node_disk_written_bytes_total", "dm-0"), Some(8.0 * 512.0));
        assert_eq!(value("node_disk_discards_completed_total", "dm-0"), None, "an 11-column line has no discards");
        assert_eq!(value("node_disk_reads_completed_total", "sda1"), None, "partitions are left out");
        assert_eq!(value("node_disk_reads_completed_total", "loop0"), None);
        let info = families.iter().find(|f| f.name == "node_disk_info").expect("info");
        let sda = info.samples.iter().find(|s| s.labels.contains(&("device".into(), "sda".into()))).expect("sda");
        assert!(
            sda.labels.contains(&("model".into(), "Fast_Disk".into()))
                && sda.labels.contains(&("serial".into(), "S123".into()))
        );
        assert_eq!(sda.labels.len(), 8, "every label, empty where udev says nothing");
    }

    #[test]
    fn filesystems_leave_out_virtual_mounts_and_mark_the_unreadable() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("data")).expect("mount dir");
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\n\
                      proc /proc proc rw 0 0\n\
                      /dev/vdb /data xfs ro,noatime 0 0\n\
                      /dev/vdc /gone\\040away ext4 rw 0 0\n\
                      tmpfs /run tmpfs rw 0 0\n\
                      overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0\n";
        let families = filesystems(dir.path(), mounts);
        let samples =
            |name: &str| families.iter().find(|f| f.name == name).map(|f| f.samples.clone()).unwrap_or_default();
        let mounts: Vec<String> = samples("node_filesystem_readonly")
            .iter()
            .map(|s| s.labels.iter().find(|(k, _)| k == "mountpoint").expect("mountpoint").1.clone())
            .collect();
        assert_eq!(mounts, ["/", "/data", "/gone away"]);
        let readonly: Vec<f64> = samples("node_filesystem_readonly").iter().map(|s| s.value).collect();
        assert_eq!(readonly, [0.0, 1.0, 0.0]);
        let errors: Vec<f64> = samples("node_filesystem_device_error").iter().map(|s| s.value).collect();
        assert_eq!(errors, [0.0, 0.0, 1.0], "the missing mount point cannot be read");
        assert_eq!(samples("node_filesystem_size_bytes").len(), 2, "no size for what could not be read");
        assert!(
            excluded_mount_point("/run/user/0") && !excluded_mount_point("/running") && excluded_mount_point("/mnt")
        );
    }
}
