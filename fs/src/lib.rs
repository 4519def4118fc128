//! # hale-fs
//!
//! The few ways Hale writes files that matter, each written once: a durable replace (a
//! state file, a checkpoint, an outbox entry must be whole after a crash, old or new,
//! never torn), and files and folders only their owner may read (secrets, data dirs).
//! `hale-core` stays free of disk I/O; this crate is where that I/O lives instead.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("state.json");
//! hale_fs::write_durable(&path, b"{}").unwrap();
//! assert_eq!(std::fs::read(&path).unwrap(), b"{}");
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replaces `path` with `bytes` so that after a crash the file holds either its old or
/// its new content, never a mix: the bytes go to a temporary file beside it
/// (`path.with_extension("tmp")`), which is fsynced, renamed over `path` (atomic on one
/// filesystem), and then the folder is fsynced so the rename itself survives a power
/// loss. Every state file, checkpoint and queued message in Hale is written this way.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_durable_with(path, |w| w.write_all(bytes))
}

/// Replaces `path` with `bytes` atomically but without waiting for the disk: after a
/// process crash the file holds its old or its new content (the rename is atomic), after
/// a power loss possibly the old one or none. For state that may fall back a little
/// (a queue reader's cursor, where falling back means sending again what the receiver
/// recognises as already stored), written too often to fsync each time.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

/// [`write_durable`] for content produced piece by piece (a WAL checkpoint of many
/// records), streamed through a buffer instead of built in memory first. If `write`
/// fails, `path` keeps its old content and the temporary file is removed.
pub fn write_durable_with(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        let f = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(parent(path))
}

/// Writes `bytes` to a fresh file at `path` that only its owner may read or write (0600),
/// for secrets. Any file already there is removed first and the new one created with
/// `create_new`: an existing file would keep its old, perhaps looser, permissions, and a
/// symlink planted at `path` would redirect the secret elsewhere; `create_new` refuses to
/// follow one. The content is fsynced: a secret lost to a crash would strand a data dir.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates `dir` and its missing parents readable by their owner only (0700): a data dir
/// holds databases, logs and secrets. A folder that already exists (made by an earlier
/// version, or by hand) is tightened to 0700 too.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The folder holding `path`; `.` for a bare file name, whose parent is the empty path.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a folder's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn a_durable_write_replaces_the_content_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.json");
        write_durable(&path, b"old").expect("first write");
        write_durable(&path, b"new content").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new content");
        assert!(!path.with_extension("tmp").exists(), "no temporary file is left behind");
    }

    #[test]
    fn a_write_that_fails_midway_leaves_the_old_content() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.json");
        write_durable(&path, b"old").expect("first write");
        // A crash halfway through the new content: part of it reached the temporary file.
        let crash = write_durable_with(&path, |w| {
            w.write_all(b"half of the ne")?;
            w.flush()?;
            Err(io::Error::other("crash"))
        });
        assert!(crash.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old", "old content, never a mix");
        // A temporary file left by a real crash does not disturb the next write.
        std::fs::write(path.with_extension("tmp"), b"torn").expect("plant");
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        write_durable(&path, b"new").expect("write after a crash");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn a_durable_write_works_with_a_bare_file_name() {
        assert_eq!(parent(Path::new("state.json")), Path::new("."));
        assert_eq!(parent(Path::new("/data/state.json")), Path::new("/data"));
    }

    #[test]
    fn private_files_are_0600_and_replace_a_looser_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, b"old").expect("plant");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("loosen");
        write_private(&path, b"secret").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_private_write_does_not_follow_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"untouched").expect("target");
        let path = dir.path().join("secrets.toml");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        write_private(&path, b"secret").expect("write");
        assert_eq!(std::fs::read(&target).expect("read"), b"untouched");
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        assert!(!std::fs::symlink_metadata(&path).expect("meta").file_type().is_symlink());
    }

    #[test]
    fn private_dirs_are_0700_new_or_existing() {
        let root = tempfile::tempdir().expect("tmp");
        let dir = root.path().join("a").join("b");
        create_private_dir(&dir).expect("create");
        assert_eq!(mode(&dir), 0o700);
        let old = root.path().join("old");
        std::fs::create_dir(&old).expect("create");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("loosen");
        create_private_dir(&old).expect("tighten");
        assert_eq!(mode(&old), 0o700);
    }
}
