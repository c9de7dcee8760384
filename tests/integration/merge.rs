//! `mode = "merge"`: a run's records upserted into a Delta table by primary key, one version a
//! run, read back with the `deltalake` Python package and Polars. What the table must hold is
//! worked out here from the records served, by the rules the docs give (with `[incremental]`
//! the higher `updated_at` wins, else the later record), never by harvest's code.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::delta::EXIT;
use crate::support::{python_with, Fixture};

/// An API of changes: the records the test puts in it, served in pages of 50 (`?page=1`, ...)
/// and then an empty page.
#[derive(Clone, Default)]
struct Changes(Arc<Mutex<Vec<Value>>>);

impl Changes {
    async fn serve() -> (Changes, String) {
        let changes = Changes::default();
        let served = changes.clone();
        let app = axum::Router::new().route(
            "/changes",
            axum::routing::get(move |axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>| {
                let served = served.clone();
                async move {
                    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    let records = served.0.lock().unwrap();
                    let data: Vec<Value> = records.iter().skip((page - 1) * 50).take(50).cloned().collect();
                    axum::Json(json!({ "data": data }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (changes, url)
    }

    fn set(&self, records: Vec<Value>) {
        *self.0.lock().unwrap() = records;
    }
}

fn merge_job(name: &str, url: &str, incremental: bool) -> String {
    let incremental = match incremental {
        true => "[incremental]\nfield = \"$.updated_at\"\nparam = \"since\"\nstart = \"2024-01-01T00:00:00Z\"\n",
        false => "",
    };
    format!(
        "name = \"{name}\"\n[request]\nurl = \"{url}/changes\"\n[records]\npath = \"$.data[*]\"\n\
         [pagination]\nkind = \"page\"\npage_size = 50\n{incremental}\
         [output]\nformat = \"delta\"\nmode = \"merge\"\nprimary_key = [\"id\"]\ndeleted = \"$.deleted\"\n\
         infer_sample = 20\nrows_per_file = 40\n"
    )
}

/// `2024-01-01T00:<minute>:00Z`.
fn at(minute: u64) -> String {
    format!("2024-01-01T{:02}:{:02}:00Z", minute / 60, minute % 60)
}

fn record(id: u64, minute: u64, value: i64) -> Value {
    json!({ "id": id, "updated_at": at(minute), "value": value })
}

fn deleted(id: u64, minute: u64) -> Value {
    json!({ "id": id, "updated_at": at(minute), "value": null, "deleted": true })
}

/// The six runs' records: duplicates of a key inside a run (newer last, and older last),
/// updates, soft deletes, a key deleted and back, a record older than the row (which only a
/// job without `[incremental]` takes), a run of records that did not change, one change, none.
fn runs() -> Vec<Vec<Value>> {
    let mut first: Vec<Value> = (1..=120).map(|id| record(id, 10, id as i64)).collect();
    first.push(record(7, 11, 700));
    first.push(record(8, 9, 800));
    let mut second: Vec<Value> = (100..=140).map(|id| record(id, 20, 2 * id as i64)).collect();
    second.extend([deleted(5, 20), deleted(6, 20)]);
    let third = vec![record(5, 30, 5000), record(10, 1, -1), deleted(11, 1), record(12, 30, 1200)];
    let fourth: Vec<Value> =
        (1..=30).filter(|id| ![5, 6, 7, 8, 10, 11, 12].contains(id)).map(|id| record(id, 10, id as i64)).collect();
    let fifth = vec![record(50, 50, 5050)];
    vec![first, second, third, fourth, fifth, Vec::new()]
}

/// The table after `run` is merged into `table`, by the documented rules.
fn merged(table: &BTreeMap<u64, (String, i64)>, run: &[Value], incremental: bool) -> BTreeMap<u64, (String, i64)> {
    let time = |r: &Value| r["updated_at"].as_str().unwrap().to_string();
    let mut winners: BTreeMap<u64, &Value> = BTreeMap::new();
    for r in run {
        let id = r["id"].as_u64().unwrap();
        match winners.get(&id) {
            Some(w) if incremental && time(r) < time(w) => {}
            _ => {
                winners.insert(id, r);
            }
        }
    }
    let mut table = table.clone();
    for (id, r) in winners {
        if incremental && table.get(&id).is_some_and(|(row, _)| time(r) < *row) {
            continue;
        }
        match r["deleted"].as_bool() == Some(true) {
            true => table.remove(&id),
            false => table.insert(id, (time(r), r["value"].as_i64().unwrap())),
        };
    }
    table
}

/// Every version of the table at `root` as the `deltalake` package and Polars read it:
/// `[id, updated_at, value]` rows sorted by id, and the version's file names.
fn read_versions(python: &str, root: &Path) -> Vec<Value> {
    let script = format!(
        r#"
import json, deltalake, polars as pl
path = {root:?}
out = []
for v in range(deltalake.DeltaTable(path).version() + 1):
    dt = deltalake.DeltaTable(path, version=v)
    t = dt.to_pyarrow_table(columns=["id", "updated_at", "value"]).sort_by("id").to_pylist()
    p = pl.read_delta(path, version=v).sort("id").select(["id", "updated_at", "value"]).rows()
    out.append({{
        "deltalake": [[r["id"], r["updated_at"], r["value"]] for r in t],
        "polars": [list(r) for r in p],
        "files": sorted(dt.file_uris()),
    }})
print(json.dumps(out), flush=True)
{EXIT}
"#,
        root = root.to_str().unwrap(),
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn rows(table: &BTreeMap<u64, (String, i64)>) -> Value {
    table.iter().map(|(id, (at, value))| json!([id, at, value])).collect()
}

/// Six runs of changes into a table, with and without `[incremental]`: after each, the
/// table (by the deltalake package and by Polars) is what the rules make of the records
/// served, one row per key; time travel gives each run's state; the runs of records that did
/// not change, and of none, rewrite no file; the staged parts are gone once merged.
#[tokio::test(flavor = "multi_thread")]
async fn merge_runs_keep_one_row_per_key_the_winning_record_s() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(10).await;
    let (changes, url) = Changes::serve().await;
    for incremental in [true, false] {
        let name = format!("m_{incremental}");
        let mut table = BTreeMap::new();
        let mut states = Vec::new();
        for run in runs() {
            changes.set(run.clone());
            f.run(&merge_job(&name, &url, incremental)).await.unwrap();
            table = merged(&table, &run, incremental);
            states.push(table.clone());
            crate::delta::next_second().await;
        }
        let root = f.out().join(&name);
        let versions = read_versions(&python, &root);
        assert_eq!(versions.len(), 6, "incremental={incremental}: one version a run");
        for (v, (version, state)) in versions.iter().zip(&states).enumerate() {
            let what = format!("incremental={incremental}, version {v}");
            assert_eq!(version["deltalake"], rows(state), "{what}: the deltalake package");
            assert_eq!(version["polars"], rows(state), "{what}: Polars");
        }
        let what = format!("incremental={incremental}: unchanged rows rewrite nothing");
        assert_eq!(versions[3]["files"], versions[2]["files"], "{what}");
        assert_eq!(versions[5]["files"], versions[4]["files"], "{what}: an empty run neither");
        let staged = std::fs::read_dir(root.join("_harvest/staged")).unwrap().count();
        assert_eq!(staged, 0, "incremental={incremental}: the staged parts are gone");
    }
    // The rules differ where they should: the older duplicate and the stale records.
    let with = merged(&BTreeMap::new(), &runs()[0], true);
    let without = merged(&BTreeMap::new(), &runs()[0], false);
    assert_eq!((with[&8].1, without[&8].1), (8, 800));
}

/// Five incremental syncs of the built-in mock with records edited and soft-deleted (and one
/// brought back) between them: after each, the table holds exactly the mock's current
/// records, as the deltalake package and Polars read it.
#[tokio::test(flavor = "multi_thread")]
async fn incremental_syncs_mirror_the_mock_s_current_records() {
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(300).await;
    let job = "name = \"sync\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n\
               [pagination]\nkind = \"offset\"\npage_size = 40\ntotal = \"$.total\"\n\
               [incremental]\nfield = \"$.updated_at\"\nparam = \"updated_since\"\nstart = \"2023-01-01T00:00:00Z\"\n\
               [output]\nformat = \"delta\"\nmode = \"merge\"\nprimary_key = [\"id\"]\ndeleted = \"$.deleted\"\n";
    let client = reqwest::Client::new();
    let edits = ["ids=5,17,250", "ids=3,250&deleted=true", "ids=3,18", "ids=100,101,102&deleted=true", ""];
    for (run, edit) in edits.iter().enumerate() {
        f.run(job).await.unwrap();
        let mut expected = Vec::new();
        let page = client.get(format!("{}/offset?offset=0&limit=1000", f.server.url())).send().await.unwrap();
        let page: Value = serde_json::from_slice(&page.bytes().await.unwrap()).unwrap();
        for r in page["items"].as_array().unwrap() {
            if r["deleted"] != Value::Bool(true) {
                expected.push(json!([r["id"], r["updated_at"], r["name"]]));
            }
        }
        expected.sort_by_key(|r| r[0].as_u64().unwrap());
        let script = format!(
            r#"
import json, deltalake, polars as pl
path = {root:?}
t = deltalake.DeltaTable(path).to_pyarrow_table(columns=["id", "updated_at", "name"]).sort_by("id").to_pylist()
p = pl.read_delta(path).sort("id").select(["id", "updated_at", "name"]).rows()
print(json.dumps({{"deltalake": [[r["id"], r["updated_at"], r["name"]] for r in t], "polars": [list(r) for r in p]}}), flush=True)
{EXIT}
"#,
            root = f.out().join("sync").to_str().unwrap(),
        );
        let out = Command::new(&python).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let read: Value = serde_json::from_slice(&out.stdout).unwrap();
        for reader in ["deltalake", "polars"] {
            let got = read[reader].as_array().unwrap();
            let missing: Vec<&Value> = expected.iter().filter(|r| !got.contains(r)).collect();
            let extra: Vec<&Value> = got.iter().filter(|r| !expected.contains(r)).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "run {run}, {reader}: missing {missing:?}, extra {extra:?}"
            );
            assert_eq!(got.len(), expected.len(), "run {run}, {reader}: one row per key");
        }
        if !edit.is_empty() {
            let touched = client.post(format!("{}/_admin/touch?{edit}", f.server.url())).send().await.unwrap();
            assert!(touched.status().is_success());
        }
        crate::delta::next_second().await;
    }
}

/// A record without its key fails its page, and a key whose type changes is refused (exit 2);
/// each time the table is left as it was, and so are the incremental marks, which move only
/// with a commit that holds their run (a run killed before its commit neither); `--fresh`
/// discards the refused run. A first run without records makes no table.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_without_its_key_or_a_key_of_another_type_is_refused() {
    let f = Fixture::new(10).await;
    let (changes, url) = Changes::serve().await;
    let job = f.job(&merge_job("bad", &url, true));
    let run_with = |failpoint: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_harvest"))
            .args(["run", job.to_str().unwrap(), "--output-dir", f.out().to_str().unwrap(), "-q"])
            .env("HARVEST_FAILPOINT", failpoint)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let run = || run_with("");
    let mark = || {
        let state = std::fs::read(f.out().join("bad/_harvest/state.json")).unwrap();
        serde_json::from_slice::<Value>(&state).unwrap()["marks"][""].as_str().unwrap().to_string()
    };
    let log = f.out().join("bad/_delta_log");
    // A first run without records makes no table (a table needs columns) and fails nothing.
    changes.set(Vec::new());
    assert_eq!(run().0, Some(0));
    assert!(!log.exists());
    crate::delta::next_second().await;
    changes.set(vec![record(1, 1, 1), record(2, 1, 2)]);
    assert_eq!(run().0, Some(0));
    let versions = || std::fs::read_dir(&log).unwrap().count();
    assert_eq!(versions(), 1);
    assert_eq!(mark(), at(1));

    changes.set(vec![record(1, 2, 10)]);
    let (_, stderr) = run_with("before-commit:1");
    assert!(stderr.contains("failpoint before-commit:1: aborting"), "{stderr}");
    assert_eq!((versions(), mark()), (1, at(1)), "killed before its commit: the marks stay");
    assert_eq!(run().0, Some(0));
    assert_eq!((versions(), mark()), (3, at(2)), "committed by the next run, then that run's own version");

    changes.set(vec![record(3, 2, 3), json!({ "updated_at": at(2), "value": 4 })]);
    let (code, stderr) = run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("record 2 of the page has no value for \"id\", a field of primary_key"), "{stderr}");
    assert_eq!(versions(), 3, "the table is untouched");
    crate::delta::next_second().await;

    changes.set(vec![json!({ "id": "three", "updated_at": at(3), "value": 3 })]);
    let (code, stderr) = run();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("primary_key field \"id\" is long in the table and string in this run's records"),
        "{stderr}"
    );
    assert_eq!((versions(), mark()), (3, at(2)), "the table and the marks are untouched");
    // The refused run stays refused; --fresh discards it, and its records are asked for again.
    changes.set(vec![record(3, 3, 3)]);
    assert_eq!(run().0, Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["run", job.to_str().unwrap(), "--output-dir", f.out().to_str().unwrap(), "--fresh"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--fresh: discarded run"), "{stderr}");
    assert_eq!((versions(), mark()), (4, at(3)), "the run after it is committed, its marks saved");
}

/// A job whose partitions come from a merge job reads the parent's table as it stands: one
/// value per key, the deleted key gone (the merged runs' parts are gone by then).
#[tokio::test(flavor = "multi_thread")]
async fn a_job_reading_a_merge_job_s_output_reads_its_table() {
    let f = Fixture::new(50).await;
    let (changes, url) = Changes::serve().await;
    changes.set((1..=5).map(|id| record(id, 1, id as i64)).collect());
    f.run(&merge_job("parents", &url, false)).await.unwrap();
    crate::delta::next_second().await;
    changes.set(vec![record(2, 2, 20), deleted(3, 2), record(6, 2, 6), record(2, 3, 21)]);
    f.run(&merge_job("parents", &url, false)).await.unwrap();
    let child = "name = \"child\"\n[request]\nurl = \"{base}/items/{id}\"\n[records]\npath = \"$\"\n\
                 [pagination]\nkind = \"none\"\n[partitions]\nid = { from = \"parents\", field = \"$.id\" }\n";
    f.run(child).await.unwrap();
    let mut ids = f.ids("child");
    ids.sort();
    assert_eq!(ids, vec![1, 2, 4, 5, 6]);
}
