//! `_harvest/checkpoint.json`: where an unfinished run stands, so that the next `harvest run`
//! goes on from there instead of starting over.
//!
//! A checkpoint is written only after the data it covers is durable (the sink's `commit()`:
//! NDJSON parts fsynced at a length, Parquet parts closed and renamed), and atomically (temp
//! file, fsync, rename, fsync the folder): a crash at any moment leaves either the previous
//! checkpoint or this one. It holds the [`Position`] the sink keeps (parts published, the open part's
//! length, each partition's page frontier with the pagination state to go on from) and a
//! fingerprint of everything in the job that changes what is fetched, so that a resume never
//! mixes the records of two different jobs.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::incremental::Sent;
use crate::output::{Layout, PartInfo, PartSlice};
use crate::partition::PartitionReport;
use crate::plan::Plan;
use crate::redact::{Redactor, Unsealable};

/// The checkpoint format this build reads and writes. Version 2 keys partitions by their key
/// and records finished ones as ranges; version 1 listed them by position.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub job: String,
    /// The run id, kept by every resume: part names go on in the same sequence.
    pub run: String,
    pub started_at: String,
    pub written_at: String,
    pub fingerprint: Fingerprint,
    /// The shard whose checkpoint this is, for a sharded run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
    /// Incremental syncs: the marks the run sends; a resume sends the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
    pub position: Position,
}

// The position a checkpoint holds, as the sink keeps it: parts, partitions, ends.

/// A durable position: what a checkpoint points past.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Parts published under their final names.
    pub parts: Vec<PartInfo>,
    /// Partitions under way, by key: pages and records made durable, and where each goes on.
    pub active: BTreeMap<String, Frontier>,
    /// Partitions that ended.
    pub done: Finished,
    /// The part being written, if any, and how much of it is on disk.
    pub open: Option<OpenPart>,
    /// The number the next part gets.
    pub next_seq: u32,
}

impl Position {
    /// Records made durable, in every partition.
    pub fn records(&self) -> u64 {
        self.done.records + self.active.values().map(|f| f.records).sum::<u64>()
    }

    /// Pages made durable, in every partition.
    pub fn pages(&self) -> u64 {
        self.done.pages + self.active.values().map(|f| f.pages).sum::<u64>()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frontier {
    /// Pages written: the next page to write has this index.
    pub pages: u64,
    pub records: u64,
    /// Where the partition goes on from here (the last page's `resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<serde_json::Value>,
    /// The cursors or URLs of the pages written, hashed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<u64>,
    /// Incremental syncs: the high-water mark of the records written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
}

/// The partitions that ended: by their place in the job's order, and what they came to. A
/// million partitions make a few ranges, not a million entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// `[first, end)` ranges of partition indexes, sorted, never touching.
    pub ranges: Vec<[u64; 2]>,
    pub records: u64,
    pub pages: u64,
    /// How many ended for each reason.
    pub stops: BTreeMap<String, u64>,
    /// The manifest's per-partition list, by place in the job's order: every partition while
    /// at most [`Finished::NAMED`] have ended; past that only those that warned (the first
    /// [`Finished::NAMED`] of them), so a checkpoint stays small however many there are.
    pub reports: BTreeMap<u64, PartitionReport>,
    /// How many ended with a warning.
    #[serde(default)]
    pub warnings: u64,
    /// Values asked for and not returned (`[partitions.check]`, or a detail request's 404),
    /// every one, by their partition's place in the job's order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<u64, Vec<String>>,
    /// Incremental syncs: the high-water mark of each partition that ended by the API's own
    /// end (one cut short by `max_pages` or `max_records` keeps the mark it had).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, String>,
}

impl Finished {
    /// Partitions a checkpoint or manifest names one by one; past this, counts (and those
    /// that warned) only.
    pub const NAMED: usize = 100;

    pub fn contains(&self, index: u64) -> bool {
        let at = self.ranges.partition_point(|r| r[1] <= index);
        self.ranges.get(at).is_some_and(|r| r[0] <= index)
    }

    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|r| r[1] - r[0]).sum()
    }

    /// Every value asked for and not returned, in the job's order.
    pub fn missing(&self) -> impl Iterator<Item = &String> {
        self.missing.values().flatten()
    }

    /// Record partition `index` as ended, with its frontier.
    pub(crate) fn add(&mut self, index: u64, report: PartitionReport, frontier: Frontier) {
        if self.contains(index) {
            return;
        }
        let at = self.ranges.partition_point(|r| r[1] < index);
        let joins_before = self.ranges.get(at).is_some_and(|r| r[1] == index);
        let joins_after = |i: usize| self.ranges.get(i).is_some_and(|r| r[0] == index + 1);
        match (joins_before, joins_after(at + usize::from(joins_before))) {
            (true, true) => {
                self.ranges[at][1] = self.ranges[at + 1][1];
                self.ranges.remove(at + 1);
            }
            (true, false) => self.ranges[at][1] = index + 1,
            (false, true) => self.ranges[at][0] = index,
            (false, false) => self.ranges.insert(at, [index, index + 1]),
        }
        self.records += report.records;
        self.pages += report.pages;
        *self.stops.entry(report.stop.name().to_string()).or_default() += 1;
        if let Some(mark) = frontier.mark.filter(|_| !report.stop.cut_short()) {
            self.marks.insert(report.partition.clone(), mark);
        }
        if report.warning.is_some() {
            self.warnings += 1;
        }
        if !report.missing.is_empty() {
            self.missing.insert(index, report.missing.clone());
        }
        let ended = self.count();
        if ended == Self::NAMED as u64 + 1 {
            self.reports.retain(|_, r| r.warning.is_some());
        }
        if (ended <= Self::NAMED as u64 || report.warning.is_some()) && self.reports.len() < Self::NAMED {
            self.reports.insert(index, report);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPart {
    pub file: String,
    pub rows: u64,
    /// Bytes fsynced; a resume truncates the file to this length.
    pub len: u64,
    pub partitions: Vec<PartSlice>,
    #[serde(default, skip_serializing_if = "crate::output::is_zero")]
    pub more_slices: u64,
}

/// What the job fetches and how it writes it, each part hashed on its own so that a mismatch
/// can say what changed. Hashed from the redacted plan: a rotated token is no change, and no
/// secret leaves a trace in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    pub fn of(plan: &Plan) -> Self {
        let request = &plan.request;
        let output = &plan.output;
        let incremental = plan
            .incremental
            .as_ref()
            .map(|i| format!("{} {} {:?} {:?}", i.field.as_str(), i.param, i.start, i.lookback));
        let parts: [(&str, String); 7] = [
            ("request", format!("{:?} {} {:?} {:?}", request.method, request.url, request.params, request.body)),
            ("records", format!("{:?}", plan.records.path.to_string())),
            ("pagination", format!("{:?}", plan.pagination)),
            ("partitions", plan.partitions.describe()),
            ("format", format!("{:?} {:?}", output.format, output.compression)),
            ("rows_per_file", output.rows_per_file.to_string()),
            ("incremental", format!("{incremental:?}")),
        ];
        Fingerprint(
            parts
                .into_iter()
                .map(|(name, text)| {
                    // SipHash with fixed keys: the same job hashes the same in every process.
                    #[allow(deprecated)]
                    let mut hasher = std::hash::SipHasher::new();
                    plan.redactor.redact(&text).hash(&mut hasher);
                    (name.to_string(), format!("{:016x}", hasher.finish()))
                })
                .collect(),
        )
    }

    /// The parts that differ.
    pub fn changes(&self, other: &Fingerprint) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> = self.0.keys().chain(other.0.keys()).collect();
        names.into_iter().filter(|name| self.0.get(*name) != other.0.get(*name)).cloned().collect()
    }
}

/// The unfinished run's checkpoint, if there is one, with its sealed secrets filled again
/// from the job's current values. A file that cannot be read, or was written by a newer
/// harvest, is an error: starting over silently would duplicate records.
pub fn load(layout: &Layout, job_file: &std::path::Path, secrets: &Redactor) -> Result<Option<Checkpoint>, Error> {
    let rel = layout.checkpoint_rel();
    let path = layout.display(&rel);
    let bytes = match layout.read(&rel) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {path}"), e)),
    };
    let fresh = format!("`harvest run {} --fresh` discards the unfinished run", job_file.display());
    let corrupt = |e: &dyn std::fmt::Display| Error::Checkpoint(format!("{path} is corrupt ({e}); {fresh}"));
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(&e))?;
    let version = value.get("version").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if version != u64::from(VERSION) {
        let which = if version > u64::from(VERSION) { "a newer" } else { "an older" };
        return Err(Error::Checkpoint(format!(
            "{path} was written by {which} harvest (checkpoint version {version}, this one reads {VERSION}); \
             run that version to finish the run, or {fresh}",
        )));
    }
    secrets.unseal_json(&mut value).map_err(|why| match why {
        Unsealable::Gone(name) => Error::Checkpoint(format!(
            "{path} goes on with a request that holds ${{{name}}}, which the job no longer takes from the \
             environment; set it again to resume, or {fresh}"
        )),
        unknown @ Unsealable::UnknownForm(_) => corrupt(&unknown),
    })?;
    serde_json::from_value(value).map(Some).map_err(|e| corrupt(&e))
}

/// Write the checkpoint atomically, every secret in it sealed: the next request a server
/// built may carry a key it copied into its links, and an output folder is what people share.
/// In object storage it is written only over the version this worker read or wrote last.
pub fn save(layout: &Layout, checkpoint: &Checkpoint, secrets: &Redactor) -> Result<(), Error> {
    let mut value = serde_json::to_value(checkpoint).expect("a checkpoint serializes");
    secrets.seal_json(&mut value);
    // Compact: a checkpoint is written at every interval and stays small.
    let json = serde_json::to_vec(&value).expect("a checkpoint serializes");
    layout.write(&layout.checkpoint_rel(), &json, "checkpoint-write")?;
    layout.checkpointed();
    Ok(())
}

/// The run is complete (its manifest is durable), or discarded.
pub fn remove(layout: &Layout) -> Result<(), Error> {
    let rel = layout.checkpoint_rel();
    layout.remove(&rel).map_err(|e| Error::io(format!("removing {}", layout.display(&rel)), e))
}
