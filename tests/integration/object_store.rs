//! Output in object storage: a real S3-compatible server (moto's, from PyPI, started here on
//! 127.0.0.1 by each test) and harvest's binary with credentials in the environment, as a
//! worker on a scheduler has them. What the store holds is read back with boto3 (or pyarrow)
//! and checked as the local tests check a folder: every id once, parts whole under their final
//! keys, no lease or checkpoint left behind, replace mode only once every shard completed, a
//! killed worker's lease taken over after its TTL and its run resumed exactly, a stale worker
//! kept from overwriting a newer checkpoint, and the credentials in no output.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::shards::{asked_twice, exact, text};
use crate::support::{python_with, Fixture};

const BUCKET: &str = "harvest-test";
const KEY_ID: &str = "AKIAHARVESTTESTKEY01";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYhArVeStSeCrEt";

/// A moto S3 server on a free port, killed when dropped.
struct S3 {
    child: Child,
    port: u16,
    python: String,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    /// `None` (skipped) without a Python that has moto, outside CI.
    async fn start() -> Option<S3> {
        let python = python_with("moto.server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        let s3 = S3 { child, port, python };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.put(format!("{}/{BUCKET}", s3.endpoint())).send().await {
                assert!(r.status().is_success(), "creating the bucket: {}", r.status());
                return Some(s3);
            }
            assert!(Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[output]` keys of a job writing under `s3://harvest-test/<prefix>`, and `more`.
    fn output(&self, prefix: &str, more: &str) -> String {
        format!(
            "[output]\ndir = \"s3://{BUCKET}/{prefix}\"\nendpoint = \"{}\"\nallow_http = true\n{more}",
            self.endpoint()
        )
    }

    /// The storage options (a Python dict) the `deltalake` package and Polars read the store with.
    fn delta_options(&self) -> String {
        format!(
            "{{'AWS_ENDPOINT_URL': '{}', 'AWS_ALLOW_HTTP': 'true', 'AWS_ACCESS_KEY_ID': '{KEY_ID}', \
             'AWS_SECRET_ACCESS_KEY': '{SECRET}', 'AWS_REGION': 'us-east-1', 'AWS_S3_ALLOW_UNSAFE_RENAME': 'true'}}",
            self.endpoint()
        )
    }

    /// Every key under `prefix`, with its size.
    fn keys(&self, prefix: &str) -> Vec<(String, u64)> {
        let script = format!(
            "import boto3, json, sys\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='k', aws_secret_access_key='s', \
             region_name='us-east-1')\n\
             keys = []\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}', Prefix=sys.argv[1]):\n\
             \x20   keys += [[o['Key'], o['Size']] for o in page.get('Contents', [])]\n\
             print(json.dumps(keys))\n",
            self.endpoint()
        );
        let out = Command::new(&self.python).args(["-c", &script, prefix]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<(String, u64)>>(&out.stdout).unwrap()
    }

    /// Copy every object under `prefix` into `into`, keeping the paths below `prefix`.
    fn download(&self, prefix: &str, into: &Path) {
        let script = format!(
            "import boto3, os, sys\n\
             s3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='k', aws_secret_access_key='s', \
             region_name='us-east-1')\n\
             prefix, into = sys.argv[1], sys.argv[2]\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}', Prefix=prefix):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       path = os.path.join(into, o['Key'][len(prefix):].lstrip('/'))\n\
             \x20       os.makedirs(os.path.dirname(path), exist_ok=True)\n\
             \x20       s3.download_file('{BUCKET}', o['Key'], path)\n",
            self.endpoint()
        );
        let _ = std::fs::remove_dir_all(into);
        let out = Command::new(&self.python).args(["-c", &script, prefix, into.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `harvest ARGS` with the store's credentials in the environment, as a scheduler gives them.
fn harvest_s3(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(args).stdin(Stdio::null());
    for name in ["HARVEST_SHARD", "HARVEST_RUN_ID", "AWS_BATCH_JOB_ID", "SLURM_ARRAY_JOB_ID", "GITHUB_RUN_ID"] {
        command.env_remove(name);
    }
    command
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .envs(vars.iter().copied());
    command
}

fn run(args: &[&str]) -> Output {
    harvest_s3(args, &[]).output().expect("harvest runs")
}

/// A job file `<name>.toml` over the mock's `/t/{tenant}/offset`, writing to the store.
fn job(f: &Fixture, s3: &S3, name: &str, sections: &str, output: &str) -> String {
    let path = f.job(&format!(
        "name = \"{name}\"\n[request]\nurl = \"{{base}}/t/{{tenant}}/offset\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\n{sections}{}",
        s3.output("exports", output)
    ));
    let named = path.with_file_name(format!("{name}.toml"));
    std::fs::rename(&path, &named).unwrap();
    named.to_str().unwrap().to_string()
}

/// Nothing but data and manifests is left: no lease, checkpoint, probe or clock object.
fn only_data_and_manifests(keys: &[(String, u64)]) {
    for (key, _) in keys {
        let name = key.rsplit('/').next().unwrap();
        let fine = name.starts_with("part-")
            || key.contains("/_harvest/runs/")
            || key.contains("/_harvest/run-ids/")
            || name.starts_with("state");
        assert!(fine, "{key} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_write_every_id_once_into_s3_and_replace_only_when_all_completed() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::new(1_500).await;
    let tenants: Vec<String> = (0..9).map(|t| format!("\"s{t}\"")).collect();
    let job = job(
        &f,
        &s3,
        "many",
        &format!("[partitions]\ntenant = [{}]\n[limits]\nconcurrency = 6\n", tenants.join(", ")),
        "rows_per_file = 2000\n",
    );
    let shard = |index: u32, run_id: &str| {
        harvest_s3(&["run", &job, "--shard", &format!("{index}/3"), "--run-id", run_id, "-q"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let workers: Vec<Child> = (0..3).map(|i| shard(i, "first")).collect();
    for worker in workers {
        let out = worker.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let local = every_id_once(&s3, &f, "many", 9, 1_500);
    assert_eq!(asked_twice(&f, "/t/s"), vec![], "no request made twice");
    let keys = s3.keys("exports/many/");
    only_data_and_manifests(&keys);
    let first: Vec<String> = keys.iter().map(|(k, _)| k.clone()).filter(|k| k.contains("/part-")).collect();
    assert!(first.iter().all(|k| k.contains("of3-")), "{first:?}");
    let status = text(&run(&["status", &job]));
    assert!(status.contains("3 shards): complete") && status.contains("13,500 records"), "{status}");

    // A second run replaces the first only once its last shard completed.
    std::thread::sleep(Duration::from_millis(1100));
    for index in [0, 1] {
        let out = shard(index, "second").wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let now: Vec<String> = s3.keys("exports/many/").into_iter().map(|(k, _)| k).collect();
        assert!(first.iter().all(|k| now.contains(k)), "the first run's parts stay while the second is unfinished");
    }
    let out = shard(2, "second").wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let now: Vec<String> = s3.keys("exports/many/").into_iter().map(|(k, _)| k).collect();
    assert!(first.iter().all(|k| !now.contains(k)), "the last shard removed the first run's parts");
    s3.download("exports/many/", &local);
    let newest: Vec<String> = std::fs::read_dir(local.join("_harvest/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(newest.len(), 6, "both runs' manifests are kept: {newest:?}");
}

/// Every part file under `root` reads whole (NDJSON: each line a record; Parquet: a readable
/// file), and how many records they hold.
fn parts_are_whole(root: &Path) -> (usize, usize) {
    let files = crate::support::part_files(root);
    let records = files.iter().map(|file| crate::resume::part_ids(file).len()).sum();
    (files.len(), records)
}

/// Read job `name` back from the store into a local copy and check that each of its
/// `partitions` holds ids 1..=`n` once, in order, in the newest run; the copy's folder.
fn every_id_once(s3: &S3, f: &Fixture, name: &str, partitions: usize, n: u64) -> std::path::PathBuf {
    let local = f.dir.path().join("copy");
    s3.download(&format!("exports/{name}/"), &local);
    let newest = std::fs::read_dir(local.join("_harvest/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().split(['-', '.']).next().unwrap().to_string())
        .max()
        .expect("a manifest");
    let by_partition = crate::shards::ids_of_run(&local, &newest);
    assert_eq!(by_partition.len(), partitions);
    for (partition, ids) in &by_partition {
        assert_eq!(exact(ids, n), Ok(()), "partition {partition}");
    }
    local
}

/// Wait until the store holds `name`'s checkpoint and at least `parts` parts.
async fn until_checkpointed(s3: &S3, name: &str, parts: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = s3.keys(&format!("exports/{name}/"));
        let published = keys.iter().filter(|(k, _)| k.contains("/part-")).count();
        if published >= parts && keys.iter().any(|(k, _)| k.ends_with("/_harvest/checkpoint.json")) {
            return;
        }
        assert!(Instant::now() < deadline, "no checkpoint and {parts} parts in time: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_lease_is_taken_over_after_its_ttl_and_the_run_resumes_exactly() {
    killed_and_taken_over("ndjson").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_in_s3_is_exact_after_a_kill_and_a_takeover() {
    killed_and_taken_over("parquet").await;
}

async fn killed_and_taken_over(format: &str) {
    let Some(s3) = S3::start().await else { return };
    // Slow enough that the first worker is far from done when it is killed.
    let f = Fixture::slow(3_000, 40).await;
    let job = job(
        &f,
        &s3,
        "killed",
        "[partitions]\ntenant = [\"a\", \"b\", \"c\", \"d\"]\n[limits]\nconcurrency = 2\n",
        &format!("rows_per_file = 400\ncheckpoint_interval = \"20ms\"\nlease_ttl = \"4s\"\nformat = \"{format}\"\n"),
    );
    let start = || harvest_s3(&["run", &job, "-q"], &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = start();
    until_checkpointed(&s3, "killed", 4).await;
    // While it runs, a second worker is refused: the lease is held.
    let second = run(&["run", &job]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(text(&second).contains("lease was renewed"), "{}", text(&second));
    assert!(first.try_wait().unwrap().is_none(), "the first worker ended before the kill");
    first.kill().unwrap();
    first.wait().unwrap();
    let killed_at = Instant::now();
    // Its lease stands until it is lease_ttl old, whoever asks.
    let early = run(&["run", &job]);
    assert_eq!(early.status.code(), Some(3), "{}", text(&early));
    assert!(killed_at.elapsed() < Duration::from_secs(4), "the early restart came too late to show it");
    // What the store holds after the kill: parts only whole, under their final keys.
    let local = f.dir.path().join("copy");
    s3.download("exports/killed/", &local);
    assert!(parts_are_whole(&local).0 >= 4);
    // Past the TTL the next worker takes it over and resumes from the checkpoint.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(killed_at.elapsed()) + Duration::from_millis(300)).await;
    let resumed = harvest_s3(&["run", &job], &[]).output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(text(&resumed).contains("took over the lease"), "{}", text(&resumed));
    assert!(text(&resumed).contains("resuming run"), "{}", text(&resumed));
    let local = every_id_once(&s3, &f, "killed", 4, 3_000);
    assert_eq!(parts_are_whole(&local).1, 12_000, "the store holds only the manifest's parts");
    only_data_and_manifests(&s3.keys("exports/killed/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_worker_cannot_overwrite_the_checkpoint_of_the_worker_that_took_over() {
    let Some(s3) = S3::start().await else { return };
    // Slow enough that the stale worker is far from done when it is stopped.
    let f = Fixture::slow(2_000, 50).await;
    let job = job(
        &f,
        &s3,
        "stale",
        "[partitions]\ntenant = [\"a\", \"b\", \"c\"]\n[limits]\nconcurrency = 1\n",
        "rows_per_file = 300\ncheckpoint_interval = \"20ms\"\nlease_ttl = \"1s\"\n",
    );
    let stale = harvest_s3(&["run", &job], &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    until_checkpointed(&s3, "stale", 2).await;
    // The worker stops answering (a long pause, a partition) past its lease's TTL...
    unsafe { libc::kill(stale.id() as i32, libc::SIGSTOP) };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ...and another takes the lease over and goes on from its checkpoint, to the end.
    let successor = harvest_s3(&["run", &job], &[]).output().unwrap();
    assert!(successor.status.success(), "{}", text(&successor));
    assert!(text(&successor).contains("took over the lease"), "{}", text(&successor));
    // Woken up, the stale worker writes nothing over its successor's work: exit 3, saying why.
    unsafe { libc::kill(stale.id() as i32, libc::SIGCONT) };
    let out = stale.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("taken over by another worker") || said.contains("took over the lease"), "{said}");
    let local = every_id_once(&s3, &f, "stale", 3, 2_000);
    assert_eq!(crate::support::read_records(&local).len(), 6_000, "no part of the stale worker's in the store");
    only_data_and_manifests(&s3.keys("exports/stale/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_polars_read_every_shard_s_parquet_parts_from_s3_as_one_dataset() {
    let Some(s3) = S3::start().await else { return };
    let Some(python) = python_with("pyarrow") else { return };
    let f = Fixture::new(1_200).await;
    let job = job(&f, &s3, "pq", "[partitions]\ntenant = [\"a\", \"b\", \"c\"]\n", "format = \"parquet\"\n");
    for index in 0..2 {
        let out = run(&["run", &job, "--shard", &format!("{index}/2"), "--run-id", "pq-1", "-q"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let script = format!(
        "import pyarrow.dataset as ds, pyarrow.fs as fs\n\
         s3 = fs.S3FileSystem(endpoint_override='{}', scheme='http', access_key='{KEY_ID}', secret_key='{SECRET}', \
         region='us-east-1')\n\
         t = ds.dataset('{BUCKET}/exports/pq', filesystem=s3, format='parquet').to_table()\n\
         ids = t.column('id').to_pylist()\n\
         print(t.num_rows, len(set(ids)), min(ids), max(ids))\n\
         try:\n\
         \x20   import polars as pl\n\
         \x20   options = {{'aws_endpoint_url': '{}', 'aws_allow_http': 'true', 'aws_access_key_id': '{KEY_ID}', \
         'aws_secret_access_key': '{SECRET}', 'aws_region': 'us-east-1'}}\n\
         \x20   df = pl.read_parquet('s3://{BUCKET}/exports/pq/*.parquet', storage_options=options)\n\
         \x20   print(df.height, df['id'].n_unique())\n\
         except ImportError:\n\
         \x20   print('no polars')\n",
        s3.endpoint(),
        s3.endpoint()
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = said.lines();
    // Three partitions of ids 1..=1200 each: 3,600 rows, 1,200 distinct ids.
    assert_eq!(lines.next(), Some("3600 1200 1 1200"), "pyarrow: {said}");
    match lines.next() {
        Some("no polars") => assert!(std::env::var_os("CI").is_none(), "CI must have Polars"),
        other => assert_eq!(other, Some("3600 1200"), "Polars: {said}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_s_credentials_appear_in_no_log_error_manifest_or_checkpoint() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::new(500).await;
    let job = job(&f, &s3, "quiet", "[partitions]\ntenant = [\"a\"]\n", "rows_per_file = 100\n");
    let ok = run(&["-vv", "run", &job]);
    assert!(ok.status.success(), "{}", text(&ok));
    let checked = run(&["check", &job]);
    assert!(text(&checked).contains("object storage: credentials from the environment"), "{}", text(&checked));
    // An unfinished run leaves its checkpoint in the store.
    let cut = run(&["-vv", "run", &job, "--max-pages", "2"]);
    assert!(cut.status.success(), "{}", text(&cut));
    let local = f.dir.path().join("copy");
    s3.download("exports/quiet/", &local);
    // A store that cannot be reached fails with a message that names it, not the credentials.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable =
        std::fs::read_to_string(&job).unwrap().replace(&s3.endpoint(), &format!("http://127.0.0.1:{closed}"));
    std::fs::write(&job, unreachable).unwrap();
    let failed = run(&["-vv", "run", &job]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(text(&failed).contains(&format!("s3://{BUCKET}/exports/quiet")), "{}", text(&failed));
    let mut seen = vec![text(&ok), text(&checked), text(&cut), text(&failed)];
    for entry in walk(&local) {
        seen.push(String::from_utf8_lossy(&std::fs::read(entry).unwrap()).into_owned());
    }
    assert!(seen.len() > 5, "the store's files were read");
    for (i, text) in seen.iter().enumerate() {
        for secret in [SECRET, KEY_ID] {
            assert!(!text.contains(secret), "output {i} holds a credential");
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        match entry.file_type().unwrap().is_dir() {
            true => out.extend(walk(&entry.path())),
            false => out.push(entry.path()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_conditional_writes_is_refused_before_anything_is_written() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::new(100).await;
    let job = job(&f, &s3, "unsafe", "[partitions]\ntenant = [\"a\"]\n", "");
    let out = harvest_s3(&["run", &job], &[("AWS_CONDITIONAL_PUT", "disabled")]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("needs conditional writes"), "{}", text(&out));
    assert_eq!(f.server.stats.requests(), 0, "nothing asked of the API");
    assert!(s3.keys("exports/unsafe/").iter().all(|(k, _)| !k.contains("part-")), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_the_checkpoint_in_the_store_within_its_grace_and_the_run_resumes() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::slow(2_000, 30).await;
    let job = job(
        &f,
        &s3,
        "termed",
        "[partitions]\ntenant = [\"a\", \"b\"]\n[limits]\nconcurrency = 2\n",
        "checkpoint_interval = \"10s\"\n",
    );
    let worker = harvest_s3(&["run", &job], &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    crate::support::until_requests(&f.server, 6).await;
    // As Kubernetes stops a pod: SIGTERM, then 30 s of grace.
    let sent = Instant::now();
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let out = worker.wait_with_output().unwrap();
    let took = sent.elapsed();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(3), "stopped in {took:?}");
    let keys = s3.keys("exports/termed/");
    assert!(keys.iter().any(|(k, _)| k.ends_with("/_harvest/checkpoint.json")), "{keys:?}");
    assert!(!keys.iter().any(|(k, _)| k.contains("/_harvest/lock")), "the lease is released: {keys:?}");
    let resumed = run(&["run", &job]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(text(&resumed).contains("resuming run"), "{}", text(&resumed));
    every_id_once(&s3, &f, "termed", 2, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_each_durable_step_in_s3_is_finished_exactly_by_the_next_run() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::new(1_000).await;
    let job = job(
        &f,
        &s3,
        "crashes",
        "[partitions]\ntenant = [\"a\", \"b\"]\n[limits]\nconcurrency = 2\n",
        "rows_per_file = 150\ncheckpoint_interval = \"1ms\"\nlease_ttl = \"1s\"\n",
    );
    // Aborted as a crash would stop it: writing a checkpoint, after a part's upload, writing
    // the manifest, and with the manifest written but the checkpoint not yet removed.
    for point in ["checkpoint-write:3", "publish:2", "manifest-write:1", "after-manifest:1"] {
        let crashed = harvest_s3(&["run", &job, "--fresh", "-q"], &[("HARVEST_FAILPOINT", point)]).output().unwrap();
        assert!(!crashed.status.success(), "{point}: the run did not stop at the failpoint");
        // The dead worker's lease expires; the next run takes it over and finishes the run.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let next = harvest_s3(&["run", &job, "-q"], &[]).output().unwrap();
        assert!(next.status.success(), "{point}: {}", text(&next));
        every_id_once(&s3, &f, "crashes", 2, 1_000);
        let local = f.dir.path().join("copy");
        assert_eq!(parts_are_whole(&local).1, 2_000, "{point}: the store holds only the manifest's parts");
        only_data_and_manifests(&s3.keys("exports/crashes/"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_variables_reach_an_s3_compatible_store_and_status_reads_it() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::new(300).await;
    // No endpoint in the job: AWS_ENDPOINT_URL and AWS_ALLOW_HTTP, as object_store reads them.
    let path = f.job(&format!(
        "name = \"plain\"\n[request]\nurl = \"{{base}}/offset\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\n[output]\ndir = \"s3://{BUCKET}/exports\"\n"
    ));
    let job = path.to_str().unwrap();
    let env = [("AWS_ENDPOINT_URL", s3.endpoint()), ("AWS_ALLOW_HTTP", "true".to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = harvest_s3(&["run", job], &env).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let status = harvest_s3(&["status", job], &env).output().unwrap();
    assert!(text(&status).contains("300 records in 3 pages"), "{}", text(&status));
    every_id_once(&s3, &f, "plain", 1, 300);
}

/// A job whose partitions come from another job's output in object storage: the parent's
/// Parquet parts (two shards) are read from the store, and every detail fetched once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_output_source_reads_its_parent_s_parts_from_the_store() {
    let Some(s3) = S3::start().await else { return };
    let f = Fixture::new(300).await;
    let parent = job(&f, &s3, "parents", "[partitions]\ntenant = [\"a\"]\n", "format = \"parquet\"\n");
    for index in 0..2 {
        let out = run(&["run", &parent, "--shard", &format!("{index}/2"), "--run-id", "p-1", "-q"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let path = f.job(&format!(
        "name = \"details\"\n[request]\nurl = \"{{base}}/items/{{id}}\"\n[records]\npath = \"$\"\n\
         [pagination]\nkind = \"none\"\n[partitions]\nid = {{ from = \"parents\", field = \"$.id\", include = {{ p = \"$.id\" }} }}\n{}",
        s3.output("exports", "")
    ));
    let out = run(&["run", path.to_str().unwrap(), "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let local = f.dir.path().join("details-copy");
    s3.download("exports/details/", &local);
    let records = crate::support::read_records(&local);
    assert!(records.iter().all(|r| r["_parent"]["p"] == r["id"]), "each detail carries its own parent");
    let mut ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (1..=300).collect::<Vec<u64>>());
}

/// A Delta table in S3 written by 3 shards, one of them killed part way and run again: the
/// run is one version (the last shard to complete commits every shard's parts), read with the
/// `deltalake` package and Polars straight from the store: every id once per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_commit_one_delta_version_into_s3_even_with_a_shard_killed() {
    let Some(s3) = S3::start().await else { return };
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(600).await;
    let tenants: Vec<String> = (0..6).map(|t| format!("\"d{t}\"")).collect();
    let partitions = format!("[partitions]\ntenant = [{}]\n", tenants.join(", "));
    let output = "format = \"delta\"\nrows_per_file = 150\ncheckpoint_interval = \"10ms\"\nlease_ttl = \"1s\"\n";
    let job = job(&f, &s3, "dl", &partitions, output);
    let shard = |index: u32, failpoint: Option<&str>| {
        let mut command = harvest_s3(&["run", &job, "--shard", &format!("{index}/3"), "--run-id", "dl-1", "-q"], &[]);
        if let Some(point) = failpoint {
            command.env("HARVEST_FAILPOINT", point);
        }
        command.output().unwrap()
    };
    let killed = shard(1, Some("publish:2"));
    assert!(String::from_utf8_lossy(&killed.stderr).contains("failpoint publish:2: aborting"), "{}", text(&killed));
    for index in [0, 2] {
        let out = shard(index, None);
        assert!(out.status.success(), "{}", text(&out));
    }
    let keys = s3.keys("exports/dl/_delta_log/");
    assert!(keys.iter().all(|(k, _)| !k.ends_with(".json")), "no version while a shard is unfinished: {keys:?}");
    // The killed shard's lease runs out, and the shard is run again: it resumes and commits.
    std::thread::sleep(Duration::from_secs(2));
    let out = harvest_s3(&["run", &job, "--shard", "1/3", "--run-id", "dl-1", "-q"], &[]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let script = format!(
        "import json, deltalake, polars as pl\n\
         options = {options}\n\
         dt = deltalake.DeltaTable('s3://{BUCKET}/exports/dl', storage_options=options)\n\
         ids = dt.to_pyarrow_table(columns=['id']).column('id').to_pylist()\n\
         df = pl.read_delta('s3://{BUCKET}/exports/dl', storage_options=options)\n\
         print(json.dumps({{'version': dt.version(), 'rows': len(ids), 'distinct': len(set(ids)), \
         'each': sorted(set(ids.count(i) for i in set(ids))), 'polars': df.height}}), flush=True)\n{exit}\n",
        options = s3.delta_options(),
        exit = crate::delta::EXIT,
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read["version"], 0, "one version for the run: {read}");
    assert_eq!(read["rows"], 3600, "{read}");
    assert_eq!(read["distinct"], 600, "{read}");
    assert_eq!(read["each"], serde_json::json!([6]), "each id once per partition: {read}");
    assert_eq!(read["polars"], 3600, "{read}");
    let status = text(&run(&["status", &job]));
    assert!(status.contains("table: Delta Lake, version 0") && status.contains("3600 rows"), "{status}");
}

/// The moments of a Delta commit into S3 a crash can stop, in each mode: before it, while
/// delta-rs writes a merge's data files, before and after the log entry (an S3 conditional
/// put), while a merged run's staged parts are removed, after it; and the first run's commit,
/// which creates the table.
const S3_KILLS: &[crate::delta::Kill] = {
    use crate::delta::{first, kill, EVERY, MERGE};
    &[
        kill(&["before-commit:1"], EVERY),
        kill(&["delta-data-put:1"], MERGE),
        kill(&["delta-log-put:1"], EVERY),
        kill(&["delta-log-written:1"], EVERY),
        kill(&["unstage:1"], MERGE),
        kill(&["after-commit:1"], EVERY),
        first(&["delta-log-written:1"], EVERY),
    ]
};

/// kill -9 at each point of [`S3_KILLS`] of a Delta run into moto S3, in append, replace and
/// merge mode (the three side by side), then a run to the end once the dead worker's lease
/// ran out: the table, read from the store by the `deltalake` package and Polars, has one
/// version per completed run and its newest version every id once (once per run in append
/// mode; with the mock's current values in merge mode); no staged part or checkpoint is left;
/// after `vacuum --retain 0s` the table's prefix holds exactly the newest version's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_at_each_commit_point_into_s3_leaves_each_run_in_the_table_once() {
    let Some(s3) = S3::start().await else { return };
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(600).await;
    let options = s3.delta_options();
    let (s3, f, python, options) = (&s3, &f, python.as_str(), options.as_str());
    // The modes side by side, each on a thread of its own: most of the time is spent waiting
    // for leases to run out and for processes to end.
    let one_mode = |mode: &'static str| async move {
        let client = &reqwest::Client::new();
        for (n, kill) in S3_KILLS.iter().enumerate().filter(|(_, kill)| kill.modes.contains(&mode)) {
            let when = if kill.first { "its first run" } else { "a later run" };
            let what = format!("{mode} into S3, killed in {when} at {}", kill.points.join(" then "));
            let name = format!("k_{mode}_{n}");
            let key = if mode == "merge" { "primary_key = [\"id\"]\n" } else { "" };
            let toml = format!(
                "name = \"{name}\"\n[request]\nurl = \"{{base}}/offset\"\n[records]\npath = \"$.items[*]\"\n\
                 [pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n{}",
                s3.output(
                    "exports",
                    &format!(
                        "format = \"delta\"\nmode = \"{mode}\"\n{key}rows_per_file = 200\n\
                         checkpoint_interval = \"10ms\"\nlease_ttl = \"1s\"\n"
                    )
                )
            );
            let path = f.dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, toml.replace("{base}", &f.server.url())).unwrap();
            let job = path.to_str().unwrap();
            if !kill.first {
                let out = run(&["run", job, "-q"]);
                assert!(out.status.success(), "{what}: the first run: {}", text(&out));
                if mode == "merge" {
                    let touch = format!("{}/_admin/touch?ids={},{}", f.server.url(), 20 + n, 300 + n);
                    assert!(client.post(touch).send().await.unwrap().status().is_success());
                }
            }
            for point in kill.points {
                let crashed = harvest_s3(&["run", job, "-q"], &[("HARVEST_FAILPOINT", point)]).output().unwrap();
                assert!(text(&crashed).contains(&format!("failpoint {point}: aborting")), "{what}: {}", text(&crashed));
                // The dead worker's lease runs out before the next run takes it.
                tokio::time::sleep(Duration::from_millis(1200)).await;
            }
            let rerun = run(&["run", job, "-q"]);
            assert!(rerun.status.success(), "{what}: {}", text(&rerun));

            let prefix = format!("exports/{name}/");
            let keys: Vec<String> =
                s3.keys(&prefix).into_iter().map(|(key, _)| key[prefix.len()..].to_string()).collect();
            let manifests = keys.iter().filter(|key| key.starts_with("_harvest/runs/")).count();
            assert!(!keys.iter().any(|key| key.starts_with("_harvest/staged/")), "{what}: staged parts left: {keys:?}");
            assert!(!keys.iter().any(|key| key.contains("checkpoint")), "{what}: a checkpoint left: {keys:?}");
            let uri = format!("s3://{BUCKET}/exports/{name}");
            let versions = crate::delta::versions_at(python, &uri, &format!("harvest/{name}"), options);
            let current = match mode {
                "merge" => Some(crate::delta::current_rows(client, &f.server.url()).await),
                _ => None,
            };
            crate::delta::recovered(&what, mode, &versions, manifests, 600, current.as_deref());

            let vacuum = run(&["vacuum", job, "--retain", "0s", "-q"]);
            assert!(vacuum.status.success(), "{what}: {}", text(&vacuum));
            let mut left: Vec<String> = s3
                .keys(&prefix)
                .into_iter()
                .map(|(key, _)| key[prefix.len()..].to_string())
                .filter(|key| !key.starts_with('_'))
                .collect();
            left.sort();
            assert_eq!(left, crate::delta::files(versions.last().unwrap()), "{what}: after vacuum");
        }
    };
    std::thread::scope(|scope| {
        for mode in crate::delta::EVERY {
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(one_mode(mode));
            });
        }
    });
}

/// A worker frozen (SIGSTOP) between its run's manifest and its commit for longer than
/// lease_ttl: another worker takes its lease over, commits the frozen worker's run, then runs
/// and commits its own (replace mode). The frozen worker, thawed, never commits: the table has
/// one version per run, the newest every id once (fails when neither the lease check before a
/// commit nor the table's `txn` for the job stops it: checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_before_its_commit_never_commits_after_its_lease_was_taken() {
    let Some(s3) = S3::start().await else { return };
    let Some(python) = python_with("deltalake") else { return };
    let f = Fixture::new(300).await;
    let job = job(&f, &s3, "frozen", "[partitions]\ntenant = [\"a\"]\n", "format = \"delta\"\nlease_ttl = \"1s\"\n");
    let frozen = harvest_s3(&["run", &job, "-q"], &[("HARVEST_FAILPOINT", "before-commit:1:stop")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = frozen.id().to_string();
    let stopped = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T'))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stopped() {
        assert!(Instant::now() < deadline, "the worker never reached its commit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past its lease_ttl, another worker takes the lease over and finishes both runs.
    let mut other;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        other = run(&["run", &job]);
        if other.status.code() != Some(3) || Instant::now() > deadline {
            break;
        }
    }
    assert!(other.status.success(), "{}", text(&other));
    assert!(text(&other).contains("took over the lease"), "{}", text(&other));
    let thaw = Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(thaw.success());
    let thawed = frozen.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&thawed.stderr);
    assert!(said.contains("failpoint before-commit:1: going on"), "{said}");

    let options = s3.delta_options();
    let versions =
        crate::delta::versions_at(&python, &format!("s3://{BUCKET}/exports/frozen"), "harvest/frozen", &options);
    let manifests = s3.keys("exports/frozen/_harvest/runs/").len();
    assert_eq!(manifests, 2, "the frozen worker's run and the other's");
    crate::delta::recovered("a frozen worker thawed", "replace", &versions, manifests, 300, None);
}
