//! `_harvest/runs/<run>.json`, read back: what a completed run wrote, for `status`, for a
//! shard that finds its share done, and for a job that takes its partitions from another
//! job's output ([`read`], [`latest`]). A run writes it in `crate::run::manifest`.

use serde::Deserialize;

use super::{Layout, PartInfo};
use crate::error::Error;

/// What a reader takes from a manifest: the run, when it finished, what it wrote.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Completed {
    pub run: String,
    pub finished_at: String,
    pub seconds: f64,
    pub records: u64,
    pub pages: u64,
    pub parts: Vec<PartInfo>,
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
    let latest = super::latest_complete(layout).map_err(|e| Error::io("listing the run manifests", e))?;
    let Some((run, manifests)) = latest else { return Ok(None) };
    if let [whole] = manifests.as_slice() {
        if *whole == super::manifest_of(&run) {
            return read(layout, whole).map(Some);
        }
    }
    let mut sum = Completed { run, ..Completed::default() };
    for rel in &manifests {
        let shard = read(layout, rel)?;
        sum.records += shard.records;
        sum.pages += shard.pages;
        sum.parts.extend(shard.parts);
        sum.seconds = sum.seconds.max(shard.seconds);
        if shard.finished_at > sum.finished_at {
            sum.finished_at = shard.finished_at;
        }
    }
    Ok(Some(sum))
}
