//! `_harvest/checkpoint.json`: where an unfinished run stands, so that the next `harvest run`
//! goes on from there instead of starting over.
//!
//! A checkpoint is written only after the data it covers is durable (the sink's `commit()`:
//! NDJSON parts fsynced at a length, Parquet parts closed and renamed), and atomically (temp
//! file, fsync, rename, fsync the folder): a crash at any moment leaves either the previous
//! checkpoint or this one. It holds the sink's [`Position`] (parts published, the open part's
//! length, each partition's page frontier with the pagination state to go on from) and a
//! fingerprint of everything in the job that changes what is fetched, so that a resume never
//! mixes the records of two different jobs.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::incremental::Sent;
use crate::output::Layout;
use crate::plan::Plan;
use crate::redact::Redactor;
use crate::sink::Position;

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
    secrets.unseal_json(&mut value).map_err(|name| {
        Error::Checkpoint(format!(
            "{path} goes on with a request that holds ${{{name}}}, which the job no longer takes from the \
             environment; set it again to resume, or {fresh}"
        ))
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
