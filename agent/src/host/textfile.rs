//! node_exporter's textfile collector (1.5.0, `collector/textfile.go`): cron jobs and
//! scripts drop `*.prom` files in a directory and their metrics are served with the
//! host's, so the dashboards and alerts written for node_exporter's textfiles keep
//! working.
//!
//! Every problem with a file (unreadable, unparsable, too large, client-side timestamps,
//! a family that would shadow a built-in one) leaves that file or family out and sets
//! `node_textfile_scrape_error` to 1, which is what the community alerts watch; the
//! rest is still served.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use hale_core::exposition::{self, Format};
use hale_core::metrics::{Family, Labels, MetricKind};

/// A file larger than this is skipped: textfiles are small, and one that is not is
/// most likely a runaway script whose output would be read into memory every scrape.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// No more families than this from all files together, so a generator gone wrong cannot
/// make every scrape of the host unboundedly large.
const MAX_FAMILIES: usize = 10_000;

const MTIME: &str = "node_textfile_mtime_seconds";
const SCRAPE_ERROR: &str = "node_textfile_scrape_error";

/// Appends the families of every `*.prom` file in `dir`, and the collector's own. Call it
/// after the built-in collectors: a textfile family may not take a name `out` already has.
pub fn collect(dir: &Path, out: &mut Vec<Family>) {
    let mut reserved: HashSet<String> = out
        .iter()
        .flat_map(|f| std::iter::once(f.name.clone()).chain(f.samples.iter().map(|s| s.name.clone())))
        .collect();
    reserved.extend([MTIME.to_string(), SCRAPE_ERROR.to_string()]);
    let mut merged = Merged { reserved, ..Merged::default() };
    let mut mtimes = Family::new(MTIME, "Unixtime mtime of textfiles successfully read.", MetricKind::Gauge);

    match prom_files(dir) {
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the textfile directory");
            merged.errored = true;
        }
        Ok(files) => {
            for path in files {
                let label = path.to_string_lossy().into_owned();
                let (families, mtime) = match read_file(&path) {
                    Ok(read) => read,
                    Err(error) => {
                        tracing::warn!(file = %label, %error, "textfile skipped");
                        merged.errored = true;
                        continue;
                    }
                };
                let new: HashSet<&str> =
                    families.iter().map(|f| f.name.as_str()).filter(|n| !merged.index.contains_key(*n)).collect();
                if merged.families.len() + new.len() > MAX_FAMILIES {
                    tracing::warn!(file = %label, limit = MAX_FAMILIES, "too many textfile families; this file and the rest skipped");
                    merged.errored = true;
                    break;
                }
                for family in families {
                    merged.add(family, &label);
                }
                mtimes.push(&[("file", &label)], mtime);
            }
        }
    }

    let errored = merged.errored;
    for (mut family, sources) in merged.families {
        if family.samples.is_empty() {
            continue;
        }
        if family.help.is_empty() {
            family.help = format!("Metric read from {}", sources.join(", "));
        }
        out.push(family);
    }
    if !mtimes.samples.is_empty() {
        out.push(mtimes);
    }
    out.push(Family::single(
        SCRAPE_ERROR,
        "1 if there was an error opening or reading a file, 0 otherwise",
        MetricKind::Gauge,
        if errored { 1.0 } else { 0.0 },
    ));
}

/// The `*.prom` entries of `dir` (not recursive), sorted by name as node_exporter reads
/// them, so which file's HELP wins and which of two conflicting types is kept does not
/// depend on directory order.
fn prom_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if name.to_string_lossy().ends_with(".prom") {
            files.push(name);
        }
    }
    files.sort();
    Ok(files.into_iter().map(|name| dir.join(name)).collect())
}

/// One file's families and its mtime in whole seconds, or why the whole file is left out.
fn read_file(path: &Path) -> Result<(Vec<Family>, f64), String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let metadata = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    // Read at most one byte past the limit: the file may have grown since the stat.
    let mut body = String::new();
    let mut reader = file.take(MAX_FILE_BYTES + 1);
    reader.read_to_string(&mut body).map_err(|e| format!("cannot read: {e}"))?;
    if body.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let families = exposition::parse(&body, Format::Text).map_err(|e| format!("cannot parse: {e}"))?;
    // A textfile's samples are served as current; a timestamp would make Prometheus
    // store them at a stale time (or reject them), so node_exporter refuses the file.
    if families.iter().flat_map(|f| &f.samples).any(|s| s.timestamp_ms.is_some()) {
        return Err("contains unsupported client-side timestamps, skipping entire file".into());
    }
    // Stat again now that the file has been read, as node_exporter does, so a file that
    // failed does not look fresh and one rewritten while read shows its new mtime.
    let modified = reader
        .into_inner()
        .metadata()
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot read the modification time: {e}"))?;
    let seconds = match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as f64,
        Err(before) => -before.duration().as_secs_f64().ceil(),
    };
    Ok((families, seconds))
}

/// The families of all files read so far, each with the files it came from.
#[derive(Default)]
struct Merged {
    families: Vec<(Family, Vec<String>)>,
    /// Family name → position in `families`.
    index: HashMap<String, usize>,
    /// Series already present (sample name and sorted labels): the same series from
    /// two files would be served twice, which Prometheus rejects.
    series: HashSet<(String, Labels)>,
    /// Names of the built-in families and series, and the collector's own.
    reserved: HashSet<String>,
    errored: bool,
}

impl Merged {
    /// Adds `family` from `file`: merged into an earlier family of the same name and
    /// type, dropped if the type differs or the name belongs to a built-in family.
    fn add(&mut self, family: Family, file: &str) {
        if let Some(clash) = std::iter::once(&family.name)
            .chain(family.samples.iter().map(|s| &s.name))
            .find(|n| self.reserved.contains(*n))
        {
            tracing::warn!(%file, family = %family.name, series = %clash, "textfile family clashes with a built-in metric; skipped");
            self.errored = true;
            return;
        }
        let position = match self.index.get(&family.name) {
            Some(&position) => position,
            None => {
                self.index.insert(family.name.clone(), self.families.len());
                self.families.push((Family::new(family.name.clone(), "", family.kind), Vec::new()));
                self.families.len() - 1
            }
        };
        let Some((existing, sources)) = self.families.get_mut(position) else { return };
        if existing.kind != family.kind {
            tracing::warn!(
                %file,
                family = %family.name,
                kind = family.kind.as_str(),
                earlier = existing.kind.as_str(),
                "textfile family's type differs from an earlier file's; skipped",
            );
            self.errored = true;
            return;
        }
        // The first HELP given wins, as a later file cannot be told apart from a typo.
        if existing.help.is_empty() {
            existing.help = family.help;
        }
        if !sources.iter().any(|s| s == file) {
            sources.push(file.to_string());
        }
        for sample in family.samples {
            let mut labels = sample.labels.clone();
            labels.sort();
            if self.series.insert((sample.name.clone(), labels)) {
                existing.samples.push(sample);
            } else {
                tracing::warn!(%file, series = %sample.name, "textfile series given twice; the later one skipped");
                self.errored = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        fs::write(dir.join(name), body).expect("write");
    }

    /// A directory holding these (name, contents) files.
    fn textfiles(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in files {
            write(dir.path(), name, body);
        }
        dir
    }

    fn run(dir: &Path, built_in: Vec<Family>) -> Vec<Family> {
        let mut out = built_in;
        collect(dir, &mut out);
        out
    }

    fn family<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
        families.iter().find(|f| f.name == name)
    }

    fn scrape_error(families: &[Family]) -> Option<f64> {
        family(families, SCRAPE_ERROR).and_then(|f| f.samples.first()).map(|s| s.value)
    }

    /// The families read from the files (the collector's own left out).
    fn read_names(families: &[Family]) -> Vec<&str> {
        families.iter().map(|f| f.name.as_str()).filter(|n| !n.starts_with("node_textfile_")).collect()
    }

    /// The `file` labels of the mtime family.
    fn mtime_files(families: &[Family]) -> Vec<String> {
        family(families, MTIME)
            .map(|f| f.samples.iter().flat_map(|s| s.labels.iter().map(|(_, v)| v.clone())).collect())
            .unwrap_or_default()
    }

    #[test]
    fn families_of_several_files_are_merged() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "b.prom",
            "# HELP backup_last_success_seconds Later help.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\"} 2\nno_help_metric 3\n",
        );
        write(
            dir.path(),
            "a.prom",
            "# HELP backup_last_success_seconds When the backup last succeeded.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"web\"} 1\nno_help_metric{x=\"1\"} 4\n",
        );
        write(dir.path(), "ignored.txt", "not_read 1\n");
        let out = run(dir.path(), Vec::new());
        let backup = family(&out, "backup_last_success_seconds").expect("merged");
        assert_eq!(backup.kind, MetricKind::Gauge);
        assert_eq!(backup.help, "When the backup last succeeded.", "the first file's HELP (sorted by name)");
        let values: Vec<f64> = backup.samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 2.0]);
        let a = dir.path().join("a.prom").to_string_lossy().into_owned();
        let b = dir.path().join("b.prom").to_string_lossy().into_owned();
        let no_help = family(&out, "no_help_metric").expect("no help");
        assert_eq!(no_help.help, format!("Metric read from {a}, {b}"));
        assert_eq!(no_help.kind, MetricKind::Untyped);
        assert!(family(&out, "not_read").is_none());
        assert_eq!(mtime_files(&out), [a, b]);
        assert_eq!(scrape_error(&out), Some(0.0));
    }

    #[test]
    fn a_bad_file_is_skipped_whole_and_the_good_ones_are_read() {
        // A syntax error, binary, client-side timestamps (node_exporter refuses them), not
        // UTF-8, a directory: each left out whole, the error said once.
        let dir = textfiles(&[
            ("a_broken.prom", "ok_before_the_error 1\nbroken{ 1\n"),
            ("b_good.prom", "# TYPE jobs_done_total counter\njobs_done_total 7\n"),
            ("c_binary.prom", "\u{0}\u{1}"),
            ("f_stamped.prom", "fresh_metric 1\nstamped_metric 2 1700000000000\n"),
            ("g_good.prom", "good_metric 1\n"),
        ]);
        fs::write(dir.path().join("d_not_utf8.prom"), [0xff, 0xfe, b'\n']).expect("write");
        fs::create_dir(dir.path().join("e_dir.prom")).expect("mkdir");
        let out = run(dir.path(), Vec::new());
        assert_eq!(read_names(&out), ["jobs_done_total", "good_metric"], "each bad file is left out whole");
        let jobs = family(&out, "jobs_done_total").expect("good file read");
        assert_eq!((jobs.kind, jobs.samples[0].value), (MetricKind::Counter, 7.0));
        let good = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        assert_eq!(mtime_files(&out), [good("b_good.prom"), good("g_good.prom")]);
        assert_eq!(scrape_error(&out), Some(1.0));
    }

    #[test]
    fn mtime_is_whole_seconds_labelled_with_the_path() {
        let dir = textfiles(&[("x.prom", "x 1\n")]);
        let path = dir.path().join("x.prom");
        let expected = fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(|t| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default())
            .expect("mtime");
        let out = run(dir.path(), Vec::new());
        let mtime = family(&out, MTIME).expect("mtime family");
        assert_eq!(mtime.kind, MetricKind::Gauge);
        assert_eq!(mtime.samples[0].labels, vec![("file".to_string(), path.to_string_lossy().into_owned())]);
        assert_eq!(mtime.samples[0].value, expected as f64);
        assert_eq!(mtime.samples[0].value.fract(), 0.0);
    }

    #[test]
    fn a_textfile_cannot_replace_a_built_in_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "clash.prom",
            "node_load1 99\n# TYPE node_cpu_seconds counter\nnode_cpu_seconds_total{cpu=\"0\"} 1\nmine 1\n",
        );
        let mut cpu =
            Family::new("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", MetricKind::Counter);
        cpu.push(&[("cpu", "0"), ("mode", "idle")], 5.0);
        let built_in = vec![Family::single("node_load1", "1m load average.", MetricKind::Gauge, 0.5), cpu];
        let out = run(dir.path(), built_in);
        let load: Vec<&Family> = out.iter().filter(|f| f.name == "node_load1").collect();
        assert_eq!(load.len(), 1);
        assert_eq!(load[0].samples[0].value, 0.5);
        assert!(family(&out, "node_cpu_seconds").is_none(), "its series is a built-in's");
        assert!(family(&out, "mine").is_some(), "the rest of the file is kept");
        assert_eq!(scrape_error(&out), Some(1.0));
    }

    #[test]
    fn conflicting_types_keep_the_first_and_duplicates_are_dropped() {
        let dir = textfiles(&[
            ("1.prom", "# TYPE queue_depth gauge\nqueue_depth{q=\"a\"} 1\n"),
            ("2.prom", "# TYPE queue_depth counter\nqueue_depth{q=\"b\"} 2\n"),
            ("3.prom", "# TYPE queue_depth gauge\nqueue_depth{q=\"a\"} 3\nqueue_depth{q=\"c\"} 4\n"),
        ]);
        let out = run(dir.path(), Vec::new());
        let depth = family(&out, "queue_depth").expect("kept");
        assert_eq!(depth.kind, MetricKind::Gauge);
        let values: Vec<f64> = depth.samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 4.0]);
        assert_eq!(scrape_error(&out), Some(1.0));
    }

    #[test]
    fn a_missing_directory_is_an_error_and_an_empty_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = run(&dir.path().join("absent"), Vec::new());
        assert_eq!(out.len(), 1);
        assert_eq!(scrape_error(&out), Some(1.0));
        let out = run(dir.path(), Vec::new());
        assert!(family(&out, MTIME).is_none());
        assert_eq!(scrape_error(&out), Some(0.0));
    }

    #[test]
    fn work_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let many: String = (0..MAX_FAMILIES).map(|i| format!("m{i} 1\n")).collect();
        write(dir.path(), "a.prom", &many);
        write(dir.path(), "b.prom", "one_too_many 1\n");
        let big = fs::File::create(dir.path().join("c.prom")).expect("create");
        big.set_len(MAX_FILE_BYTES + 1).expect("grow");
        let out = run(dir.path(), Vec::new());
        assert!(family(&out, "m9999").is_some());
        assert!(family(&out, "one_too_many").is_none());
        assert_eq!(mtime_files(&out).len(), 1);
        assert_eq!(scrape_error(&out), Some(1.0));

        let dir = tempfile::tempdir().expect("tempdir");
        let big = fs::File::create(dir.path().join("big.prom")).expect("create");
        big.set_len(MAX_FILE_BYTES + 1).expect("grow");
        let out = run(dir.path(), Vec::new());
        assert_eq!(out.len(), 1);
        assert_eq!(scrape_error(&out), Some(1.0));
    }
}
