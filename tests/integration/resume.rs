//! Exactly once across crashes: the harvest binary is killed with SIGKILL at many points
//! (after k requests as the server counts them, and at random times), run again each time,
//! and the final output holds every id once, in order per partition. Every part under its
//! final name must be readable after every kill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array};
use harvest::mock::{MockConfig, MockServer};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::support::part_files;

const RECORDS: u64 = 3000;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    format: &'static str,
    kind: &'static str,
    concurrency: u32,
    partitions: bool,
}

impl Scenario {
    fn job(&self, base: &str) -> String {
        let (url, partitions) = match self.partitions {
            true => (format!("{base}/t/{{tenant}}/{}", self.kind), "[partitions]\ntenant = [\"a\", \"b\"]\n"),
            false => (format!("{base}/{}", self.kind), ""),
        };
        let records = if self.kind == "page" { "$.data[*]" } else { "$.items[*]" };
        let pagination = match self.kind {
            "cursor" => "kind = \"cursor\"\nnext = \"$.next_cursor\"\npage_size = 50\n",
            "page" => "kind = \"page\"\npage_size = 50\n",
            _ => "kind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n",
        };
        format!(
            "name = \"k\"\n[request]\nurl = \"{url}\"\n[records]\npath = \"{records}\"\n[pagination]\n{pagination}\
             {partitions}[limits]\nconcurrency = {}\n[output]\nformat = \"{}\"\nrows_per_file = 400\n\
             checkpoint_interval = \"15ms\"\n",
            self.concurrency, self.format
        )
    }

    fn labels(&self) -> Vec<String> {
        match self.partitions {
            true => vec!["tenant=a".into(), "tenant=b".into()],
            false => vec![String::new()],
        }
    }
}

fn harvest(job: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never", "-q"]);
    command
}

/// The ids of one part, in row order.
fn part_ids(path: &Path) -> Vec<u64> {
    if path.extension().is_some_and(|e| e == "parquet") {
        let file = std::fs::File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{} is not readable Parquet: {e}", path.display()))
            .build()
            .unwrap();
        reader
            .flat_map(|batch| {
                let batch = batch.unwrap();
                let ids = batch.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
                (0..ids.len()).map(move |i| ids.value(i) as u64)
            })
            .collect()
    } else {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{} ends inside a record", path.display());
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
            .map(|r| r["id"].as_u64().unwrap())
            .collect()
    }
}

/// Each partition's ids through the row ranges of the newest manifest.
fn ids_by_partition(root: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut manifests: Vec<PathBuf> =
        std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().map(|e| e.path()).collect();
    manifests.sort();
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for part in manifest["parts"].as_array().unwrap() {
        let ids = part_ids(&root.join(part["file"].as_str().unwrap()));
        for slice in part["partitions"].as_array().unwrap() {
            let (from, to) = (slice["rows"][0].as_u64().unwrap() as usize, slice["rows"][1].as_u64().unwrap() as usize);
            out.entry(slice["partition"].as_str().unwrap().to_string()).or_default().extend(&ids[from..to]);
        }
    }
    out
}

/// Kill the harvest `kills` times, alternating a server-side trigger (after k more requests)
/// and a random delay; check the parts after each kill; then let it finish and check the
/// whole output. Returns the kills that landed before the run completed.
async fn kill_and_resume(scenario: Scenario, kills: usize, seed: u64) -> usize {
    let server =
        MockServer::start(MockConfig { records: RECORDS, latency: Duration::from_millis(10), ..Default::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, scenario.job(&server.url())).unwrap();
    let out = dir.path().join("out");
    let root = out.join("k");
    let mut landed = 0;
    let mut rng = seed;
    let mut random = move |below: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };
    for kill in 0..kills {
        let before = server.stats.requests();
        let mut child = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        if kill % 2 == 0 {
            let k = 1 + random(10);
            while server.stats.requests() < before + k && Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(5 + random(100))).await;
        }
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "{scenario:?}: the run failed on its own");
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                landed += 1;
            }
        }
        for part in part_files(&root) {
            part_ids(&part);
        }
    }
    let status = harvest(&job, &out).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{scenario:?}: the last run completes");
    let by_partition = ids_by_partition(&root);
    let expected: Vec<u64> = (1..=RECORDS).collect();
    assert_eq!(by_partition.keys().cloned().collect::<Vec<_>>(), scenario.labels(), "{scenario:?}");
    for (label, ids) in &by_partition {
        assert!(ids == &expected, "{scenario:?}: partition {label:?} has {} ids, {} distinct", ids.len(), {
            let mut d = ids.clone();
            d.sort();
            d.dedup();
            d.len()
        });
    }
    // Every published part is the run's, and holds what the manifest says: nothing stray.
    let listed: usize = by_partition.values().map(Vec::len).sum();
    let on_disk: usize = part_files(&root).iter().map(|p| part_ids(p).len()).sum();
    assert_eq!(on_disk, listed, "{scenario:?}: parts not in the manifest");
    assert!(!root.join("_harvest/checkpoint.json").exists(), "the checkpoint goes with completion");
    assert_eq!(std::fs::read_dir(root.join("_harvest/open")).unwrap().count(), 0, "no temporary part is left");
    let pages = RECORDS.div_ceil(50) * scenario.labels().len() as u64;
    eprintln!(
        "{scenario:?}: {landed} kills; {} requests for {pages} pages (one run alone asks at least that many)",
        server.stats.requests()
    );
    landed
}

const SCENARIOS: [(&str, &str, u32, bool); 3] =
    [("offset", "", 1, false), ("cursor", "", 8, false), ("page", "", 8, true)];

async fn kills_for(format: &'static str) {
    let mut landed = 0;
    for (i, (kind, _, concurrency, partitions)) in SCENARIOS.into_iter().enumerate() {
        let scenario = Scenario { format, kind, concurrency, partitions };
        landed += kill_and_resume(scenario, 8, 7 + i as u64).await;
    }
    assert!(landed >= 20, "{format}: only {landed} kills landed before a run completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_is_exact_after_kill_9_at_many_points() {
    kills_for("ndjson").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_is_exact_after_kill_9_at_many_points() {
    kills_for("parquet").await;
}

/// A slow mock and a job over it: long enough to be caught running.
async fn slow_job(kind: &'static str) -> (MockServer, tempfile::TempDir, PathBuf, PathBuf) {
    let server =
        MockServer::start(MockConfig { records: 600, latency: Duration::from_millis(20), ..Default::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let scenario = Scenario { format: "ndjson", kind, concurrency: 1, partitions: false };
    std::fs::write(&job, scenario.job(&server.url()).replace("page_size = 50", "page_size = 10")).unwrap();
    let out = dir.path().join("out");
    (server, dir, job, out)
}

async fn until_requests(server: &MockServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stats.requests() < n {
        assert!(Instant::now() < deadline, "the harvest did not get going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn complete_ids(out: &Path) -> Vec<u64> {
    ids_by_partition(&out.join("k")).remove("").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_saves_a_checkpoint_and_the_next_run_resumes_it() {
    let (server, _dir, job, out) = slow_job("cursor").await;
    let child = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    until_requests(&server, 8).await;
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("with a checkpoint") && stderr.contains("resumes from there"), "{stderr}");
    let checkpoint: Value =
        serde_json::from_slice(&std::fs::read(out.join("k/_harvest/checkpoint.json")).unwrap()).unwrap();
    let written = checkpoint["position"]["frontier"][0]["records"].as_u64().unwrap();
    assert!(written >= 10, "the pages before the signal are kept: {written}");
    let asked = server.stats.requests();
    let status = |out: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
            .args(["status", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let report = status(&out);
    assert!(report.contains("running now: no"), "{report}");
    assert!(report.contains(&format!("the partition: {} pages, {written} records", written / 10)), "{report}");
    assert!(report.contains("last completed run: none"), "{report}");

    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("resuming run") && stderr.contains(&format!("({written} records written)")), "{stderr}");
    assert_eq!(complete_ids(&out), (1..=600).collect::<Vec<_>>());
    let report = status(&out);
    assert!(report.contains("unfinished run: none") && report.contains("600 records in 60 pages"), "{report}");
    // The resume went on from the checkpoint: at most the page in flight was asked again.
    assert!(server.stats.requests() - asked <= 60 - written / 10 + 2, "asked {}", server.stats.requests() - asked);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_is_refused_while_the_first_holds_the_lock_and_not_after_it_died() {
    let (server, _dir, job, out) = slow_job("offset").await;
    let mut first = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    until_requests(&server, 3).await;
    let second = harvest(&job, &out).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("pid {} started 20", first.id())), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
    let third = harvest(&job, &out).stdout(Stdio::null()).output().unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert_eq!(complete_ids(&out), (1..=600).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_that_cannot_be_used_is_an_error_until_fresh() {
    let (server, _dir, job, out) = slow_job("offset").await;
    let mut child = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    until_requests(&server, 10).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let checkpoint = out.join("k/_harvest/checkpoint.json");
    let saved = std::fs::read_to_string(&checkpoint).unwrap();
    let run = |job: &Path| {
        let output = harvest(job, &out).output().unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };

    // The job changed what it fetches.
    let changed = job.with_file_name("changed.toml");
    std::fs::write(&changed, std::fs::read_to_string(&job).unwrap().replace("page_size = 10", "page_size = 20"))
        .unwrap();
    let (code, stderr) = run(&changed);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the job changed since its run") && stderr.contains("(pagination differs)"), "{stderr}");
    assert!(stderr.contains(&format!("`harvest run {} --fresh`", changed.display())), "{stderr}");

    // Corrupt, or from a newer harvest.
    std::fs::write(&checkpoint, &saved[..saved.len() / 2]).unwrap();
    let (code, stderr) = run(&job);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("checkpoint.json is corrupt") && stderr.contains("--fresh"), "{stderr}");
    std::fs::write(&checkpoint, saved.replacen("\"version\": 1", "\"version\": 99", 1)).unwrap();
    let (code, stderr) = run(&job);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("written by a newer harvest (checkpoint version 99"), "{stderr}");
    assert!(checkpoint.exists(), "nothing is discarded without --fresh");

    // --fresh discards the unfinished run, parts and all, and starts over.
    let unfinished: Vec<PathBuf> = part_files(&out.join("k"));
    let output = harvest(&changed, &out).arg("--fresh").stdout(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(unfinished.iter().all(|p| !p.exists()), "the unfinished run's parts are gone");
    assert_eq!(complete_ids(&out), (1..=600).collect::<Vec<_>>());
}

/// A crash inside the steps that make data durable: writing a checkpoint (or the manifest),
/// and renaming a part to its final name. The run is aborted there, then run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_checkpointing_or_publishing_resumes_exactly() {
    for format in ["ndjson", "parquet"] {
        for point in ["atomic-write:2", "atomic-write:4", "publish:1", "publish:3"] {
            let server = MockServer::start(MockConfig {
                records: RECORDS,
                latency: Duration::from_millis(2),
                ..Default::default()
            })
            .await
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let job = dir.path().join("job.toml");
            let scenario = Scenario { format, kind: "offset", concurrency: 4, partitions: false };
            std::fs::write(&job, scenario.job(&server.url())).unwrap();
            let out = dir.path().join("out");
            let crashed = harvest(&job, &out).env("HARVEST_FAILPOINT", point).output().unwrap();
            let stderr = String::from_utf8_lossy(&crashed.stderr);
            assert!(!crashed.status.success() && stderr.contains("aborting"), "{format} {point}: {stderr}");
            for part in part_files(&out.join("k")) {
                part_ids(&part);
            }
            let resumed = harvest(&job, &out).stdout(Stdio::null()).output().unwrap();
            assert!(resumed.status.success(), "{format} {point}: {}", String::from_utf8_lossy(&resumed.stderr));
            let expected: Vec<u64> = (1..=RECORDS).collect();
            assert!(complete_ids(&out) == expected, "{format} {point}: every id once, in order");
            let listed = complete_ids(&out).len();
            let on_disk: usize = part_files(&out.join("k")).iter().map(|p| part_ids(p).len()).sum();
            assert_eq!(on_disk, listed, "{format} {point}: parts not in the manifest");
        }
    }
}

/// Replace mode: a run that dies after its manifest is durable but before it removed the
/// parts it replaces; the next run finishes the removal, and a completed run's parts are not
/// touched again.
#[tokio::test(flavor = "multi_thread")]
async fn a_replacing_run_that_died_after_its_manifest_is_finished_by_the_next() {
    let server = MockServer::start(MockConfig { records: 300, ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let scenario = Scenario { format: "ndjson", kind: "offset", concurrency: 2, partitions: false };
    std::fs::write(&job, scenario.job(&server.url()).replace("rows_per_file = 400", "rows_per_file = 100")).unwrap();
    let out = dir.path().join("out");
    let root = out.join("k");
    assert!(harvest(&job, &out).stdout(Stdio::null()).status().unwrap().success());
    let first = part_files(&root);
    assert_eq!(first.len(), 3);
    // Run ids are whole seconds: let the next run have its own.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let crashed = harvest(&job, &out).env("HARVEST_FAILPOINT", "after-manifest:1").output().unwrap();
    assert!(!crashed.status.success());
    assert_eq!(part_files(&root).len(), 6, "both runs' parts are there after the crash");
    let second: Vec<PathBuf> = part_files(&root).into_iter().filter(|p| !first.contains(p)).collect();
    let second_bytes: Vec<Vec<u8>> = second.iter().map(|p| std::fs::read(p).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = harvest(&job, &out).env("HARVEST_FAILPOINT", "after-manifest:1").output().unwrap();
    assert!(!third.status.success());
    assert!(first.iter().all(|p| !p.exists()), "the replaced parts were removed first");
    assert_eq!(second.iter().map(|p| std::fs::read(p).unwrap()).collect::<Vec<_>>(), second_bytes);
    assert!(harvest(&job, &out).stdout(Stdio::null()).status().unwrap().success());
    assert_eq!(complete_ids(&out), (1..=300).collect::<Vec<_>>());
    assert_eq!(part_files(&root).len(), 3, "only the newest run's parts are left");
}
