//! `_harvest/runs/<run>.json`: what a completed run wrote and why each partition ended, the
//! one file a reader of the output needs. Written once a run's every page is durable; read
//! back through `crate::output::manifest`.

use serde::Serialize;

use crate::checkpoint::Position;
use crate::error::Error;
use crate::fetch::FetchStats;
use crate::output::{Layout, PartInfo};
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
        }
    }
}

/// Write `manifest` at `rel`, the secrets a run learned masked (labels and schemas are free
/// text: a token a server issued may be in them).
pub fn write(layout: &Layout, rel: &str, manifest: &Manifest, secrets: &Redactor) -> Result<(), Error> {
    let mut json = serde_json::to_value(manifest).expect("a manifest serializes");
    secrets.redact_json(&mut json);
    let json = serde_json::to_vec_pretty(&json).expect("a manifest serializes");
    layout.write(rel, &json, "manifest-write")
}
