//! `format = "delta"`: the output folder is a Delta Lake table, one version a completed run,
//! read back with the `deltalake` Python package and Polars (the readers analysts use), never
//! with harvest's own code. Kills at every commit point leave the table and the checkpoint
//! agreeing: each completed run is in the table once.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

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

/// The last line of the Python scripts here: out at once, past the interpreter's teardown, in
/// which the `deltalake` package's runtime threads were once seen to abort the process
/// ("terminate called without an active exception") after the script had done its work.
pub const EXIT: &str = "import os; os._exit(0)";

/// Every version of the table at `root`, as the `deltalake` package and Polars read it: per
/// version its ids (sorted), row count by Polars, the `txn` version the job holds and its
/// files; for the newest, its rows' `id` and `updated_at` in order of `id`.
fn versions(python: &str, root: &Path, app: &str) -> Vec<Value> {
    versions_at(python, root.to_str().unwrap(), app, "None")
}

/// [`versions`] of the table at `uri`, read with `options` (a Python dict of storage options).
pub fn versions_at(python: &str, uri: &str, app: &str, options: &str) -> Vec<Value> {
    let script = format!(
        r#"
import json, deltalake, polars as pl
path, options = {uri:?}, {options}
latest = deltalake.DeltaTable(path, storage_options=options).version()
out = []
for v in range(latest + 1):
    dt = deltalake.DeltaTable(path, version=v, storage_options=options)
    ids = sorted(dt.to_pyarrow_table(columns=["id"]).column("id").to_pylist())
    out.append({{
        "version": v,
        "ids": ids,
        "polars_rows": pl.read_delta(path, version=v, storage_options=options).height,
        "txn": dt.transaction_version({app:?}),
        "files": len(dt.file_uris()),
        "uris": dt.file_uris(),
    }})
table = deltalake.DeltaTable(path, storage_options=options)
rows = table.to_pyarrow_table(columns=["id", "updated_at"]).sort_by("id").to_pylist()
out[-1]["rows"] = [[r["id"], r["updated_at"]] for r in rows]
print(json.dumps(out), flush=True)
{EXIT}
"#,
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

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
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
pub async fn next_second() {
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
}}), flush=True)
{EXIT}
"#,
        root = f.out().join("grown").to_str().unwrap(),
        EXIT = EXIT,
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

/// A crash to recover from: consecutive attempts at one run abort at `points` (each attempt
/// resuming the one before), in the table's first run (`first`, the commit that creates it) or
/// in the run after it.
pub struct Kill {
    pub points: &'static [&'static str],
    pub first: bool,
    pub modes: &'static [&'static str],
}

pub const EVERY: &[&str] = &["append", "replace", "merge"];
pub const FILES: &[&str] = &["append", "replace"];
pub const MERGE: &[&str] = &["merge"];

pub const fn kill(points: &'static [&'static str], modes: &'static [&'static str]) -> Kill {
    Kill { points, first: false, modes }
}

pub const fn first(points: &'static [&'static str], modes: &'static [&'static str]) -> Kill {
    Kill { points, first: true, modes }
}

/// Every moment of a Delta run a crash can stop: writing parts and checkpoints, the manifest,
/// a part written again in the table's types, delta-rs writing a merge's data files and the
/// log entry, removing a merged run's staged parts; in the run that creates the table; and
/// once more while the next run finishes a crashed one. 20 in append and replace, 21 in merge.
const KILLS: &[Kill] = &[
    kill(&["publish:1"], EVERY),
    kill(&["publish:4"], EVERY),
    kill(&["checkpoint-write:1"], EVERY),
    kill(&["checkpoint-write:3"], EVERY),
    kill(&["manifest-write:1"], EVERY),
    kill(&["after-manifest:1"], EVERY),
    kill(&["before-commit:1"], EVERY),
    kill(&["publish:6"], FILES),
    kill(&["delta-data-put:1"], MERGE),
    kill(&["delta-log-put:1"], EVERY),
    kill(&["delta-log-written:1"], EVERY),
    kill(&["unstage:1"], MERGE),
    kill(&["after-commit:1"], EVERY),
    first(&["publish:2"], EVERY),
    first(&["after-manifest:1"], EVERY),
    first(&["publish:5"], FILES),
    first(&["delta-data-put:1"], MERGE),
    first(&["delta-log-put:1"], EVERY),
    first(&["delta-log-written:1"], EVERY),
    first(&["after-commit:1"], EVERY),
    kill(&["publish:2", "checkpoint-write:2"], EVERY),
    kill(&["before-commit:1", "delta-log-put:1"], EVERY),
    kill(&["after-manifest:1", "delta-log-written:1"], EVERY),
];

/// kill -9 (an abort at a failpoint) at every point of [`KILLS`], then a run to the end: the
/// table has one version per completed run (one per manifest); its newest version holds every
/// id once (replace), once per run (append), or once with the mock's current values (merge:
/// rows touched before the crashed run); no staged part and no checkpoint is left; and after
/// `vacuum --retain 0s` the table's folder holds exactly the newest version's files.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_at_any_commit_point_leaves_each_run_in_the_table_once() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(1000).await;
    let client = reqwest::Client::new();
    let mut count = 0;
    for mode in EVERY {
        for (n, kill) in KILLS.iter().enumerate().filter(|(_, kill)| kill.modes.contains(mode)) {
            count += 1;
            let when = if kill.first { "its first run" } else { "a later run" };
            let what = format!("{mode}, killed in {when} at {}", kill.points.join(" then "));
            let name = format!("k_{mode}_{n}");
            let job_file = f.dir.path().join(format!("{name}.toml"));
            let text = match *mode {
                "merge" => job(&name, mode) + "primary_key = [\"id\"]\n",
                _ => job(&name, mode),
            };
            std::fs::write(&job_file, text.replace("{base}", &f.server.url())).unwrap();
            if !kill.first {
                assert!(harvest(&job_file, &f.out()).status().unwrap().success(), "{what}: the first run");
                if *mode == "merge" {
                    // Rows that change: the crashed run's merge rewrites what holds them.
                    let touch = format!("{}/_admin/touch?ids={},{}", f.server.url(), 10 + n, 500 + n);
                    assert!(client.post(touch).send().await.unwrap().status().is_success());
                }
            }
            for point in kill.points {
                let crashed = harvest(&job_file, &f.out()).env("HARVEST_FAILPOINT", point).output().unwrap();
                let stderr = String::from_utf8_lossy(&crashed.stderr);
                assert!(stderr.contains(&format!("failpoint {point}: aborting")), "{what}: {stderr}");
            }
            let rerun = harvest(&job_file, &f.out()).output().unwrap();
            assert!(rerun.status.success(), "{what}: {}", String::from_utf8_lossy(&rerun.stderr));

            let root = f.out().join(&name);
            let manifests = std::fs::read_dir(root.join("_harvest/runs")).unwrap().count();
            let versions = versions(&python, &root, &format!("harvest/{name}"));
            let current = match *mode {
                "merge" => Some(current_rows(&client, &f.server.url()).await),
                _ => None,
            };
            recovered(&what, mode, &versions, manifests, 1000, current.as_deref());
            if *mode == "merge" {
                let staged = std::fs::read_dir(root.join("_harvest/staged")).unwrap().count();
                assert_eq!(staged, 0, "{what}: the merged runs' staged parts are gone");
            }
            assert!(!root.join("_harvest/checkpoint.json").exists(), "{what}: the checkpoint is gone");

            let vacuum = Command::new(env!("CARGO_BIN_EXE_harvest"))
                .args(["vacuum", job_file.to_str().unwrap(), "--output-dir", f.out().to_str().unwrap()])
                .args(["--retain", "0s", "-q"])
                .output()
                .unwrap();
            assert!(vacuum.status.success(), "{what}: {}", String::from_utf8_lossy(&vacuum.stderr));
            let left: Vec<String> = names(&root).into_iter().filter(|name| !name.starts_with('_')).collect();
            assert_eq!(left, files(versions.last().unwrap()), "{what}: after vacuum, only the newest version's files");
        }
    }
    assert_eq!(count, 20 + 20 + 21, "every point in every mode it applies to");
}

/// The mock's current records as `[id, updated_at]`, in order of id.
pub async fn current_rows(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let page = client.get(format!("{base}/offset?offset=0&limit=100000")).send().await.unwrap();
    let page: Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
    let mut rows: Vec<Value> =
        page["items"].as_array().unwrap().iter().map(|r| json!([r["id"], r["updated_at"]])).collect();
    rows.sort_by_key(|r| r[0].as_u64());
    rows
}

/// After a kill and a run to the end, the table read as [`versions_at`] reads it: one version
/// per completed run (`manifests`), its newest holding ids 1 to `records` once per run
/// (append) or once (replace, merge), in merge mode with the values of `current`.
pub fn recovered(
    what: &str,
    mode: &str,
    versions: &[Value],
    manifests: usize,
    records: u64,
    current: Option<&[Value]>,
) {
    assert_eq!(versions.len(), manifests, "{what}: one version per completed run");
    let newest = versions.last().unwrap();
    let runs = match mode {
        "append" => manifests,
        _ => 1,
    };
    let expected: Vec<u64> = (1..=records).flat_map(|id| std::iter::repeat_n(id, runs)).collect();
    assert_eq!(ids(newest), expected, "{what}");
    if let Some(current) = current {
        assert_eq!(newest["rows"].as_array().unwrap(), current, "{what}: each key's latest record");
    }
}

/// The names of a version's files, sorted.
pub fn files(version: &Value) -> Vec<String> {
    let uris = version["uris"].as_array().unwrap();
    let mut names: Vec<String> =
        uris.iter().map(|uri| uri.as_str().unwrap().rsplit('/').next().unwrap().to_string()).collect();
    names.sort();
    names
}

/// `harvest optimize` compacts the table's files into one version that reads the same;
/// a run after it keeps the compacted file (delta-rs's, not a part of harvest's: without that
/// the run's start removed it as an unfinished run's, and the table lost it: checked);
/// `harvest vacuum --retain 0s` removes exactly the files no version refers to, after a dry run
/// that removes nothing; `status` shows the table.
#[tokio::test(flavor = "multi_thread")]
async fn optimize_compacts_in_one_version_and_vacuum_removes_only_what_no_version_keeps() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(1000).await;
    let job_file = f.job(&job("opt", "append"));
    let root = f.out().join("opt");
    let out = f.out();
    let command = |args: &[&str]| {
        let mut full = vec![args[0], job_file.to_str().unwrap(), "--output-dir", out.to_str().unwrap()];
        full.extend(&args[1..]);
        let out = Command::new(env!("CARGO_BIN_EXE_harvest")).args(&full).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let parquet_files =
        || -> Vec<String> { names(&root).into_iter().filter(|name| name.ends_with(".parquet")).collect() };
    for _ in 0..2 {
        f.run(&job("opt", "append")).await.unwrap();
        next_second().await;
    }
    let said = command(&["optimize"]);
    assert!(said.contains("into 1 (version 2)"), "{said}");
    let twice: Vec<u64> = (1..=1000).flat_map(|id| [id, id]).collect();
    let read = versions(&python, &root, "harvest/opt");
    assert_eq!((read.len(), &read[2]["files"]), (3, &Value::from(1)), "{read:?}");
    assert_eq!(ids(&read[2]), twice);

    f.run(&job("opt", "append")).await.unwrap();
    let thrice: Vec<u64> = (1..=1000).flat_map(|id| [id, id, id]).collect();
    let read = versions(&python, &root, "harvest/opt");
    assert_eq!(ids(&read[3]), thrice, "the run after optimize keeps the compacted file");
    let referenced = read[3]["files"].as_u64().unwrap() as usize;

    let before = parquet_files();
    let said = command(&["vacuum", "--retain", "0s", "--dry-run"]);
    let unreferenced = before.len() - referenced;
    assert!(said.contains(&format!("{unreferenced} file(s) would be removed")), "{said} ({before:?})");
    assert_eq!(parquet_files(), before, "a dry run removes nothing");
    let said = command(&["vacuum", "--retain", "0s"]);
    assert!(said.contains(&format!("removed {unreferenced} file(s)")), "{said}");
    assert_eq!(parquet_files().len(), referenced, "every file left is the newest version's");
    let script = format!(
        "import json, deltalake\nt = deltalake.DeltaTable({:?}).to_pyarrow_table(columns=['id'])\n\
         print(json.dumps({{'ids': sorted(t.column('id').to_pylist())}}), flush=True)\n{EXIT}",
        root.to_str().unwrap()
    );
    let out = Command::new(&python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ids(&serde_json::from_slice(&out.stdout).unwrap()), thrice, "the newest version reads whole");

    let status = command(&["status"]);
    // Vacuum logs itself in two versions of its own.
    assert!(status.contains("table: Delta Lake, version 5") && status.contains("3000 rows"), "{status}");
    assert!(status.contains("version 4: VACUUM START") && status.contains("version 2: OPTIMIZE"), "{status}");
    assert!(status.contains("version 3: run 2"), "{status}");
}

/// A table another tool made is written to only if it can take harvest's records: one whose
/// `id` column is boolean is refused at the commit (the field and both types named), one at a
/// protocol with a writer feature delta-rs does not know before any request; exit 1 and the
/// table untouched in both.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_harvest_cannot_write_to_is_refused_and_left_untouched() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(100).await;
    let job_file = f.job(&job("other", "append"));
    let root = f.out().join("other");
    let script = format!(
        "import deltalake, pyarrow as pa\ndeltalake.write_deltalake({:?}, pa.table({{'id': [True, False]}}))\n{EXIT}",
        root.to_str().unwrap()
    );
    let made = Command::new(&python).args(["-c", &script]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let log = |root: &Path| names(&root.join("_delta_log"));
    let before = log(&root);
    let refused = harvest(&job_file, &f.out()).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("field id is boolean in the table and long in this run's records"), "{stderr}");
    assert_eq!(log(&root), before, "the table is untouched");

    // A protocol with a writer feature from the future.
    let future = f.out().join("future");
    std::fs::create_dir_all(future.join("_delta_log")).unwrap();
    let schema =
        r#"{\"type\":\"struct\",\"fields\":[{\"name\":\"id\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}}]}"#;
    let entry = format!(
        "{{\"protocol\":{{\"minReaderVersion\":3,\"minWriterVersion\":7,\"readerFeatures\":[],\"writerFeatures\":[\"featureFromTheFuture\"]}}}}\n\
         {{\"metaData\":{{\"id\":\"f\",\"format\":{{\"provider\":\"parquet\",\"options\":{{}}}},\"schemaString\":\"{schema}\",\
         \"partitionColumns\":[],\"configuration\":{{}},\"createdTime\":0}}}}\n"
    );
    std::fs::write(future.join("_delta_log/00000000000000000000.json"), entry).unwrap();
    let job_file = f.job(&job("future", "append"));
    let asked = f.server.stats.requests();
    let refused = harvest(&job_file, &f.out()).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("featureFromTheFuture"), "{stderr}");
    assert_eq!(log(&future), ["00000000000000000000.json"], "the table is untouched");
    assert_eq!(f.server.stats.requests(), asked, "refused before any request");
}

/// `optimize_every = 2`: the second run's commit is followed by a compaction of its own, the
/// third run's is not; the rows stay the runs'.
#[tokio::test(flavor = "multi_thread")]
async fn optimize_every_compacts_after_every_second_run() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(1000).await;
    let toml = format!("{}optimize_every = 2\n", job("every", "append"));
    let root = f.out().join("every");
    for _ in 0..3 {
        f.run(&toml).await.unwrap();
        next_second().await;
    }
    let operations: Vec<String> = (0..4).map(|v| operation(&root, v)).collect();
    assert_eq!(operations, ["CREATE TABLE", "WRITE", "OPTIMIZE", "WRITE"]);
    assert!(!root.join("_delta_log/00000000000000000004.json").exists());
    let read = versions(&python, &root, "harvest/every");
    assert_eq!(read[2]["files"], 1, "{read:?}");
    let thrice: Vec<u64> = (1..=1000).flat_map(|id| [id, id, id]).collect();
    assert_eq!(ids(&read[3]), thrice);
}
