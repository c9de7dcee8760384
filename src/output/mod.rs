//! The output folder: its layout (where parts, manifests and the checkpoint go), the parts
//! published, run ids, the lock, and atomic writes with their failpoints.
//!
//! ```text
//! <dir>/<name>/part-<run>-<seq>.ndjson     published parts (data only)
//! <dir>/<name>/_harvest/open/              parts being written
//! <dir>/<name>/_harvest/runs/<run>.json    one manifest per completed run
//! <dir>/<name>/_harvest/staged/            a merge run's parts, until the merge commit
//! <dir>/<name>/_harvest/lock               held by the running process
//! ```
//!
//! A shard of a sharded run (`--shard I/N`) has files of its own beside the others':
//! `part-<run>-<I>of<N>-<seq>`, `runs/<run>-<I>of<N>.json`, `checkpoint-<I>of<N>.json`,
//! `lock-<I>of<N>` and `state-<I>of<N>.json`; it touches no other shard's files.
//!
//! Names starting with `_` are skipped by DuckDB, Spark and pyarrow globs.

mod lease;
mod runs;

pub use runs::{claim_run, complete_runs, latest_complete, newest_run, read_json, unfinished, RunRecord};

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::shard::Shard;
use crate::store::{Entry, Put, PutError, Store, Version};

pub use crate::store::fs::{create_new, failpoint, fsync_dir, write_atomic};
pub(crate) use lease::lost_because as lease_lost;
pub use lease::Lease;

/// The job's output: its store (the output folder, or a prefix in object storage), the names
/// of its files, and the local folder where parts are written before they are published.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Where parts are written before they are published: the output folder itself on the
    /// local filesystem; a staging folder of this process's own for object storage.
    pub root: PathBuf,
    /// A shard's files carry its tag (`part-<run>-2of7-...`).
    pub shard: Option<Shard>,
    pub store: Store,
    /// The version of each file this process read or wrote last: object storage writes the
    /// checkpoint, state and manifests only over the version this worker knows.
    versions: Arc<Mutex<HashMap<String, Version>>>,
    /// The lease this process holds, in object storage: renewed before each part is published.
    held: Arc<Mutex<Option<lease::HeldLease>>>,
    /// Parts published since the last checkpoint was written: no checkpoint lists them yet.
    unsaved: Arc<Mutex<Vec<String>>>,
    /// The folder parts are published to: the root, or [`STAGED`] for a merge run.
    parts_dir: &'static str,
}

/// `_harvest`, where everything but data goes.
pub const HARVEST: &str = "_harvest";
/// `_harvest/runs`: one manifest per completed run (or shard).
pub const RUNS: &str = "_harvest/runs";
/// `_harvest/run-ids`: the run each sharded run id stands for.
pub const RUN_IDS: &str = "_harvest/run-ids";
/// `_harvest/staged`: a merge run's parts, out of the table until its merge commit.
pub const STAGED: &str = "_harvest/staged";

/// The file name of a part at `rel` (`_harvest/staged/part-...` is `part-...`).
pub fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// A part file's name taken apart: `part-<run>[-<I>of<N>]-<seq>.<ext>`, `<run>` a run id
/// (`20261127T221500Z`). Other `part-` files are not harvest's (delta-rs names the files
/// `optimize` writes `part-00001-<uuid>-c000.zstd.parquet`), and harvest never removes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartName<'a> {
    pub run: &'a str,
    pub shard: Option<Shard>,
}

impl<'a> PartName<'a> {
    /// Parse a part's name, or its path from the root (`_harvest/staged/part-...`).
    pub fn parse(name: &'a str) -> Option<PartName<'a>> {
        let mut pieces = file_name(name).strip_prefix("part-")?.split('-');
        let run = pieces.next().filter(|run| is_run_id(run))?;
        let shard = Shard::from_tag(pieces.next()?);
        Some(PartName { run, shard })
    }

    /// What this part's run (and shard) is called in its manifest's name.
    pub fn unit(&self) -> String {
        unit(self.run, self.shard)
    }
}

/// `20261127T221500Z`: what [`Layout::new_run_id`] names runs.
fn is_run_id(run: &str) -> bool {
    let b = run.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
}

fn unit(run: &str, shard: Option<Shard>) -> String {
    match shard {
        Some(shard) => format!("{run}-{}", shard.tag()),
        None => run.to_string(),
    }
}

/// `_harvest/runs/<unit>.json`.
pub fn manifest_of(unit: &str) -> String {
    format!("{RUNS}/{unit}.json")
}

impl Layout {
    /// The layout of the output folder `root`, with its folders created.
    pub fn create(root: PathBuf) -> io::Result<Self> {
        Self::create_shard(root, None)
    }

    /// The layout of one shard's files in the output folder `root` (all of them without a
    /// shard).
    pub fn create_shard(root: PathBuf, shard: Option<Shard>) -> io::Result<Self> {
        let layout = Layout {
            store: Store::Local(root.clone()),
            root,
            shard,
            versions: Default::default(),
            held: Default::default(),
            unsaved: Default::default(),
            parts_dir: "",
        };
        std::fs::create_dir_all(layout.open_dir())?;
        std::fs::create_dir_all(layout.root.join(RUNS))?;
        Ok(layout)
    }

    /// The layout of `store` as it stands, for reading it: nothing created.
    pub fn of(store: Store, root: PathBuf, shard: Option<Shard>) -> Self {
        Layout {
            store,
            root,
            shard,
            versions: Default::default(),
            held: Default::default(),
            unsaved: Default::default(),
            parts_dir: "",
        }
    }

    /// A layout whose parts are staged in a folder of their own under `staging` and published
    /// to `store`.
    pub fn staged(store: Store, staging: PathBuf, shard: Option<Shard>) -> io::Result<Self> {
        let layout = Layout {
            store,
            root: staging,
            shard,
            versions: Default::default(),
            held: Default::default(),
            unsaved: Default::default(),
            parts_dir: "",
        };
        std::fs::create_dir_all(layout.open_dir())?;
        Ok(layout)
    }

    /// The layout of `plan`'s output for a run: its folder (created), or its prefix in object
    /// storage with a staging folder of this process's own for the parts being written.
    pub fn for_plan(plan: &crate::plan::Plan) -> Result<Layout, Error> {
        let shard = plan.shard.as_ref().map(|s| s.shard);
        let root = plan.output_root();
        let layout = match plan.in_object_storage() {
            false => Layout::create_shard(root.clone(), shard)
                .map_err(|e| Error::io(format!("creating {}", root.display()), e)),
            true => {
                let store = Self::bucket(&plan.output.dir, &plan.name, &plan.output.store)?;
                let staging = std::env::temp_dir().join("harvest-staging").join(format!(
                    "{}-{}-{:08x}",
                    plan.name,
                    std::process::id(),
                    rand::random::<u32>()
                ));
                Layout::staged(store, staging.clone(), shard)
                    .map_err(|e| Error::io(format!("creating {}", staging.display()), e))
            }
        }?;
        let layout = layout.staging_parts(plan);
        if layout.store.is_local() && !layout.parts_dir.is_empty() {
            let staged = layout.root.join(layout.parts_dir);
            std::fs::create_dir_all(&staged).map_err(|e| Error::io(format!("creating {}", staged.display()), e))?;
        }
        Ok(layout)
    }

    /// The layout of `plan`'s output as it stands, to read it (`status`, `finalize`).
    pub fn for_reading(plan: &crate::plan::Plan) -> Result<Layout, Error> {
        Ok(Layout::for_reading_at(&plan.output.dir, &plan.name, &plan.output.store)?.staging_parts(plan))
    }

    /// A merge run's parts go to [`STAGED`], out of the table, until its merge commit.
    fn staging_parts(mut self, plan: &crate::plan::Plan) -> Layout {
        if plan.output.mode == crate::plan::Mode::Merge {
            self.parts_dir = STAGED;
        }
        self
    }

    /// The local folder parts are published to.
    pub fn parts_root(&self) -> PathBuf {
        self.root.join(self.parts_dir)
    }

    /// Where the part named `name` is published, from the root.
    pub fn part_rel(&self, name: &str) -> String {
        match self.parts_dir {
            "" => name.to_string(),
            dir => format!("{dir}/{name}"),
        }
    }

    /// The layout of job `name`'s output under `dir`, to read it.
    pub fn for_reading_at(dir: &Path, name: &str, store: &crate::plan::StorePlan) -> Result<Layout, Error> {
        let store = match crate::store::object::is_url(&dir.to_string_lossy()) {
            true => Self::bucket(dir, name, store)?,
            false => Store::Local(dir.join(name)),
        };
        let root = match &store {
            Store::Local(root) => root.clone(),
            Store::Object(_) => std::env::temp_dir(),
        };
        Ok(Layout::of(store, root, None))
    }

    fn bucket(dir: &Path, name: &str, store: &crate::plan::StorePlan) -> Result<Store, Error> {
        let options = crate::store::object::Options { endpoint: store.endpoint.clone(), allow_http: store.allow_http };
        crate::store::object::Bucket::open(&dir.to_string_lossy(), name, &options)
            .map(Store::Object)
            .map_err(Error::Usage)
    }

    /// How messages name the file at `rel` (or the root, for "").
    pub fn display(&self, rel: &str) -> String {
        self.store.display(rel)
    }

    /// `<run>`, or `<run>-<I>of<N>` for a shard: what its manifest and parts are named by.
    pub fn unit(&self, run: &str) -> String {
        unit(run, self.shard)
    }

    /// `name` for a whole run, `name-<I>of<N>` for a shard (the lock, the checkpoint).
    fn own(&self, name: &str, extension: &str) -> String {
        match self.shard {
            Some(shard) => format!("{HARVEST}/{name}-{}{extension}", shard.tag()),
            None => format!("{HARVEST}/{name}{extension}"),
        }
    }

    pub fn checkpoint_rel(&self) -> String {
        self.own("checkpoint", ".json")
    }

    pub fn lock_rel(&self) -> String {
        self.own("lock", "")
    }

    /// Where this run (or shard) keeps its incremental marks.
    pub fn state_rel(&self) -> String {
        self.own("state", ".json")
    }

    /// True for a part this run (or shard) wrote or may write: its own shard tag, or none.
    pub fn is_own(&self, part: &PartName) -> bool {
        part.shard == self.shard
    }

    /// Parts being written, on the local disk.
    pub fn open_dir(&self) -> PathBuf {
        self.root.join(HARVEST).join("open")
    }

    /// The manifest of this run (or shard) of `run`.
    pub fn manifest(&self, run: &str) -> String {
        manifest_of(&self.unit(run))
    }

    /// The file at `rel`, if there is one; its version is remembered for [`Layout::write`].
    pub fn read(&self, rel: &str) -> io::Result<Option<Vec<u8>>> {
        let got = self.store.get(rel)?;
        let mut versions = self.versions.lock().expect("versions lock");
        match got {
            Some((bytes, version)) => {
                versions.insert(rel.to_string(), version);
                Ok(Some(bytes))
            }
            None => {
                versions.remove(rel);
                Ok(None)
            }
        }
    }

    /// Write this run's file at `rel` whole. In object storage only over the version this
    /// worker read or wrote last (or only where none is, if it knows of none): a worker whose
    /// lease was taken over cannot overwrite what its successor wrote, and stops (exit 3).
    pub fn write(&self, rel: &str, bytes: &[u8], point: &str) -> Result<(), Error> {
        let known = self.versions.lock().expect("versions lock").get(rel).cloned();
        let mode = match (&self.store, known) {
            (Store::Local(_), _) => Put::Overwrite,
            (Store::Object(_), Some(version)) => Put::Update(version),
            (Store::Object(_), None) => Put::Create,
        };
        match self.store.put(rel, bytes, mode, point) {
            Ok(version) => {
                self.versions.lock().expect("versions lock").insert(rel.to_string(), version);
                Ok(())
            }
            Err(PutError::Io(e)) => Err(Error::io(format!("writing {}", self.display(rel)), e)),
            Err(refused) => {
                Err(lease::lost_because(self, &format!("{} was not written: {refused}", self.display(rel))))
            }
        }
    }

    /// Create the file at `rel` only if there is none; `false` when there was.
    pub fn create_new(&self, rel: &str, bytes: &[u8]) -> io::Result<bool> {
        match self.store.put(rel, bytes, Put::Create, "") {
            Ok(version) => {
                self.versions.lock().expect("versions lock").insert(rel.to_string(), version);
                Ok(true)
            }
            Err(PutError::Exists) => Ok(false),
            Err(PutError::Changed) => Ok(false),
            Err(PutError::Io(e)) => Err(e),
        }
    }

    pub fn exists(&self, rel: &str) -> io::Result<bool> {
        self.store.exists(rel)
    }

    /// Remove the file at `rel` (one already gone is no error).
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        self.versions.lock().expect("versions lock").remove(rel);
        self.store.delete(rel)
    }

    /// The files in the folder `dir` of the store.
    pub fn list(&self, dir: &str) -> io::Result<Vec<Entry>> {
        self.store.list(dir)
    }

    /// Publish the complete part at `local` under `name`. In object storage the lease is
    /// renewed first: a worker that lost it publishes nothing more.
    pub fn publish(&self, local: &Path, name: &str) -> Result<(), Error> {
        lease::confirm(self)?;
        self.store.publish(local, name).map_err(|e| Error::io(format!("publishing {}", self.display(name)), e))?;
        self.unsaved.lock().expect("unsaved lock").push(name.to_string());
        Ok(())
    }

    /// In object storage, renew the lease before a step only its holder may take (publishing a
    /// part, committing to a table): a worker that lost it stops.
    pub fn confirm_lease(&self) -> Result<(), Error> {
        lease::confirm(self)
    }

    /// A checkpoint was written: it lists every part published so far.
    pub fn checkpointed(&self) {
        self.unsaved.lock().expect("unsaved lock").clear();
    }

    /// A worker that lost its lease removes the parts it published after its last checkpoint:
    /// the worker that took over went on from that checkpoint (or an earlier one), so no
    /// manifest will list them, and their names are this worker's alone (a resume numbers its
    /// parts far past the checkpoint's).
    pub fn discard_unsaved(&self) {
        let unsaved = std::mem::take(&mut *self.unsaved.lock().expect("unsaved lock"));
        for name in unsaved {
            match self.store.delete(&name) {
                Ok(()) => tracing::info!("removed {}: published after the last checkpoint", self.display(&name)),
                Err(e) => tracing::warn!("could not remove {}: {e}", self.display(&name)),
            }
        }
    }

    /// Part files published, and the local parts being written: (where each is published
    /// from the root, in `open/`).
    pub fn parts(&self) -> io::Result<Vec<(String, bool)>> {
        let mut parts: Vec<(String, bool)> = self
            .list(self.parts_dir)?
            .into_iter()
            .filter(|e| e.name.starts_with("part-"))
            .map(|e| (self.part_rel(&e.name), false))
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.open_dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("part-") {
                    parts.push((self.part_rel(&name), true));
                }
            }
        }
        Ok(parts)
    }

    /// Remove a part at `rel`: published (from the store) or being written (from `open/`).
    pub fn remove_part(&self, rel: &str, open: bool) -> io::Result<()> {
        match open {
            false => self.store.delete(rel),
            true => match std::fs::remove_file(self.open_dir().join(file_name(rel))) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// A sortable run id from the start time (`20261127T221500Z`), moved on by a second
    /// while an earlier run already used it, and past every completed run's (a clock set back
    /// names no run before one it already completed: a table's run versions only grow).
    pub fn new_run_id(&self) -> io::Result<String> {
        const FORM: &str = "%Y%m%dT%H%M%SZ";
        let mut at = chrono::Utc::now();
        let newest = complete_runs(self)?.pop();
        if let Some(newest) = newest.and_then(|run| chrono::NaiveDateTime::parse_from_str(&run, FORM).ok()) {
            at = at.max(newest.and_utc() + chrono::Duration::seconds(1));
        }
        let parts = self.parts()?;
        loop {
            let id = at.format(FORM).to_string();
            let prefix = format!("part-{id}-");
            let taken =
                self.exists(&manifest_of(&id))? || parts.iter().any(|(name, _)| file_name(name).starts_with(&prefix));
            if !taken {
                return Ok(id);
            }
            at += chrono::Duration::seconds(1);
        }
    }

    /// Take the job's lock: on the local filesystem an OS lock on `_harvest/lock`, released by
    /// the OS when the process dies; in object storage a lease (see [`Lease`]). `Err(holder)`
    /// when another process holds it, with what it wrote there: its PID, host and start time.
    pub fn lock(&self, lease_ttl: std::time::Duration) -> Result<Result<Lock, HeldBy>, Error> {
        if let Store::Object(_) = &self.store {
            return Ok(Lease::take(self, lease_ttl)?.map(|lease| Lock::Lease(Box::new(lease))));
        }
        let path = self.root.join(self.lock_rel());
        let io = |e| Error::io(format!("taking the job lock {}", path.display()), e);
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {
                let mut file = file;
                file.set_len(0).map_err(io)?;
                writeln!(file, "{}", holder_words()).map_err(io)?;
                file.sync_data().map_err(io)?;
                Ok(Ok(Lock::File(file)))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                Ok(Err(HeldBy(holder.trim().to_string())))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Who holds the job's lock now (its PID and start time), if anyone; looked at with a
    /// shared lock taken and let go at once, so a run is not kept from starting. In object
    /// storage: the lease's holder while it is younger than `lease_ttl`.
    pub fn holder(&self, lease_ttl: std::time::Duration) -> Result<Option<String>, Error> {
        if let Store::Object(_) = &self.store {
            return Lease::holder(self, lease_ttl);
        }
        let path = self.root.join(self.lock_rel());
        let io = |e| Error::io(format!("reading the job lock {}", path.display()), e);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(std::fs::TryLockError::WouldBlock) => {
                Ok(Some(std::fs::read_to_string(&path).map_err(io)?.trim().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Replace mode: remove the parts of every other run (and their leftovers in `open/`),
    /// but a sharded run newer than `run`, whose other shards may be writing now. Called only
    /// after `run` is complete: its manifest (every shard's) is durable. Another worker may be
    /// removing the same files: one already gone is no error.
    pub fn remove_other_runs(&self, run: &str) -> io::Result<usize> {
        let mut removed = 0;
        for (name, open) in self.parts()? {
            let Some(part) = PartName::parse(&name) else { continue };
            if part.run != run && (part.shard.is_none() || part.run < run) {
                self.remove_part(&name, open)?;
                removed += 1;
            }
        }
        if self.store.is_local() {
            fsync_dir(&self.parts_root())?;
            fsync_dir(&self.open_dir())?;
        }
        Ok(removed)
    }
}

/// `pid 4242 on host-a started 2026-11-30T02:00:00Z`: what a lock or lease says of its holder.
pub fn holder_words() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "?".into());
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("pid {} on {host} started {started}", std::process::id())
}

/// A published part file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// The part's slices, of its first [`PartSlice::PARTITIONS`] partitions; others' counted.
    pub partitions: Vec<PartSlice>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_slices: u64,
    /// Parquet: the part's schema, as schema files write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// A run of consecutive records of one partition inside a part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSlice {
    pub partition: String,
    /// Row range in the part, `[first, end)`.
    pub rows: [u64; 2],
    /// The same records' range in the partition's own sequence.
    pub records: [u64; 2],
    /// Pages `[first, last]` these records came from.
    pub pages: [u64; 2],
}

impl PartSlice {
    /// Partitions a part lists the slices of; the slices of any more are counted
    /// (`more_slices`), so that a part holding a million single-record partitions costs
    /// neither memory nor checkpoint size, while a part of a few partitions lists them all.
    pub const PARTITIONS: usize = 100;
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The job's lock, held until dropped (or the process dies): an OS file lock, or a lease in
/// object storage, renewed while it lives.
#[derive(Debug)]
pub enum Lock {
    File(File),
    Lease(Box<Lease>),
}

/// Why the job's lock could not be taken: who holds it, in words (its PID and start time,
/// or the worker holding the lease and how fresh it is).
#[derive(Debug)]
pub struct HeldBy(pub String);

impl Lock {
    /// Object storage: the lease was lost (taken over by another worker while this one could
    /// not renew it); the run must stop.
    pub fn lost(&self) -> Option<tokio_util::sync::CancellationToken> {
        match self {
            Lock::File(_) => None,
            Lock::Lease(lease) => Some(lease.lost()),
        }
    }
}
