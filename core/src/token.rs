//! A bearer token a component checks or sends, given inline or from a file that is read
//! again when it changes: tokens rotate without a restart. After a change the previous
//! token stays valid for a grace period, so the senders can be moved over one by one.
//!
//! A token file readable by group or others is warned about (it should be 0600); a file
//! that becomes empty or unreadable keeps the token in force and says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{bearer_token, constant_time_eq};

/// How long the previous token is still taken after a rotation.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// The file is looked at (a `stat`) at most this often.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("the token file {path} is empty: write the token in it (one line)")]
    Empty { path: PathBuf },
}

struct State {
    current: String,
    previous: Option<(String, Instant)>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// A token, fixed or from a file. No `Debug` of the value.
pub struct Token {
    path: Option<PathBuf>,
    grace: Duration,
    state: RwLock<State>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("path", &self.path).finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<(String, Option<SystemTime>), TokenError> {
    let text = std::fs::read_to_string(path).map_err(|error| TokenError::Read { path: path.to_path_buf(), error })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(TokenError::Empty { path: path.to_path_buf() });
    }
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((token, modified))
}

/// The warning for a secret file others may read, if it is one: what `ls -l` would
/// show, and the fix.
pub fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0)
        .then(|| format!("{} is readable by others (mode {mode:03o}): `chmod 600 {}`", path.display(), path.display()))
}

impl Token {
    /// A token that never changes.
    pub fn fixed(value: impl Into<String>) -> Arc<Token> {
        let state = State { current: value.into(), previous: None, modified: None, checked: Instant::now() };
        Arc::new(Token { path: None, grace: DEFAULT_GRACE, state: RwLock::new(state) })
    }

    /// The token in `path`, read again when the file changes; the one it replaced is taken
    /// for `grace` more.
    pub fn from_file(path: &Path, grace: Duration) -> Result<Arc<Token>, TokenError> {
        let (current, modified) = read(path)?;
        if let Some(warning) = readable_by_others(path) {
            tracing::warn!("{warning}");
        }
        let state = State { current, previous: None, modified, checked: Instant::now() };
        Ok(Arc::new(Token { path: Some(path.to_path_buf()), grace, state: RwLock::new(state) }))
    }

    /// Reads the file again if it changed (at most once a second).
    pub fn refresh(&self) {
        let Some(path) = &self.path else { return };
        {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            if state.checked.elapsed() < CHECK_EVERY {
                return;
            }
        }
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.checked = Instant::now();
        if modified.is_none() || modified == state.modified {
            return;
        }
        match read(path) {
            Ok((token, modified)) => {
                state.modified = modified;
                if token != state.current {
                    let old = std::mem::replace(&mut state.current, token);
                    state.previous = Some((old, Instant::now()));
                    tracing::info!(file = %path.display(), grace_secs = self.grace.as_secs(), "token rotated; the previous one is taken until the grace period ends");
                }
            }
            Err(e) => {
                state.modified = modified;
                tracing::warn!(error = %e, "the token file changed but does not read; keeping the token in force");
            }
        }
    }

    /// The token to send now.
    pub fn current(&self) -> String {
        self.refresh();
        self.state.read().unwrap_or_else(|p| p.into_inner()).current.clone()
    }

    /// Whether `given` is the token, or the one it replaced within the grace period;
    /// compared in constant time.
    pub fn accepts(&self, given: &str) -> bool {
        self.refresh();
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let current = constant_time_eq(given.as_bytes(), state.current.as_bytes());
        let previous = state.previous.as_ref().is_some_and(|(old, since)| {
            since.elapsed() < self.grace && constant_time_eq(given.as_bytes(), old.as_bytes())
        });
        current | previous
    }

    /// Whether an `Authorization` header's text is `Bearer <token>` (see [`Self::accepts`]).
    pub fn accepts_bearer(&self, header: Option<&str>) -> bool {
        header.and_then(bearer_token).is_some_and(|given| self.accepts(given))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_past_check() {
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
    }

    #[test]
    fn a_rotated_file_is_taken_and_the_old_token_only_within_the_grace_period() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let token = Token::from_file(&path, Duration::from_secs(2)).expect("token");
        assert!(token.accepts_bearer(Some("Bearer first-token")) && token.current() == "first-token");
        assert!(!token.accepts_bearer(Some("Bearer other")) && !token.accepts_bearer(None));
        wait_past_check();
        std::fs::write(&path, "second-token\n").expect("rotate");
        // mtime granularity: make sure the change is seen as one.
        let later = SystemTime::now() + Duration::from_secs(1);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(later)).expect("mtime");
        assert!(token.accepts("second-token"), "the new token");
        assert_eq!(token.current(), "second-token");
        assert!(token.accepts("first-token"), "the old one, within the grace period");
        std::thread::sleep(Duration::from_secs(2));
        assert!(!token.accepts("first-token"), "not after it");
        // A file emptied by mistake keeps the token in force.
        wait_past_check();
        std::fs::write(&path, "").expect("empty");
        let later = SystemTime::now() + Duration::from_secs(3);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(later)).expect("mtime");
        assert!(token.accepts("second-token"));
    }

    #[test]
    fn an_open_token_file_is_named_and_an_empty_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("token");
        std::fs::write(&path, "t").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(readable_by_others(&path).is_some_and(|w| w.contains("chmod 600")));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(readable_by_others(&path).is_none());
        std::fs::write(&path, " \n").expect("write");
        assert!(matches!(Token::from_file(&path, DEFAULT_GRACE), Err(TokenError::Empty { .. })));
        assert!(Token::fixed("x").accepts("x"));
    }
}
