//! Files on the local disk written whole: atomic writes, create-if-absent, folder syncs, and
//! the failpoints the crash tests stop the process at.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The folder a file is in, as a path that can be opened: `job.toml`'s is `.`, not the empty
/// path its `parent()` gives. Every write that syncs or creates a folder asks this, never
/// `parent()` itself.
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// A path named inside the file `of` (a job file's `schema = "s.json"`): as written when
/// absolute or when `of` is a bare name in the current folder, else beside `of`.
pub fn beside(of: &Path, given: PathBuf) -> PathBuf {
    match of.parent() {
        Some(dir) if given.is_relative() => dir.join(given),
        _ => given,
    }
}

/// Create `path` with `bytes` only if it does not exist, whole or not at all: written under a
/// name of its own, then linked to `path` (which fails if another process got there first).
/// `Ok(false)` when it existed.
pub fn create_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{}.{:016x}.{name}.tmp", std::process::id(), rand::random::<u64>()));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    fsync_dir(dir)?;
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Write a file so that it is either absent, old, or whole: tmp file, fsync, rename, fsync
/// the folder. `point` names the moment between the fsync and the rename for [`failpoint`].
pub fn write_atomic(path: &Path, bytes: &[u8], point: &str) -> io::Result<()> {
    let dir = folder_of(path);
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    failpoint(point);
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// A test aid: with `HARVEST_FAILPOINT=<name>:<n>` in the environment, the process aborts the
/// `n`th time it reaches the point `name`, as a crash would stop it there. The points:
/// `checkpoint-write`, `manifest-write` and `state-write` (that file written whole under its
/// temporary name, not yet renamed),
/// `publish` (a part renamed to its final name, the folder not yet synced, the ledger not
/// yet told), `after-manifest` (a run's manifest durable, its checkpoint and the parts it
/// replaces not yet removed); for a Delta table `before-commit` and `after-commit` around a
/// run's commit, the points inside it in `table::failpoints`, and `unstage` (a merged run's
/// staged part removed, the others not yet). `HARVEST_FAILPOINT=<name>:<n>:stop` stops the
/// process there instead (SIGSTOP, as a frozen machine would), until it is sent SIGCONT.
pub fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static POINT: std::sync::OnceLock<Option<(String, u64, bool)>> = std::sync::OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let point = POINT.get_or_init(|| {
        let spec = std::env::var("HARVEST_FAILPOINT").ok()?;
        let mut fields = spec.split(':');
        let (name, n, stop) = (fields.next()?, fields.next()?.parse().ok()?, fields.next() == Some("stop"));
        Some((name.to_string(), n, stop))
    });
    if let Some((point, n, stop)) = point {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            if *stop {
                eprintln!("failpoint {name}:{n}: stopping");
                let _ = std::process::Command::new("kill").args(["-STOP", &std::process::id().to_string()]).status();
                eprintln!("failpoint {name}:{n}: going on");
                return;
            }
            eprintln!("failpoint {name}:{n}: aborting");
            std::process::abort();
        }
    }
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_in_the_current_folder() {
        assert_eq!(folder_of(Path::new("job.toml")), Path::new("."));
        assert_eq!(folder_of(Path::new("./job.toml")), Path::new("."));
        assert_eq!(folder_of(Path::new("../job.toml")), Path::new(".."));
        assert_eq!(folder_of(Path::new("/tmp/a b/ü.toml")), Path::new("/tmp/a b"));
        assert_eq!(folder_of(Path::new("/")), Path::new("."));
    }
}
