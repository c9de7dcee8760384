//! Incremental syncs: run 1 gets every record, run 2 exactly those updated since (plus the
//! lookback margin), run 3 none; the mark is the greatest `updated_at` seen, whatever the order
//! served; a sync killed half way resumes with the mark it sent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use harvest_mock::{updated_at, MockConfig, MockServer};
use serde_json::Value;

use crate::support::{part_files, read_records, Fixture};

const N: u64 = 400;

fn job(path: &str, extra: &str) -> String {
    format!(
        "name = \"inc\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"$.items[*]\"\n[pagination]\n\
         kind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n[incremental]\nfield = \"$.updated_at\"\n\
         param = \"updated_since\"\nstart = \"2024-01-01T00:00:00Z\"\n{extra}"
    )
}

async fn touch(server: &MockServer, ids: &[u64]) {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let url = format!("{}/_admin/touch?ids={}", server.url(), ids.join(","));
    let response = reqwest::Client::new().post(url).send().await.unwrap();
    assert!(response.status().is_success());
}

fn mark(root: &Path) -> String {
    let state: Value = serde_json::from_slice(&std::fs::read(root.join("_harvest/state.json")).unwrap()).unwrap();
    state["marks"][""].as_str().unwrap().to_string()
}

/// Wait until the unfinished run's checkpoint holds at least `records` records (20 s at most).
async fn until_checkpointed(root: &Path, records: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let checkpoint = std::fs::read(root.join("_harvest/checkpoint.json")).ok();
        let checkpoint: Option<Value> = checkpoint.and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let held: u64 = checkpoint.map_or(0, |c| {
            let active = c["position"]["active"].as_object().cloned().unwrap_or_default();
            active.values().filter_map(|f| f["records"].as_u64()).sum()
        });
        if held >= records {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint held {records} records: {held}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn stamp(minutes: u64) -> String {
    updated_at(minutes).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `updated_since` of every request the server saw, in order.
fn sent_marks(server: &MockServer) -> Vec<String> {
    let since = |uri: &str| {
        let query = uri.split_once('?')?.1;
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "updated_since").map(|(_, v)| v.into_owned())
    };
    server.stats.log().iter().filter_map(|s| since(&s.uri)).collect()
}

/// The ids each run wrote, run by run (parts are named by run, in order).
fn ids_by_run(root: &Path) -> Vec<Vec<u64>> {
    let mut runs: Vec<(String, Vec<u64>)> = Vec::new();
    for part in part_files(root) {
        let name = part.file_name().unwrap().to_string_lossy().into_owned();
        let run = name.split('-').nth(1).unwrap().to_string();
        let text = std::fs::read_to_string(&part).unwrap();
        let ids = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_u64().unwrap());
        match runs.last_mut() {
            Some((last, got)) if *last == run => got.extend(ids),
            _ => runs.push((run, ids.collect())),
        }
    }
    runs.into_iter().map(|(_, ids)| ids).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sync_fetches_only_what_changed_and_the_mark_is_the_greatest_seen() {
    let f = Fixture::new(N).await;
    let root = f.out().join("inc");
    f.run(&job("/offset", "")).await.unwrap();
    assert_eq!(mark(&root), stamp(N));
    touch(&f.server, &[7, 300, 42]).await;
    // Run ids are whole seconds: each run gets its own.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = f.run(&job("/offset", "")).await.unwrap();
    assert_eq!(second.records, 3);
    assert_eq!(mark(&root), stamp(N + 3));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = f.run(&job("/offset", "")).await.unwrap();
    assert_eq!(third.records, 0);
    assert_eq!(mark(&root), stamp(N + 3));
    // Append mode is the default with [incremental]: every run's records are kept.
    assert_eq!(ids_by_run(&root), vec![(1..=N).collect::<Vec<_>>(), vec![7, 300, 42]]);
    // Each run sent the mark of the one before.
    let sent = sent_marks(&f.server);
    assert_eq!(sent.first().unwrap(), "2024-01-01T00:00:00Z");
    assert_eq!(sent.last().unwrap(), &stamp(N + 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn lookback_fetches_a_margin_again() {
    let f = Fixture::new(N).await;
    f.run(&job("/offset", "lookback = \"3m\"\n")).await.unwrap();
    touch(&f.server, &[9]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.run(&job("/offset", "lookback = \"3m\"\n")).await.unwrap();
    // Three minutes before the mark: the last records of run 1 come again, then the touched one.
    assert_eq!(ids_by_run(&f.out().join("inc"))[1], vec![N - 2, N - 1, N, 9]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mark_is_the_maximum_when_updated_at_is_not_monotonic_in_the_order_served() {
    let f = Fixture::new(N).await;
    touch(&f.server, &[5, 17]).await;
    // `order=id`: served by id, so the newest records come early.
    f.run(&job("/offset?order=id", "")).await.unwrap();
    let records = read_records(&f.out().join("inc"));
    assert_eq!(records.len() as u64, N);
    assert_eq!(records[16]["updated_at"], stamp(N + 2));
    assert_eq!(mark(&f.out().join("inc")), stamp(N + 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_records_advances_no_mark() {
    let f = Fixture::new(N).await;
    let job = job("/offset", "").replace("total = \"$.total\"\n", "total = \"$.total\"\nmax_records = 120\n");
    let summary = f.run(&job).await.unwrap();
    assert_eq!(summary.records, 120);
    let state: Value =
        serde_json::from_slice(&std::fs::read(f.out().join("inc/_harvest/state.json")).unwrap()).unwrap();
    assert_eq!(state["marks"], serde_json::json!({}), "a run cut short by max_records advances no mark");
}

/// `max_records` that leaves records out moves no mark and says so, wherever the cut falls:
/// inside a page, on a page boundary, or on the last page (where the page also reaches the
/// total), oldest first and newest first; a limit that leaves nothing out is no cut.
#[tokio::test(flavor = "multi_thread")]
async fn max_records_that_leaves_records_out_moves_no_mark_wherever_it_cuts() {
    for order in ["", "?order=desc"] {
        for (max, cut) in [(70, true), (100, true), (120, true), (130, false), (200, false)] {
            let f = Fixture::new(130).await;
            let job = job(&format!("/offset{order}"), "")
                .replace("total = \"$.total\"\n", &format!("total = \"$.total\"\nmax_records = {max}\n"));
            let summary = f.run(&job).await.unwrap();
            let case = format!("max_records = {max}{order}");
            assert_eq!(summary.records, max.min(130), "{case}");
            let manifest: Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
            let stop = &manifest["partitions"][0]["stop"]["reason"];
            let state: Value =
                serde_json::from_slice(&std::fs::read(f.out().join("inc/_harvest/state.json")).unwrap()).unwrap();
            match cut {
                true => {
                    assert_eq!(stop, "max_records", "{case}: {manifest}");
                    assert_eq!(state["marks"], serde_json::json!({}), "{case}: a cut run moved the mark");
                }
                false => {
                    assert_eq!(stop, "total_reached", "{case}: {manifest}");
                    assert_eq!(state["marks"][""], stamp(130), "{case}: every record fetched moves the mark");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_killed_half_way_resumes_with_the_mark_it_sent() {
    let server = MockServer::start(MockConfig { records: N, latency: Duration::from_millis(15), ..Default::default() })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.toml");
    let text = job("/offset", "[output]\ncheckpoint_interval = \"10ms\"\n")
        .replace("{base}", &server.url())
        .replace("page_size = 50", "page_size = 10");
    std::fs::write(&job_file, text).unwrap();
    let out = dir.path().join("out");
    let harvest = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
        command
            .args([
                "run",
                job_file.to_str().unwrap(),
                "--output-dir",
                out.to_str().unwrap(),
                "-q",
                "--progress",
                "never",
            ])
            .stdout(Stdio::null());
        command
    };
    assert!(harvest().status().unwrap().success());
    let touched: Vec<u64> = (1..=N).step_by(2).collect();
    touch(&server, &touched).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.stats.reset();
    let mut child = harvest().stderr(Stdio::null()).spawn().unwrap();
    let root = out.join("inc");
    // The kill lands once a checkpoint holds pages of this run: a mark saved with any
    // checkpoint, rather than when the run completes, is then in state.json.
    until_checkpointed(&root, 30).await;
    assert_eq!(mark(&root), stamp(N), "a checkpoint of the unfinished sync moved the mark");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(root.join("_harvest/checkpoint.json").exists());
    assert_eq!(mark(&root), stamp(N), "an unfinished sync moves no mark");
    // A record updated after the kill does not change what the resumed run asks for: it sends
    // the mark it sent. The record comes after everything else (it is the newest), so it is
    // written once: by this run if its pages reach it, else by the next sync.
    touch(&server, &[2]).await;
    assert!(harvest().status().unwrap().success());
    let mut sent = sent_marks(&server);
    sent.dedup();
    assert_eq!(sent, vec![stamp(N)]);
    let runs = ids_by_run(&root);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1][..touched.len()], touched[..], "the resumed sync wrote each touched record once, in order");
    let late = &runs[1][touched.len()..];
    assert!(late.is_empty() || late == [2], "{late:?}");
    assert_eq!(mark(&root), stamp(N + touched.len() as u64 + late.len() as u64));
    let second = mark(&root);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.stats.reset();
    assert!(harvest().status().unwrap().success());
    assert_eq!(sent_marks(&server)[0], second, "the next sync sends the mark the resumed one reached");
    let runs = ids_by_run(&root);
    let after: Vec<u64> = runs[1][touched.len()..].iter().chain(runs.get(2).into_iter().flatten()).copied().collect();
    assert_eq!(after, vec![2], "the record touched after the kill is written once, by one sync or the next");
    assert_eq!(mark(&root), stamp(N + touched.len() as u64 + 1));
}

/// A crash while `state.json` is written (whole under its temporary name, not yet renamed):
/// the mark is not moved, the run is resumed from its last checkpoint without asking again,
/// and the resume moves the mark.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_the_marks_are_saved_resumes_and_moves_them() {
    let server = MockServer::start(MockConfig { records: N, ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.toml");
    std::fs::write(&job_file, job("/offset", "").replace("{base}", &server.url())).unwrap();
    let out = dir.path().join("out");
    let root = out.join("inc");
    let harvest = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
        command.args(["run", job_file.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never"]);
        command
    };
    let crashed = harvest().env("HARVEST_FAILPOINT", "state-write:1").output().unwrap();
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(stderr.contains("failpoint state-write:1: aborting"), "{stderr}");
    assert!(root.join("_harvest/.state.json.tmp").exists() && !root.join("_harvest/state.json").exists());
    let asked = server.stats.requests();
    let resumed = harvest().output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(server.stats.requests(), asked, "every page was durable: nothing is asked again");
    assert_eq!(mark(&root), stamp(N));
    assert_eq!(read_records(&root).len() as u64, N);
    assert_eq!(std::fs::read_dir(root.join("_harvest/runs")).unwrap().count(), 1);
}
