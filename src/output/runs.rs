//! Which runs completed, and the records of sharded runs: the name each run id stands for.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use serde::{Deserialize, Serialize};

use super::{Layout, RUNS, RUN_IDS};
use crate::error::Error;
use crate::shard::Shard;

/// The runs that completed, oldest first: those with a manifest, and sharded runs with the
/// manifests of all their shards.
pub fn complete_runs(layout: &Layout) -> io::Result<Vec<String>> {
    let mut whole = BTreeSet::new();
    let mut shards: BTreeMap<(String, u32), BTreeSet<u32>> = BTreeMap::new();
    for entry in layout.list(RUNS)? {
        let Some(unit) = entry.name.strip_suffix(".json") else { continue };
        match unit.split_once('-') {
            Some((run, tag)) => {
                if let Some(shard) = Shard::from_tag(tag) {
                    shards.entry((run.to_string(), shard.count)).or_default().insert(shard.index);
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

/// The newest complete run (run names sort by time) and its manifests, as paths under the
/// output: the run's own, or its shards' in shard order.
pub fn latest_complete(layout: &Layout) -> io::Result<Option<(String, Vec<String>)>> {
    let Some(run) = complete_runs(layout)?.pop() else { return Ok(None) };
    let mut manifests: Vec<(u32, String)> = Vec::new();
    for entry in layout.list(RUNS)? {
        let Some(rest) = entry.name.strip_suffix(".json").and_then(|unit| unit.strip_prefix(run.as_str())) else {
            continue;
        };
        let index = match rest.strip_prefix('-') {
            None if rest.is_empty() => 0,
            Some(tag) => match Shard::from_tag(tag) {
                Some(shard) => shard.index,
                None => continue,
            },
            None => continue,
        };
        manifests.push((index, format!("{RUNS}/{}", entry.name)));
    }
    manifests.sort();
    let whole = super::manifest_of(&run);
    let manifests = match manifests.iter().any(|(_, rel)| *rel == whole) {
        true => vec![whole],
        false => manifests.into_iter().map(|(_, rel)| rel).collect(),
    };
    Ok(Some((run, manifests)))
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

/// The name of the run with `run_id`: given by the first of its shards to start (a sortable
/// name, as an unsharded run's), read by the others. A worker that says another shard count
/// than the run was started with is refused.
pub fn claim_run(layout: &Layout, run_id: &str, shards: u32) -> Result<String, Error> {
    let rel = format!("{RUN_IDS}/{run_id}.json");
    let io = |what: &str, e| Error::io(format!("{what} {}", layout.display(&rel)), e);
    let record = match read_json::<RunRecord>(layout, &rel)? {
        Some(record) => record,
        None => {
            // Names are claimed apart from ids, so that two runs starting in the same second
            // under different ids never share one.
            let run = loop {
                let run = layout.new_run_id().map_err(|e| io("naming the run for", e))?;
                let marker = format!("{RUN_IDS}/_name-{run}");
                if layout.create_new(&marker, run_id.as_bytes()).map_err(|e| io("claiming a run name beside", e))? {
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
            match layout.create_new(&rel, &json).map_err(|e| io("writing", e))? {
                true => {
                    tracing::info!("run id {run_id}: run {} of {shards} shard(s) starts here", record.run);
                    record
                }
                // Another shard started the run at the same moment: its name is the run's.
                false => read_json::<RunRecord>(layout, &rel)?
                    .ok_or_else(|| Error::Output { path: layout.display(&rel), problem: "vanished".into() })?,
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

/// The sharded run started last in the output, if any.
pub fn newest_run(layout: &Layout) -> Option<RunRecord> {
    layout
        .list(RUN_IDS)
        .ok()?
        .into_iter()
        .filter(|e| e.name.ends_with(".json"))
        .filter_map(|e| read_json::<RunRecord>(layout, &format!("{RUN_IDS}/{}", e.name)).ok().flatten())
        .max_by(|a, b| a.run.cmp(&b.run))
}

/// A JSON file of the output, if it is there; one that does not parse is corrupt.
pub fn read_json<T: serde::de::DeserializeOwned>(layout: &Layout, rel: &str) -> Result<Option<T>, Error> {
    match layout.store.get(rel) {
        Ok(Some((bytes, _))) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Checkpoint(format!("{} is corrupt ({e})", layout.display(rel)))),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", layout.display(rel)), e)),
    }
}

/// The shards of `run` whose manifests are not written yet (none when the run is complete).
pub fn unfinished(layout: &Layout, run: &str, shards: u32) -> Result<Vec<u32>, Error> {
    let written: BTreeSet<String> = layout
        .list(RUNS)
        .map_err(|e| Error::io(format!("listing {}", layout.display(RUNS)), e))?
        .into_iter()
        .map(|e| e.name)
        .collect();
    Ok((0..shards)
        .filter(|&index| !written.contains(&format!("{run}-{}.json", Shard { index, count: shards }.tag())))
        .collect())
}
