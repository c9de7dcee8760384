//! `_harvest/runs/<run>.json`: what a completed run wrote and why each partition ended, the
//! one file a reader of the output needs. Written once a run's every page is durable
//! ([`write`]); read back by `status`, by a shard that finds its share done, and by a job that
//! takes its partitions from another job's output ([`read`], [`latest`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Position;
use crate::error::Error;
use crate::fetch::FetchStats;
use crate::output::{latest_complete, manifest_of, Layout, PartInfo};
use crate::partition::PartitionReport;
use crate::plan::{Compression, Format, Mode, Plan};
use crate::redact::Redactor;
use crate::report::Report;

/// A completed run, as its manifest is written.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub version: u32,
    pub job: String,
    pub run: String,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub format: Format,
    pub compression: Compression,
    pub mode: Mode,
    pub records: u64,
    pub pages: u64,
    pub parts: Vec<PartInfo>,
    /// How many partitions ended for each reason.
    pub stops: std::collections::BTreeMap<String, u64>,
    /// Each partition by name, while at most 100 ended; past that those that warned.
    pub partitions: Vec<PartitionReport>,
    /// Every value asked for and not returned (`[partitions.check]`, a detail request's 404).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    pub http: FetchStats,
    /// What the run said when it ended.
    pub report: Report,
    /// A Delta run's incremental marks (each partition's, secrets in them sealed), saved into
    /// the job's state only once its table holds the run.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest of `run`, complete at `position`, as `report` tells it.
    pub fn of(plan: &Plan, run: &str, report: &Report, position: &Position, http: &FetchStats) -> Manifest {
        Manifest {
            version: 1,
            job: plan.name.clone(),
            run: run.to_string(),
            started_at: report.started_at.clone(),
            finished_at: report.finished_at.clone(),
            seconds: report.seconds,
            format: plan.output.format,
            compression: plan.output.compression,
            mode: plan.output.mode,
            records: position.done.records,
            pages: position.done.pages,
            parts: position.parts.clone(),
            stops: position.done.stops.clone(),
            partitions: position.done.reports.values().cloned().collect(),
            missing: position.done.missing().cloned().collect(),
            http: http.clone(),
            report: report.clone(),
            marks: match (plan.output.format, &plan.incremental) {
                (Format::Delta, Some(_)) => position.done.marks.clone(),
                _ => BTreeMap::new(),
            },
        }
    }
}

/// Write `manifest` at `rel`, the secrets a run learned masked (labels and schemas are free
/// text: a token a server issued may be in them).
pub fn write(layout: &Layout, rel: &str, manifest: &Manifest, secrets: &Redactor) -> Result<(), Error> {
    let mut json = serde_json::to_value(manifest).expect("a manifest serializes");
    if let Some(marks) = json.get_mut("marks") {
        secrets.seal_json(marks);
    }
    secrets.redact_json(&mut json);
    let json = serde_json::to_vec_pretty(&json).expect("a manifest serializes");
    layout.write(rel, &json, "manifest-write")
}

/// What a reader takes from a manifest: the run, when it finished, what it wrote.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Completed {
    pub run: String,
    pub finished_at: String,
    pub seconds: f64,
    pub records: u64,
    pub pages: u64,
    pub parts: Vec<PartInfo>,
    /// What the run wrote (older manifests may not say: NDJSON or Parquet).
    #[serde(default)]
    pub format: Option<Format>,
    /// A Delta run's incremental marks, sealed (see [`Manifest::marks`]).
    #[serde(default)]
    pub marks: BTreeMap<String, String>,
}

/// The manifest at `rel`.
pub fn read(layout: &Layout, rel: &str) -> Result<Completed, Error> {
    let path = layout.display(rel);
    let bytes = layout
        .read(rel)
        .map_err(|e| Error::io(format!("reading {path}"), e))?
        .ok_or_else(|| Error::Output { path: path.clone(), problem: "vanished".into() })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Output { path, problem: format!("is not a run manifest: {e}") })
}

/// The newest complete run (run ids sort by time): its manifest, or for a sharded run its
/// shards' summed (records, pages and parts added up, the last to finish, the longest).
pub fn latest(layout: &Layout) -> Result<Option<Completed>, Error> {
    let latest = latest_complete(layout).map_err(|e| Error::io("listing the run manifests", e))?;
    let Some((run, manifests)) = latest else { return Ok(None) };
    if let [whole] = manifests.as_slice() {
        if *whole == manifest_of(&run) {
            return read(layout, whole).map(Some);
        }
    }
    let mut sum = Completed { run, ..Completed::default() };
    for rel in &manifests {
        let shard = read(layout, rel)?;
        sum.records += shard.records;
        sum.pages += shard.pages;
        sum.parts.extend(shard.parts);
        sum.format = shard.format;
        sum.marks.extend(shard.marks);
        sum.seconds = sum.seconds.max(shard.seconds);
        if shard.finished_at > sum.finished_at {
            sum.finished_at = shard.finished_at;
        }
    }
    Ok(Some(sum))
}
