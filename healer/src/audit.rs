//! The audit log: one JSON object per line for every decision (taken, refused and why,
//! verified, escalated), appended and fsynced before the decision has any effect beyond
//! the healer, so the log never misses what was done.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

pub struct Audit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).read(true).open(path)?;
        // A crash mid-write leaves a torn last line: end it, so the next record starts
        // on a line of its own instead of being glued to the torn one.
        let len = file.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(Audit { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` with the current time and makes it durable.
    pub fn record(&self, event: &str, mut fields: Value) -> std::io::Result<()> {
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), Value::from(event));
            map.insert(
                "time".into(),
                Value::from(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
            );
        } else {
            fields = json!({"event": event, "detail": fields});
        }
        let mut line = serde_json::to_vec(&fields).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)?;
        file.sync_data()
    }

    /// Every record so far (a torn last line, from a crash mid-write, is skipped).
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Value>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(&path).expect("open");
        audit.record("refused", json!({"action_id": "a1", "reason": "cooldown"})).expect("record");
        audit.record("acted", json!({"action_id": "a2"})).expect("record");
        drop(audit);
        // A crash mid-line leaves a torn tail; reopening appends after it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"event\":"))
            .expect("tear");
        let audit = Audit::open(&path).expect("reopen");
        audit.record("verified", json!({"action_id": "a2"})).expect("record");
        let all = Audit::read_all(&path).expect("read");
        let events: Vec<&str> = all.iter().filter_map(|r| r["event"].as_str()).collect();
        assert_eq!(events, ["refused", "acted", "verified"], "the torn line is skipped, nothing after it is lost");
        assert_eq!(all[0]["reason"], "cooldown");
        assert!(all[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
