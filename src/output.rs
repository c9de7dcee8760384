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
//! A shard of a sharded run (`--shard I/N`) has files of its own beside the others':
//! `part-<run>-<I>of<N>-<seq>`, `runs/<run>-<I>of<N>.json`, `checkpoint-<I>of<N>.json`,
//! `lock-<I>of<N>` and `state-<I>of<N>.json`; it touches no other shard's files.
//!
//! Names starting with `_` are skipped by DuckDB, Spark and pyarrow globs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::shard::Shard;

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// A shard's files carry its tag (`part-<run>-2of7-...`).
    pub shard: Option<Shard>,
}

/// A part file's name taken apart: `part-<run>[-<I>of<N>]-<seq>.<ext>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartName<'a> {
    pub run: &'a str,
    pub shard: Option<Shard>,
}

impl<'a> PartName<'a> {
    pub fn parse(name: &'a str) -> Option<PartName<'a>> {
        let mut pieces = name.strip_prefix("part-")?.split('-');
        let run = pieces.next().filter(|run| !run.is_empty())?;
        let next = pieces.next()?;
        let shard = next
            .split_once("of")
            .and_then(|(index, count)| Some(Shard { index: index.parse().ok()?, count: count.parse().ok()? }));
        Some(PartName { run, shard })
    }

    /// What this part's run (and shard) is called in its manifest's name.
    pub fn unit(&self) -> String {
        unit(self.run, self.shard)
    }
}

fn unit(run: &str, shard: Option<Shard>) -> String {
    match shard {
        Some(shard) => format!("{run}-{}", shard.tag()),
        None => run.to_string(),
    }
}

impl Layout {
    /// The layout under `root`, with its folders created.
    pub fn create(root: PathBuf) -> io::Result<Self> {
        Self::create_shard(root, None)
    }

    /// The layout of one shard's files under `root` (all of them without a shard).
    pub fn create_shard(root: PathBuf, shard: Option<Shard>) -> io::Result<Self> {
        let layout = Layout { root, shard };
        std::fs::create_dir_all(layout.open_dir())?;
        std::fs::create_dir_all(layout.runs_dir())?;
        Ok(layout)
    }

    /// `<run>`, or `<run>-<I>of<N>` for a shard: what its manifest and parts are named by.
    pub fn unit(&self, run: &str) -> String {
        unit(run, self.shard)
    }

    /// `name` for a whole run, `name-<I>of<N>` for a shard (the lock, the checkpoint).
    fn own(&self, name: &str, extension: &str) -> PathBuf {
        let name = match self.shard {
            Some(shard) => format!("{name}-{}{extension}", shard.tag()),
            None => format!("{name}{extension}"),
        };
        self.harvest_dir().join(name)
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.own("checkpoint", ".json")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.own("lock", "")
    }

    /// Where this run (or shard) keeps its incremental marks.
    pub fn state_path(&self) -> PathBuf {
        self.own("state", ".json")
    }

    /// True for a part this run (or shard) wrote or may write: its own shard tag, or none.
    pub fn is_own(&self, part: &PartName) -> bool {
        part.shard == self.shard
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

    /// The manifest of this run (or shard) of `run`.
    pub fn manifest(&self, run: &str) -> PathBuf {
        self.runs_dir().join(format!("{}.json", self.unit(run)))
    }

    /// A sortable run id from the start time (`20261127T221500Z`), moved on by a second
    /// while an earlier run already used it.
    pub fn new_run_id(&self) -> io::Result<String> {
        let mut at = chrono::Utc::now();
        loop {
            let id = at.format("%Y%m%dT%H%M%SZ").to_string();
            let prefix = format!("part-{id}-");
            let taken = self.runs_dir().join(format!("{id}.json")).exists()
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
        let path = self.lock_path();
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
        let path = self.lock_path();
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

    /// Replace mode: remove the parts of every other run (and their leftovers in `open/`),
    /// but a sharded run newer than `run`, whose other shards may be writing now. Called only
    /// after `run` is complete: its manifest (every shard's) is durable. Another worker may be
    /// removing the same files: one already gone is no error.
    pub fn remove_other_runs(&self, run: &str) -> io::Result<usize> {
        let mut removed = 0;
        for dir in [self.root.clone(), self.open_dir()] {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(part) = PartName::parse(&name) else { continue };
                let other = part.run != run && (part.shard.is_none() || part.run < run);
                if other && entry.file_type()?.is_file() {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            fsync_dir(&dir)?;
        }
        Ok(removed)
    }
}

/// The runs that completed, oldest first: those with a manifest, and sharded runs with the
/// manifests of all their shards.
pub fn complete_runs(runs_dir: &Path) -> io::Result<Vec<String>> {
    let mut whole = std::collections::BTreeSet::new();
    let mut shards: std::collections::BTreeMap<(String, u32), std::collections::BTreeSet<u32>> = Default::default();
    for entry in std::fs::read_dir(runs_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(unit) = name.strip_suffix(".json") else { continue };
        match unit.split_once('-').and_then(|(run, tag)| Some((run, tag.split_once("of")?))) {
            Some((run, (index, count))) => {
                if let (Ok(index), Ok(count)) = (index.parse(), count.parse()) {
                    shards.entry((run.to_string(), count)).or_default().insert(index);
                }
            }
            None => {
                whole.insert(unit.to_string());
            }
        }
    }
    for ((run, count), done) in shards {
        if (0..count).all(|index| done.contains(&index)) {
            whole.insert(run);
        }
    }
    Ok(whole.into_iter().collect())
}

/// Create `path` with `bytes` only if it does not exist, whole or not at all: written under a
/// name of its own, then linked to `path` (which fails if another process got there first).
/// `Ok(false)` when it existed.
pub fn create_new(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.{}.tmp", std::process::id(), rand::random::<u64>(), {
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    }));
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

/// The record of a sharded run: its name, which every shard's files carry, and its shard
/// count. The first shard to start creates it; the others read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub run: String,
    pub shards: u32,
    pub created_at: String,
}

/// `_harvest/run-ids/<id>.json`.
fn record_path(layout: &Layout, run_id: &str) -> PathBuf {
    layout.harvest_dir().join("run-ids").join(format!("{run_id}.json"))
}

/// The name of the run with `run_id`: given by the first of its shards to start (a sortable
/// name, as an unsharded run's), read by the others. A worker that says another shard count
/// than the run was started with is refused.
pub fn claim_run(layout: &Layout, run_id: &str, shards: u32) -> Result<String, Error> {
    let path = record_path(layout, run_id);
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    let record = match read_record(&path)? {
        Some(record) => record,
        None => {
            // Names are claimed apart from ids, so that two runs starting in the same second
            // under different ids never share one.
            let run = loop {
                let run = layout.new_run_id().map_err(|e| io("naming the run for", e))?;
                let marker = layout.harvest_dir().join("run-ids").join(format!(".name-{run}"));
                if create_new(&marker, run_id.as_bytes()).map_err(|e| io("claiming a run name beside", e))? {
                    break run;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            };
            let record = RunRecord {
                run_id: run_id.to_string(),
                run,
                shards,
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            };
            let json = serde_json::to_vec_pretty(&record).expect("a run record serializes");
            match create_new(&path, &json).map_err(|e| io("writing", e))? {
                true => {
                    tracing::info!("run id {run_id}: run {} of {shards} shard(s) starts here", record.run);
                    record
                }
                // Another shard started the run at the same moment: its name is the run's.
                false => read_record(&path)?.ok_or_else(|| Error::Other(format!("{} vanished", path.display())))?,
            }
        }
    };
    if record.shards != shards {
        return Err(Error::Usage(format!(
            "run id {run_id} (run {}) was started as {} shard(s), and this worker says {shards}: every shard of a \
             run must give the same count; another count needs another run id",
            record.run, record.shards
        )));
    }
    Ok(record.run)
}

/// The sharded run started last in the output folder, if any.
pub fn newest_run(layout: &Layout) -> Option<RunRecord> {
    std::fs::read_dir(layout.harvest_dir().join("run-ids"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| read_record(&e.path()).ok().flatten())
        .max_by(|a, b| a.run.cmp(&b.run))
}

fn read_record(path: &Path) -> Result<Option<RunRecord>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Checkpoint(format!("{} is corrupt ({e})", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The shards of `run` whose manifests are not written yet (none when the run is complete).
pub fn unfinished(layout: &Layout, run: &str, shards: u32) -> Vec<u32> {
    (0..shards)
        .filter(|&index| {
            let shard = Shard { index, count: shards };
            let unit = format!("{run}-{}", shard.tag());
            !layout.runs_dir().join(format!("{unit}.json")).exists()
        })
        .collect()
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
