//! Exactly once across crashes: the harvest binary is killed with SIGKILL at many points
//! (after k requests as the server counts them, and at random times, always while it runs
//! and after it made at least one page durable), run again each time, and the final output
//! holds every id once, in order per partition. Every part under its final name must be
//! readable after every kill, and the kills must show that the recovery paths ran: the
//! checkpoint only moves forward, keeps its run id to the end, and at least one kill leaves
//! data past the checkpoint that the resume has to cut away.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array};
use harvest_mock::{MockConfig, MockServer};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::support::{part_files, until_requests};

const RECORDS: u64 = 3000;
const KILLS: usize = 8;
/// The mock's latency in the kill scenarios.
const LATENCY_MS: u64 = 10;
/// Pages the writer may have queued (`WRITER_QUEUE` in src/pipeline.rs).
const WRITER_QUEUE: u64 = 16;

#[derive(Debug, Clone, Copy)]
struct Scenario {
    format: &'static str,
    compression: &'static str,
    kind: &'static str,
    concurrency: u32,
    partitions: bool,
    /// Records in the mock: enough that eight kills never see a run complete.
    records: u64,
    checkpoint_ms: u64,
    rows_per_file: u64,
}

impl Scenario {
    fn new(format: &'static str, kind: &'static str, concurrency: u32, partitions: bool) -> Self {
        let compression = if format == "parquet" { "zstd" } else { "none" };
        Scenario {
            format,
            compression,
            kind,
            concurrency,
            partitions,
            records: 12_000,
            checkpoint_ms: 15,
            rows_per_file: 400,
        }
    }

    /// Checkpoints far apart and parts that do not rotate in between, so that the writer's
    /// buffer reaches the open part's file between checkpoints: a kill then leaves the open
    /// part longer than its checkpoint says, and the resume must cut it back.
    fn far_checkpoints(mut self) -> Self {
        self.records = 64_000;
        self.checkpoint_ms = 200;
        self.rows_per_file = 20_000;
        self
    }

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
             {partitions}[limits]\nconcurrency = {}\n[output]\nformat = \"{}\"\ncompression = \"{}\"\n\
             rows_per_file = {}\ncheckpoint_interval = \"{}ms\"\n",
            self.concurrency, self.format, self.compression, self.rows_per_file, self.checkpoint_ms
        )
    }

    fn labels(&self) -> Vec<String> {
        match self.partitions {
            true => vec!["tenant=a".into(), "tenant=b".into()],
            false => vec![String::new()],
        }
    }

    /// Pages in flight at once, at most, across the job's partitions.
    fn window(&self) -> u64 {
        match self.kind {
            "cursor" => 1,
            _ if self.concurrency == 1 => 1,
            _ => 2 * u64::from(self.concurrency),
        }
    }

    /// What one kill may cost in requests asked again: the pages in flight, those queued for
    /// the writer, and those written since the last checkpoint (one interval at the most the
    /// server's latency allows).
    fn kill_cost(&self) -> u64 {
        let per_interval = (self.checkpoint_ms * self.window().min(u64::from(self.concurrency))).div_ceil(LATENCY_MS);
        self.window() + WRITER_QUEUE + per_interval + 2
    }
}

fn harvest(job: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never", "-q"]);
    command
}

/// The ids of one part, in row order (Parquet, or NDJSON plain, gzip or zstd).
pub(crate) fn part_ids(path: &Path) -> Vec<u64> {
    let name = path.to_string_lossy();
    if name.ends_with(".parquet") {
        let file = std::fs::File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{} is not readable Parquet: {e}", path.display()))
            .build()
            .unwrap();
        return reader
            .flat_map(|batch| {
                let batch = batch.unwrap();
                let ids = batch.column_by_name("id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
                (0..ids.len()).map(move |i| ids.value(i) as u64)
            })
            .collect();
    }
    let file = std::fs::File::open(path).unwrap();
    let mut text = String::new();
    let read = if name.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text)
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file).unwrap().read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    };
    read.unwrap_or_else(|e| panic!("{} is not readable: {e}", path.display()));
    assert!(text.is_empty() || text.ends_with('\n'), "{} ends inside a record", path.display());
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

/// The only manifest of the job.
fn manifest(root: &Path) -> Value {
    let manifests: Vec<PathBuf> =
        std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(manifests.len(), 1, "exactly one manifest: {manifests:?}");
    serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap()
}

/// Each partition's ids through the row ranges of the newest manifest.
fn ids_by_partition(root: &Path) -> BTreeMap<String, Vec<u64>> {
    let mut manifests: Vec<PathBuf> =
        std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().map(|e| e.path()).collect();
    manifests.sort();
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for part in manifest["parts"].as_array().unwrap() {
        let file = part["file"].as_str().unwrap();
        let ids = part_ids(&root.join(file));
        let mut ranges = Vec::new();
        for slice in part["partitions"].as_array().unwrap() {
            let (from, to) = (slice["rows"][0].as_u64().unwrap() as usize, slice["rows"][1].as_u64().unwrap() as usize);
            out.entry(slice["partition"].as_str().unwrap().to_string()).or_default().extend(&ids[from..to]);
            ranges.push((from, to));
        }
        // The part holds its ranges' rows and nothing else: no stray rows after a kill.
        ranges.sort();
        let mut at = 0;
        for (from, to) in ranges {
            assert_eq!(from, at, "{file}: rows {at}..{from} belong to no partition of the manifest");
            at = to;
        }
        assert_eq!(at, ids.len(), "{file} holds {} rows, and its ranges name {at}", ids.len());
    }
    out
}

fn checkpoint(root: &Path) -> Option<Value> {
    let bytes = std::fs::read(root.join("_harvest/checkpoint.json")).ok()?;
    Some(serde_json::from_slice(&bytes).expect("a checkpoint is always whole"))
}

/// Pages and records per partition key in a checkpoint: those under way, and those that
/// ended (named in its reports: these jobs have far fewer than a hundred partitions).
fn frontier(checkpoint: &Value) -> BTreeMap<String, (u64, u64)> {
    let position = &checkpoint["position"];
    let active = position["active"].as_object().unwrap().iter();
    let done = position["done"]["reports"].as_object().unwrap().values().map(|r| (r["partition"].as_str().unwrap(), r));
    let ended =
        position["done"]["ranges"].as_array().unwrap().iter().map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap());
    assert_eq!(ended.sum::<u64>(), done.len() as u64, "every partition that ended is named");
    active
        .map(|(key, f)| (key.as_str(), f))
        .chain(done)
        .map(|(key, f)| (key.to_string(), (f["pages"].as_u64().unwrap(), f["records"].as_u64().unwrap())))
        .collect()
}

fn written(root: &Path) -> u64 {
    checkpoint(root).map_or(0, |c| frontier(&c).values().map(|(_, records)| records).sum())
}

#[derive(Debug, Clone, PartialEq)]
enum Past {
    /// The open part is longer than its checkpointed length.
    Longer(String),
    /// A temporary part the checkpoint does not know, or a part published after it.
    Other(String),
}

/// What the killed process wrote past its last checkpoint, which a resume must take away:
/// the open part longer than its checkpointed length, temporary parts the checkpoint does not
/// know, or parts published after it.
fn past_checkpoint(root: &Path, checkpoint: &Value) -> Vec<Past> {
    let position = &checkpoint["position"];
    let open = position["open"]["file"].as_str();
    let mut found = Vec::new();
    if let Some(file) = open {
        let len = position["open"]["len"].as_u64().unwrap();
        let on_disk = [root.join("_harvest/open").join(file), root.join(file)]
            .iter()
            .find_map(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        if on_disk > len {
            found.push(Past::Longer(format!("{file}: {on_disk} bytes, {len} checkpointed")));
        }
    }
    let listed: BTreeSet<&str> =
        position["parts"].as_array().unwrap().iter().filter_map(|p| p["file"].as_str()).collect();
    for entry in std::fs::read_dir(root.join("_harvest/open")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if Some(name.as_str()) != open {
            found.push(Past::Other(format!("temporary {name}")));
        }
    }
    for part in part_files(root) {
        let name = part.file_name().unwrap().to_string_lossy().into_owned();
        if !listed.contains(name.as_str()) && Some(name.as_str()) != open {
            found.push(Past::Other(format!("published {name}")));
        }
    }
    found
}

/// Wait until `done`, failing the test if the child exits first or it takes too long.
async fn wait_while_alive(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what}: the run ended ({status}) before the kill");
        }
        assert!(Instant::now() < deadline, "{what}: gave up waiting");
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Kill the harvest `KILLS` times, alternating a server-side trigger (k more requests) and a
/// random delay, each after the run made a page durable; check the parts and the checkpoint
/// after each kill; then let the last resume finish and check the whole output.
async fn kill_and_resume(scenario: Scenario, seed: u64) -> Vec<Past> {
    let server = MockServer::start(MockConfig {
        records: scenario.records,
        latency: Duration::from_millis(LATENCY_MS),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, scenario.job(&server.url())).unwrap();
    let out = dir.path().join("out");
    let root = out.join("k");
    let mut rng = seed;
    let mut random = move |below: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };
    let mut run_id: Option<String> = None;
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut cut = Vec::new();
    for kill in 0..KILLS {
        let what = format!("{scenario:?}, kill {kill}");
        let before = written(&root);
        let mut child = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // At least one page of this run is durable before the kill.
        wait_while_alive(&mut child, &what, || written(&root) > before).await;
        if scenario.checkpoint_ms > 100 && kill % 2 == 1 {
            // Between two checkpoints, once the writer's buffer has reached the open part.
            let longer = |root: &Path| {
                checkpoint(root).is_some_and(|c| past_checkpoint(root, &c).iter().any(|p| matches!(p, Past::Longer(_))))
            };
            match scenario.compression {
                "none" if scenario.format == "ndjson" => wait_while_alive(&mut child, &what, || longer(&root)).await,
                _ => tokio::time::sleep(Duration::from_millis(random(scenario.checkpoint_ms))).await,
            }
        } else if kill % 2 == 0 {
            let target = server.stats.requests() + 1 + random(10);
            wait_while_alive(&mut child, &what, || server.stats.requests() >= target).await;
        } else {
            tokio::time::sleep(Duration::from_millis(random(20))).await;
        }
        assert!(child.try_wait().unwrap().is_none(), "{what}: the run completed before the kill");
        child.kill().unwrap();
        child.wait().unwrap();

        for part in part_files(&root) {
            part_ids(&part);
        }
        let saved = checkpoint(&root).unwrap_or_else(|| panic!("{what}: no checkpoint"));
        let run = saved["run"].as_str().unwrap().to_string();
        assert_eq!(run_id.get_or_insert_with(|| run.clone()), &run, "{what}: the run id changed");
        let now = frontier(&saved);
        for (partition, was) in &last {
            let is = now.get(partition).unwrap_or_else(|| panic!("{what}: partition {partition} was forgotten"));
            assert!(is.0 >= was.0 && is.1 >= was.1, "{what}: partition {partition} went back from {was:?} to {is:?}");
        }
        last = now;
        cut.extend(past_checkpoint(&root, &saved));
    }

    // The last resume: it goes on from the checkpoint and completes.
    let mut resume = Command::new(env!("CARGO_BIN_EXE_harvest"));
    resume.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never"]);
    let output = resume.stdout(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{scenario:?}: the last run completes: {stderr}");
    let run_id = run_id.unwrap();
    assert!(stderr.contains(&format!("resuming run {run_id}")), "{scenario:?}: {stderr}");
    let manifest = manifest(&root);
    assert_eq!(manifest["run"], run_id.as_str(), "{scenario:?}: the manifest is the first checkpoint's run");

    let by_partition = ids_by_partition(&root);
    let expected: Vec<u64> = (1..=scenario.records).collect();
    assert_eq!(by_partition.keys().cloned().collect::<Vec<_>>(), scenario.labels(), "{scenario:?}");
    for (label, ids) in &by_partition {
        assert!(ids == &expected, "{scenario:?}: partition {label:?} has {} ids, {} distinct", ids.len(), {
            let mut d = ids.clone();
            d.sort();
            d.dedup();
            d.len()
        });
    }
    // The parts on disk are exactly the manifest's.
    let listed: BTreeSet<String> =
        manifest["parts"].as_array().unwrap().iter().map(|p| p["file"].as_str().unwrap().to_string()).collect();
    let on_disk: BTreeSet<String> =
        part_files(&root).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(on_disk, listed, "{scenario:?}: the parts on disk are the manifest's");
    assert!(!root.join("_harvest/checkpoint.json").exists(), "the checkpoint goes with completion");
    assert_eq!(std::fs::read_dir(root.join("_harvest/open")).unwrap().count(), 0, "no temporary part is left");

    // No kill cost more than what was in flight, queued for the writer, or written since the
    // last checkpoint (15 ms of pages); a resume that started over would cost every page again.
    let pages = scenario.records.div_ceil(50) * scenario.labels().len() as u64;
    let requests = server.stats.requests();
    eprintln!(
        "{scenario:?}: {KILLS} kills, the last at (pages, records) {last:?}; {requests} requests for {pages} pages; \
         past checkpoints: {cut:?}"
    );
    assert!(
        requests <= pages + KILLS as u64 * scenario.kill_cost(),
        "{scenario:?}: {requests} requests for {pages} pages and {KILLS} kills of at most {} each",
        scenario.kill_cost()
    );
    cut
}

const SCENARIOS: [(&str, u32, bool); 3] = [("offset", 1, false), ("cursor", 8, false), ("page", 8, true)];

async fn kills_for(format: &'static str, compression: Option<&'static str>) {
    let mut cut = Vec::new();
    for (i, (kind, concurrency, partitions)) in SCENARIOS.into_iter().enumerate() {
        let mut scenario = Scenario::new(format, kind, concurrency, partitions);
        if partitions {
            scenario = scenario.far_checkpoints();
        }
        if let Some(compression) = compression {
            scenario.compression = compression;
        }
        cut.extend(kill_and_resume(scenario, 7 + i as u64).await);
    }
    // The resume had something to cut away: the open part past its checkpointed length (plain
    // NDJSON, whose buffer reaches the file between checkpoints), or parts written after the
    // checkpoint (compressed parts stay in the buffer until it closes them; Parquet parts are
    // closed at every checkpoint).
    match (format, compression) {
        ("ndjson", None) => assert!(cut.iter().any(|p| matches!(p, Past::Longer(_))), "{format}: {cut:?}"),
        _ => assert!(!cut.is_empty(), "{format} {compression:?}: no kill left anything past its checkpoint"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_is_exact_after_kill_9_at_many_points() {
    kills_for("ndjson", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_ndjson_is_exact_after_kill_9_at_many_points() {
    kills_for("ndjson", Some("gzip")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_ndjson_is_exact_after_kill_9_at_many_points() {
    kills_for("ndjson", Some("zstd")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_is_exact_after_kill_9_at_many_points() {
    kills_for("parquet", None).await;
}

/// A slow mock and a job over it: long enough to be caught running.
async fn slow_job(kind: &'static str) -> (MockServer, tempfile::TempDir, PathBuf, PathBuf) {
    let server =
        MockServer::start(MockConfig { records: 600, latency: Duration::from_millis(20), ..Default::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let scenario = Scenario::new("ndjson", kind, 1, false);
    std::fs::write(&job, scenario.job(&server.url()).replace("page_size = 50", "page_size = 10")).unwrap();
    let out = dir.path().join("out");
    (server, dir, job, out)
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
    let written = checkpoint["position"]["active"][""]["records"].as_u64().unwrap();
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
    assert!(stderr.contains(&format!("pid {} on ", first.id())) && stderr.contains(" started 20"), "{stderr}");
    first.kill().unwrap();
    first.wait().unwrap();
    let third = harvest(&job, &out).stdout(Stdio::null()).output().unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
    assert_eq!(complete_ids(&out), (1..=600).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_that_cannot_be_used_is_an_error_until_fresh() {
    let (_server, _dir, job, out) = slow_job("offset").await;
    // Parts of 30 rows: the unfinished run has published some by the time it is killed.
    std::fs::write(&job, std::fs::read_to_string(&job).unwrap().replace("rows_per_file = 400", "rows_per_file = 30"))
        .unwrap();
    let root = out.join("k");
    let mut child = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_while_alive(&mut child, "before the kill", || {
        checkpoint(&root).is_some_and(|c| c["position"]["parts"].as_array().unwrap().len() >= 2)
            && std::fs::read_dir(root.join("_harvest/open")).unwrap().count() > 0
    })
    .await;
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
    std::fs::write(&checkpoint, saved.replacen("\"version\":2", "\"version\":99", 1)).unwrap();
    let (code, stderr) = run(&job);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("written by a newer harvest (checkpoint version 99"), "{stderr}");
    // Version 1 listed partitions by position: never misread as this version's keys.
    std::fs::write(&checkpoint, saved.replacen("\"version\":2", "\"version\":1", 1)).unwrap();
    let (code, stderr) = run(&job);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("written by an older harvest (checkpoint version 1, this one reads 2)"), "{stderr}");
    assert!(checkpoint.exists(), "nothing is discarded without --fresh");

    // --fresh discards the unfinished run, parts and all (published and open), and starts over.
    let unfinished: Vec<PathBuf> = part_files(&root);
    let open: Vec<PathBuf> =
        std::fs::read_dir(root.join("_harvest/open")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(unfinished.len() >= 2 && !open.is_empty(), "published {unfinished:?}, open {open:?}");
    // Run ids are whole seconds: let the fresh run have its own, so its parts have other names.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let output = harvest(&changed, &out).arg("--fresh").stdout(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(unfinished.iter().chain(&open).all(|p| !p.exists()), "the unfinished run's parts are gone");
    assert_eq!(std::fs::read_dir(root.join("_harvest/open")).unwrap().count(), 0);
    assert_eq!(complete_ids(&out), (1..=600).collect::<Vec<_>>());
    let manifest = manifest(&root);
    let listed: BTreeSet<String> =
        manifest["parts"].as_array().unwrap().iter().map(|p| p["file"].as_str().unwrap().to_string()).collect();
    let on_disk: BTreeSet<String> =
        part_files(&root).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(on_disk, listed, "only the fresh run's parts are left");
}

/// A crash inside each step that makes data durable: a checkpoint or the run's manifest
/// written whole under its temporary name but not yet renamed, and a part renamed to its
/// final name before the folder is synced. The run is aborted exactly there (each file is
/// its own failpoint), then run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_checkpointing_or_publishing_resumes_exactly() {
    for format in ["ndjson", "parquet"] {
        let points = [
            "checkpoint-write:1",
            "checkpoint-write:3",
            "checkpoint-write:6",
            "manifest-write:1",
            "publish:1",
            "publish:3",
        ];
        for point in points {
            let what = format!("{format} {point}");
            // 60 pages, four at a time, 10 ms each: about ten checkpoints 15 ms apart.
            let server = MockServer::start(MockConfig {
                records: RECORDS,
                latency: Duration::from_millis(10),
                ..Default::default()
            })
            .await
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let job = dir.path().join("job.toml");
            let scenario = Scenario::new(format, "offset", 4, false);
            std::fs::write(&job, scenario.job(&server.url())).unwrap();
            let out = dir.path().join("out");
            let root = out.join("k");
            let crashed = harvest(&job, &out).env("HARVEST_FAILPOINT", point).output().unwrap();
            let stderr = String::from_utf8_lossy(&crashed.stderr);
            assert!(!crashed.status.success(), "{what}: {stderr}");
            assert!(stderr.contains(&format!("failpoint {point}: aborting")), "{what}: {stderr}");
            for part in part_files(&root) {
                part_ids(&part);
            }
            let saved = checkpoint(&root);
            let run = match point.split(':').next().unwrap() {
                "checkpoint-write" => {
                    // The new checkpoint is whole under its temporary name; the old one stands.
                    assert!(root.join("_harvest/.checkpoint.json.tmp").exists(), "{what}");
                    assert_eq!(saved.is_some(), point != "checkpoint-write:1", "{what}");
                    saved.map(|c| c["run"].as_str().unwrap().to_string())
                }
                "manifest-write" => {
                    // Every page was written; the manifest is there only under its temporary name.
                    let saved = saved.unwrap_or_else(|| panic!("{what}: the checkpoint stays until the manifest"));
                    let run = saved["run"].as_str().unwrap().to_string();
                    assert!(root.join(format!("_harvest/runs/.{run}.json.tmp")).exists(), "{what}");
                    assert!(!root.join(format!("_harvest/runs/{run}.json")).exists(), "{what}");
                    let ended = BTreeMap::from([(String::new(), (RECORDS / 50, RECORDS))]);
                    assert_eq!(frontier(&saved), ended, "{what}");
                    Some(run)
                }
                _ => saved.map(|c| c["run"].as_str().unwrap().to_string()),
            };
            let asked = server.stats.requests();
            let mut again = Command::new(env!("CARGO_BIN_EXE_harvest"));
            again.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never"]);
            let resumed = again.stdout(Stdio::null()).output().unwrap();
            let stderr = String::from_utf8_lossy(&resumed.stderr);
            assert!(resumed.status.success(), "{what}: {stderr}");
            if let Some(run) = &run {
                assert!(stderr.contains(&format!("resuming run {run}")), "{what}: {stderr}");
                assert_eq!(manifest(&root)["run"], run.as_str(), "{what}: the run that crashed completes");
            }
            if point == "manifest-write:1" {
                assert_eq!(server.stats.requests(), asked, "{what}: nothing is asked again");
            }
            let expected: Vec<u64> = (1..=RECORDS).collect();
            assert!(complete_ids(&out) == expected, "{what}: every id once, in order");
            let listed: BTreeSet<String> = manifest(&root)["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["file"].as_str().unwrap().to_string())
                .collect();
            let on_disk: BTreeSet<String> =
                part_files(&root).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
            assert_eq!(on_disk, listed, "{what}: the parts on disk are the manifest's");
            assert!(checkpoint(&root).is_none(), "{what}");
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
    let scenario = Scenario::new("ndjson", "offset", 2, false);
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

/// Partitions are kept by key while under way and as ranges once ended: an interrupted run of
/// 3,000 partitions checkpoints a few ranges, not 3,000 entries, and resumes exactly.
#[tokio::test(flavor = "multi_thread")]
async fn many_partitions_checkpoint_as_ranges_and_resume_by_key() {
    use std::sync::Arc;

    use harvest::job::{self, Env, Overrides};
    use harvest::run::{self, RunOptions};

    const PARTITIONS: u64 = 3000;
    let f = crate::support::Fixture::new(10).await;
    let values: Vec<String> = (1..=PARTITIONS).map(|n| format!("\"{n:04}\"")).collect();
    let job = format!(
        "name = \"many\"\n[request]\nurl = \"{{base}}/t/{{n}}/offset\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 10\ntotal = \"$.total\"\n[limits]\nconcurrency = 8\n\
         [output]\ncheckpoint_interval = \"20ms\"\nrows_per_file = 500\n[partitions]\nn = [{}]\n",
        values.join(", ")
    );
    let path = f.job(&job);
    let text = std::fs::read_to_string(&path).unwrap();
    let overrides = Overrides { output_dir: Some(f.out()), ..Default::default() };
    let plan = Arc::new(job::parse(&path, &text, &Env::default(), &overrides).unwrap());
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions { cancel: cancel.clone(), ..Default::default() };
    let running = tokio::spawn(run::run(plan.clone(), options));
    until_requests(&f.server, 1500).await;
    cancel.cancel();
    let error = running.await.unwrap().expect_err("interrupted");
    assert!(error.to_string().contains("interrupted"), "{error}");

    let saved = checkpoint(&f.out().join("many")).expect("a checkpoint");
    let done = &saved["position"]["done"];
    let ranges = done["ranges"].as_array().unwrap();
    let ended: u64 = ranges.iter().map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap()).sum();
    assert!(ended >= 1400, "{ended} partitions ended before the interrupt");
    assert!(ranges.len() <= 9, "partitions end about in order: a few ranges, not {}", ranges.len());
    assert!(saved["position"]["active"].as_object().unwrap().len() <= 8, "at most the partitions running");
    assert!(done["reports"].as_object().unwrap().is_empty(), "past a hundred, only those that warned are named");
    assert_eq!(done["stops"]["total_reached"].as_u64(), Some(ended));
    assert_eq!(done["records"].as_u64(), Some(ended * 10));
    for key in saved["position"]["active"].as_object().unwrap().keys() {
        assert!(key.starts_with("n=") && key.len() == 6, "keyed by the partition's key: {key}");
    }

    let asked = f.server.stats.requests();
    let summary = run::run(plan, RunOptions::default()).await.unwrap();
    let again = f.server.stats.requests() - asked;
    assert!(again <= PARTITIONS - ended + 16, "only what had not ended is asked again: {again} after {ended} ended");
    assert_eq!(summary.records, PARTITIONS * 10);
    let by_partition = f.records_by_partition("many");
    assert_eq!(by_partition.len() as u64, PARTITIONS);
    for (key, records) in by_partition {
        let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, crate::support::one_to(10), "{key}");
    }
    let manifest = manifest(&f.out().join("many"));
    assert_eq!(manifest["stops"]["total_reached"].as_u64(), Some(PARTITIONS));
    assert!(manifest["partitions"].as_array().unwrap().is_empty(), "past a hundred, only those that warned");
    assert!(manifest["parts"].as_array().unwrap().iter().all(|p| p.get("more_slices").is_none()));
}
