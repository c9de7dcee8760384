//! The output folder: its layout (where parts, manifests and the checkpoint go), run ids, the
//! lock, and atomic writes with their failpoints. What a manifest says is `crate::run`'s.
//!
//! ```text
//! <dir>/<name>/part-<run>-<seq>.ndjson     published parts (data only)
//! <dir>/<name>/_harvest/open/              parts being written
//! <dir>/<name>/_harvest/runs/<run>.json    one manifest per completed run
//! <dir>/<name>/_harvest/lock               held by the running process
//! ```
//!
//! Names starting with `_` are skipped by DuckDB, Spark and pyarrow globs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `root`, with its folders created.
    pub fn create(root: PathBuf) -> io::Result<Self> {
        let layout = Layout { root };
        std::fs::create_dir_all(layout.open_dir())?;
        std::fs::create_dir_all(layout.runs_dir())?;
        Ok(layout)
    }

    pub fn harvest_dir(&self) -> PathBuf {
        self.root.join("_harvest")
    }

    pub fn open_dir(&self) -> PathBuf {
        self.harvest_dir().join("open")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.harvest_dir().join("runs")
    }

    pub fn manifest(&self, run: &str) -> PathBuf {
        self.runs_dir().join(format!("{run}.json"))
    }

    /// A sortable run id from the start time (`20261127T221500Z`), moved on by a second
    /// while an earlier run already used it.
    pub fn new_run_id(&self) -> io::Result<String> {
        let mut at = chrono::Utc::now();
        loop {
            let id = at.format("%Y%m%dT%H%M%SZ").to_string();
            let prefix = format!("part-{id}-");
            let taken = self.manifest(&id).exists()
                || [&self.root, &self.open_dir()].into_iter().any(|dir| {
                    std::fs::read_dir(dir)
                        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&prefix)))
                        .unwrap_or(false)
                });
            if !taken {
                return Ok(id);
            }
            at += chrono::Duration::seconds(1);
        }
    }

    /// Take the job's lock (an OS lock on `_harvest/lock`, released by the OS when the
    /// process dies); `Err(holder)` when another process holds it, with what it wrote there:
    /// its PID and start time.
    pub fn lock(&self) -> io::Result<Result<Lock, String>> {
        let path = self.harvest_dir().join("lock");
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                let mut file = file;
                file.set_len(0)?;
                let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                writeln!(file, "pid {} started {started}", std::process::id())?;
                file.sync_data()?;
                Ok(Ok(Lock { _file: file, path }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Ok(Err(holder.trim().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Who holds the job's lock now (its PID and start time), if anyone; looked at with a
    /// shared lock taken and let go at once, so a run is not kept from starting.
    pub fn holder(&self) -> io::Result<Option<String>> {
        let path = self.harvest_dir().join("lock");
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(std::fs::TryLockError::WouldBlock) => Ok(Some(std::fs::read_to_string(&path)?.trim().to_string())),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Replace mode: remove the parts of every other run (and their leftovers in `open/`).
    /// Called only after this run's manifest is durable.
    pub fn remove_other_runs(&self, run: &str) -> io::Result<usize> {
        let keep = format!("part-{run}-");
        let mut removed = 0;
        for dir in [self.root.clone(), self.open_dir()] {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("part-") && !name.starts_with(&keep) && entry.file_type()?.is_file() {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
            fsync_dir(&dir)?;
        }
        Ok(removed)
    }
}

/// The job's lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Write a file so that it is either absent, old, or whole: tmp file, fsync, rename, fsync
/// the folder. `point` names the moment between the fsync and the rename for [`failpoint`].
pub fn write_atomic(path: &Path, bytes: &[u8], point: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
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
/// replaces not yet removed).
pub fn failpoint(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static POINT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let point = POINT.get_or_init(|| {
        let spec = std::env::var("HARVEST_FAILPOINT").ok()?;
        let (name, n) = spec.rsplit_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    });
    if let Some((point, n)) = point {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("failpoint {name}:{n}: aborting");
            std::process::abort();
        }
    }
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
