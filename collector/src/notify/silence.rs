//! Silences: matchers and a time window during which matching alerts are not notified.
//! Alertmanager's v2 shapes (`matchers[]` of `name`, `value`, `isRegex`, `isEqual`;
//! `startsAt`, `endsAt`, `createdBy`, `comment`), kept in one JSON file replaced
//! atomically on every change, so a silence outlives a restart. Matching is
//! Alertmanager's: a missing label is the empty string, a regex is anchored. Expired
//! silences stay listed for a day, then go.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use hale_core::api::{NewSilence, SilenceMatcher};
use hale_core::api::{SilenceState, SilenceStatus};
use serde::{Deserialize, Serialize};

use crate::rules::LabelSet;
use crate::rules::manager::rfc3339;

/// Expired silences stay listed this long, then go.
const KEEP_EXPIRED_MS: i64 = 24 * 3600 * 1000;

fn regex(m: &SilenceMatcher) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{})$", m.value))
}

/// As Alertmanager matches: a missing label is the empty string, a regex is anchored.
/// Whether `labels` satisfy one matcher: an absent label reads as empty, a regex is
/// anchored (Alertmanager's rules, for silences and for its API's filters alike).
pub fn matcher_hits(m: &SilenceMatcher, labels: &LabelSet) -> bool {
    let value = labels.get(&m.name).map_or("", String::as_str);
    let hit = if m.is_regex { regex(m).is_ok_and(|re| re.is_match(value)) } else { value == m.value };
    hit == m.is_equal
}

/// A silence as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    /// Times in ms since the epoch.
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub updated_at_ms: i64,
}

impl Silence {
    pub fn state(&self, now: i64) -> SilenceState {
        if now >= self.ends_at_ms {
            SilenceState::Expired
        } else if now < self.starts_at_ms {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    pub fn matches(&self, labels: &LabelSet, now: i64) -> bool {
        self.state(now) == SilenceState::Active && self.matchers.iter().all(|m| matcher_hits(m, labels))
    }

    /// As the API shows it: Alertmanager's `GettableSilence`.
    pub fn to_api(&self, now: i64) -> hale_core::api::Silence {
        hale_core::api::Silence {
            id: self.id.clone(),
            matchers: self.matchers.clone(),
            starts_at: rfc3339(self.starts_at_ms),
            ends_at: rfc3339(self.ends_at_ms),
            updated_at: rfc3339(self.updated_at_ms),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            status: SilenceStatus { state: self.state(now) },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("{0}")]
    Invalid(String),
    #[error("no silence with id {0}")]
    NotFound(String),
    #[error("saving silences to {path}: {error}")]
    Save { path: PathBuf, error: std::io::Error },
}

pub struct Silences {
    path: PathBuf,
    list: Mutex<Vec<Silence>>,
}

fn parse_time(text: &str, what: &str) -> Result<i64, SilenceError> {
    hale_core::time::parse_rfc3339(text).ok_or_else(|| {
        SilenceError::Invalid(format!("{what} {text:?} is not an RFC 3339 time like 2026-11-26T10:00:00Z"))
    })
}

impl Silences {
    /// Loads `path` (an absent file is no silences; a damaged one is set aside and reported).
    pub fn open(path: &Path) -> Silences {
        let list = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                let aside = path.with_extension("damaged");
                tracing::error!(error = %e, path = %path.display(), aside = %aside.display(), "silences file unreadable; starting without silences");
                let _ = std::fs::rename(path, &aside);
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Silences { path: path.to_path_buf(), list: Mutex::new(list) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Silence>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, list: &[Silence]) -> Result<(), SilenceError> {
        let err = |error| SilenceError::Save { path: self.path.clone(), error };
        let bytes = serde_json::to_vec_pretty(list).map_err(|e| err(std::io::Error::other(e)))?;
        hale_fs::write_durable(&self.path, &bytes).map_err(err)
    }

    /// Adds (or, with an id, replaces) a silence; returns its id.
    pub fn add(&self, new: NewSilence, now: i64) -> Result<String, SilenceError> {
        if new.matchers.is_empty() {
            return Err(SilenceError::Invalid("a silence needs at least one matcher".into()));
        }
        for m in &new.matchers {
            if m.name.is_empty() {
                return Err(SilenceError::Invalid("a matcher needs a label name".into()));
            }
            if m.is_regex && regex(m).is_err() {
                return Err(SilenceError::Invalid(format!("matcher {}: {:?} is not a valid regex", m.name, m.value)));
            }
        }
        if new.matchers.iter().all(|m| matcher_hits(m, &LabelSet::new())) {
            return Err(SilenceError::Invalid(
                "at least one matcher must not match an empty label (or the silence would match every alert)".into(),
            ));
        }
        let starts = match &new.starts_at {
            Some(t) => parse_time(t, "startsAt")?,
            None => now,
        };
        let ends = parse_time(&new.ends_at, "endsAt")?;
        if ends <= starts.max(now) {
            return Err(SilenceError::Invalid("endsAt must be after startsAt and in the future".into()));
        }
        let mut list = self.lock();
        let id = match &new.id {
            Some(id) if !list.iter().any(|s| &s.id == id) => return Err(SilenceError::NotFound(id.clone())),
            Some(id) => id.clone(),
            None => new_id(),
        };
        let silence = Silence {
            id: id.clone(),
            matchers: new.matchers,
            starts_at_ms: starts,
            ends_at_ms: ends,
            created_by: new.created_by,
            comment: new.comment,
            updated_at_ms: now,
        };
        let mut next: Vec<Silence> =
            list.iter().filter(|s| s.id != id && now - s.ends_at_ms < KEEP_EXPIRED_MS).cloned().collect();
        next.push(silence);
        self.save(&next)?;
        *list = next;
        Ok(id)
    }

    /// Ends a silence now.
    pub fn expire(&self, id: &str, now: i64) -> Result<(), SilenceError> {
        let mut list = self.lock();
        let mut next = list.clone();
        let s = next.iter_mut().find(|s| s.id == id).ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        if s.state(now) == SilenceState::Expired {
            return Ok(());
        }
        s.ends_at_ms = now;
        s.starts_at_ms = s.starts_at_ms.min(now);
        s.updated_at_ms = now;
        self.save(&next)?;
        *list = next;
        Ok(())
    }

    pub fn list(&self) -> Vec<Silence> {
        self.lock().clone()
    }

    /// Whether an active silence matches `labels`.
    pub fn silenced(&self, labels: &LabelSet, now: i64) -> bool {
        self.lock().iter().any(|s| s.matches(labels, now))
    }
}

/// A random UUID-shaped id.
fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn silence(matchers: &[&str]) -> NewSilence {
        NewSilence {
            id: None,
            matchers: matchers.iter().map(|m| SilenceMatcher::parse(m).expect("matcher")).collect(),
            starts_at: None,
            ends_at: "2100-01-01T00:00:00Z".into(),
            created_by: "test".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn matches_expires_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silences.json");
        let s = Silences::open(&path);
        let now = 1_000;
        let id = s.add(silence(&["alertname=Down", "instance=~a|b", "severity!=info"]), now).expect("add");
        assert!(s.silenced(&labels(&[("alertname", "Down"), ("instance", "a")]), now));
        assert!(s.silenced(&labels(&[("alertname", "Down"), ("instance", "b"), ("severity", "page")]), now));
        assert!(!s.silenced(&labels(&[("alertname", "Down"), ("instance", "c")]), now));
        assert!(!s.silenced(&labels(&[("alertname", "Down"), ("instance", "a"), ("severity", "info")]), now));
        assert!(!s.silenced(&labels(&[("alertname", "Down"), ("instance", "ab")]), now), "regexes are anchored");
        let reopened = Silences::open(&path);
        assert_eq!(reopened.list().len(), 1);
        assert!(reopened.silenced(&labels(&[("alertname", "Down"), ("instance", "a")]), now));
        reopened.expire(&id, now + 1).expect("expire");
        assert!(!reopened.silenced(&labels(&[("alertname", "Down"), ("instance", "a")]), now + 2));
        assert_eq!(Silences::open(&path).list()[0].state(now + 2), SilenceState::Expired);
        assert_eq!(reopened.list()[0].to_api(now + 2).status.state, SilenceState::Expired);
        assert!(matches!(reopened.expire("nope", now), Err(SilenceError::NotFound(_))));
    }

    #[test]
    fn refuses_silences_that_make_no_sense() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Silences::open(&dir.path().join("silences.json"));
        assert!(matches!(s.add(silence(&[]), 0), Err(SilenceError::Invalid(_))));
        assert!(matches!(s.add(silence(&["instance=~.*"]), 0), Err(SilenceError::Invalid(_))), "matches everything");
        assert!(matches!(s.add(silence(&["instance=~("]), 0), Err(SilenceError::Invalid(_))));
        let mut past = silence(&["alertname=Down"]);
        past.ends_at = "2000-01-01T00:00:00Z".into();
        assert!(matches!(s.add(past, 1_000_000_000_000), Err(SilenceError::Invalid(_))));
        let mut bad_time = silence(&["alertname=Down"]);
        bad_time.ends_at = "tomorrow".into();
        assert!(matches!(s.add(bad_time, 0), Err(SilenceError::Invalid(m)) if m.contains("RFC 3339")));
        assert!(SilenceMatcher::parse("nothing").is_err());
        assert_eq!(
            SilenceMatcher::parse("job!~\"api.*\"").expect("parse"),
            SilenceMatcher { name: "job".into(), value: "api.*".into(), is_regex: true, is_equal: false }
        );
    }
}
