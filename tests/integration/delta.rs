//! `format = "delta"`: the output folder is a Delta Lake table, one version a completed run,
//! read back with the `deltalake` Python package and Polars (the readers analysts use), never
//! with harvest's own code. Kills at every commit point leave the table and the checkpoint
//! agreeing: each completed run is in the table once.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{python_with, Fixture};

/// A job of `records` records in parts of 250 rows whose schema grows in the middle (a field
/// after id 300, a float after id 700).
fn job(name: &str, mode: &str) -> String {
    format!(
        "name = \"{name}\"\n[request]\nurl = \"{{base}}/offset?gain_field_after=300&float_after=700\"\n\
         [records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n\
         [output]\nformat = \"delta\"\nmode = \"{mode}\"\ninfer_sample = 100\nrows_per_file = 250\n\
         checkpoint_interval = \"10ms\"\n"
    )
}

/// Every version of the table at `root`, as the `deltalake` package and Polars read it: per
/// version its ids (sorted), row count by Polars, the commit's operation and the `txn` version
/// the job holds.
fn versions(python: &str, root: &Path, app: &str) -> Vec<Value> {
    let script = format!(
        r#"
import json, deltalake, polars as pl
path = {root:?}
latest = deltalake.DeltaTable(path).version()
out = []
for v in range(latest + 1):
    dt = deltalake.DeltaTable(path, version=v)
    ids = sorted(dt.to_pyarrow_table(columns=["id"]).column("id").to_pylist())
    out.append({{
        "version": v,
        "ids": ids,
        "polars_rows": pl.read_delta(path, version=v).height,
        "txn": dt.transaction_version({app:?}),
        "files": len(dt.file_uris()),
    }})
print(json.dumps(out))
"#,
        root = root.to_str().unwrap(),
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

/// The operation version `version`'s commit made, from its log entry.
fn operation(root: &Path, version: u64) -> String {
    let entry = std::fs::read_to_string(root.join(format!("_delta_log/{version:020}.json"))).unwrap();
    let info =
        entry.lines().map(|line| serde_json::from_str::<Value>(line).unwrap()).find(|a| a["commitInfo"].is_object());
    info.unwrap()["commitInfo"]["operation"].as_str().unwrap().to_string()
}

fn ids(version: &Value) -> Vec<u64> {
    version["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect()
}

fn harvest(job: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "-q"]);
    command.stdout(Stdio::null());
    command
}

/// Run names are whole seconds: the next run gets its own.
async fn next_second() {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_run_is_one_version_that_deltalake_and_polars_read() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(1000).await;
    for mode in ["append", "replace"] {
        let name = format!("t_{mode}");
        let first = f.run(&job(&name, mode)).await.unwrap().parts.len();
        next_second().await;
        let second_parts = f.run(&job(&name, mode)).await.unwrap().parts.len();
        let root = f.out().join(&name);
        assert!(root.join("_delta_log/00000000000000000001.json").exists());
        let versions = versions(&python, &root, &format!("harvest/{name}"));
        assert_eq!(versions.len(), 2, "{mode}: one version a run: {versions:?}");
        let once: Vec<u64> = (1..=1000).collect();
        assert_eq!(ids(&versions[0]), once, "{mode}: the first run, every id once");
        let second = match mode {
            "append" => (1..=1000).flat_map(|id| [id, id]).collect::<Vec<u64>>(),
            _ => once.clone(),
        };
        assert_eq!(ids(&versions[1]), second, "{mode}: the second run's version");
        assert_eq!(versions[0]["polars_rows"], 1000);
        assert_eq!(versions[1]["polars_rows"], second.len());
        assert_eq!(operation(&root, 0), "CREATE TABLE");
        assert_eq!(operation(&root, 1), "WRITE");
        let runs: Vec<i64> = versions.iter().map(|v| v["txn"].as_i64().unwrap()).collect();
        assert!(runs[0] < runs[1], "{mode}: the txn version grows with the run: {runs:?}");
        // The parts are the table's files.
        assert!(first >= 4, "{mode}: {first} parts");
        assert_eq!(versions[0]["files"], first);
        assert_eq!(versions[1]["files"], if mode == "append" { first + second_parts } else { second_parts });
    }
}

/// The table's columns, typed as the records' values are, read with Polars: the field that
/// appears part way through the run and the float that widens a column are there, and a
/// field that is only ever null is left out (Delta has no type for it).
#[tokio::test(flavor = "multi_thread")]
async fn the_schema_grown_within_a_run_is_the_table_s() {
    let Some(python) = python_with("polars") else { return };
    let f = Fixture::new(1000).await;
    f.run(&job("grown", "replace")).await.unwrap();
    let script = format!(
        r#"
import json, polars as pl
df = pl.read_delta({root:?})
print(json.dumps({{
  "columns": {{name: str(t) for name, t in df.schema.items()}},
  "added": df.filter(pl.col("id") == 301)["added"].to_list(),
  "amount_sum": df["amount"].sum(),
  "city": df.filter(pl.col("id") == 5)["address"].struct.field("city").to_list(),
}}))
"#,
        root = f.out().join("grown").to_str().unwrap(),
    );
    let out = Command::new(&python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let amount_sum: f64 = (1..=1000).map(|id| if id > 700 { id as f64 + 0.5 } else { id as f64 }).sum();
    assert_eq!(read["columns"]["id"], "Int64", "{read}");
    assert_eq!(read["columns"]["amount"], "Float64", "{read}");
    assert_eq!(read["amount_sum"].as_f64().unwrap(), amount_sum, "{read}");
    assert!(read["added"][0].is_string(), "{read}");
    assert!(read["city"][0].is_string(), "{read}");
}

/// kill -9 (an abort at a failpoint) before, inside and after the commit, and around it:
/// after a rerun, the table has one version per completed run (one per manifest) and its
/// newest version holds every id once (replace) or once per run (append).
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_at_any_commit_point_leaves_each_run_in_the_table_once() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(1000).await;
    let points = [
        "publish:2",
        "checkpoint-write:3",
        "manifest-write:1",
        "after-manifest:1",
        "before-commit:1",
        "delta-log-put:1",
        "delta-log-written:1",
        "after-commit:1",
    ];
    for mode in ["append", "replace"] {
        for point in points {
            let what = format!("{mode}, killed at {point}");
            let name = format!("k_{mode}_{}", point.replace([':', '-'], "_"));
            let job_file = f.dir.path().join(format!("{name}.toml"));
            std::fs::write(&job_file, job(&name, mode).replace("{base}", &f.server.url())).unwrap();
            assert!(harvest(&job_file, &f.out()).status().unwrap().success(), "{what}: the first run");
            next_second().await;
            let crashed = harvest(&job_file, &f.out()).env("HARVEST_FAILPOINT", point).output().unwrap();
            let stderr = String::from_utf8_lossy(&crashed.stderr);
            assert!(stderr.contains(&format!("failpoint {point}: aborting")), "{what}: {stderr}");
            next_second().await;
            let rerun = harvest(&job_file, &f.out()).output().unwrap();
            assert!(rerun.status.success(), "{what}: {}", String::from_utf8_lossy(&rerun.stderr));

            let root = f.out().join(&name);
            let manifests = std::fs::read_dir(root.join("_harvest/runs")).unwrap().count();
            let versions = versions(&python, &root, &format!("harvest/{name}"));
            assert_eq!(versions.len(), manifests, "{what}: one version per completed run");
            let newest = versions.last().unwrap();
            let runs = match mode {
                "append" => manifests as u64,
                _ => 1,
            };
            let expected: Vec<u64> = (1..=1000).flat_map(|id| std::iter::repeat_n(id, runs as usize)).collect();
            assert_eq!(ids(newest), expected, "{what}");
            assert!(!root.join("_harvest/checkpoint.json").exists(), "{what}: the checkpoint is gone");
        }
    }
}
