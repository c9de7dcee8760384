//! Shards: one run split among N workers writing into one output folder. The union of every
//! shard's parts holds each id once, read through the row ranges of every shard's manifest;
//! the server's log shows no request made twice (so no page fetched by two shards); a shard
//! killed with SIGKILL and started again finishes its share exactly; and the names, exit codes
//! and replace-mode rules hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use harvest::job::{self, Env, Overrides};
use harvest::run::{self, RunOptions, RunSummary};
use harvest::shard::{Shard, ShardPlan};
use serde_json::Value;

use crate::support::{one_to, part_files, Fixture};

/// Run every shard of `toml` side by side, in this process, each with a plan of its own.
async fn run_shards(f: &Fixture, toml: &str, count: u32, run_id: &str) -> Vec<RunSummary> {
    let path = f.job(toml);
    let text = std::fs::read_to_string(&path).unwrap();
    let runs = (0..count).map(|index| {
        let shard = ShardPlan { shard: Shard { index, count }, run_id: Some(run_id.to_string()) };
        let overrides = Overrides { output_dir: Some(f.out()), shard: Some(shard), ..Default::default() };
        let plan = job::parse(&path, &text, &Env::default(), &overrides).expect("a valid job");
        tokio::spawn(run::run(Arc::new(plan), RunOptions::default()))
    });
    let mut summaries = Vec::new();
    for joined in futures::future::join_all(runs).await {
        summaries.push(joined.unwrap().unwrap_or_else(|e| panic!("a shard failed: {e}")));
    }
    summaries
}

/// Each partition's ids over every manifest in the job's folder, in each part's row order
/// (shards in name order), read through the row ranges the manifests give.
pub(crate) fn ids_by_partition(root: &Path) -> BTreeMap<String, Vec<u64>> {
    ids_of_run(root, "")
}

/// [`ids_by_partition`] over the manifests of one run (those whose names start with `run`).
pub(crate) fn ids_of_run(root: &Path, run: &str) -> BTreeMap<String, Vec<u64>> {
    let mut manifests: Vec<_> = std::fs::read_dir(root.join("_harvest/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(run))
        .collect();
    manifests.sort();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for manifest in manifests {
        let manifest: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        for part in manifest["parts"].as_array().unwrap() {
            let ids_in_part = crate::resume::part_ids(&root.join(part["file"].as_str().unwrap()));
            for slice in part["partitions"].as_array().unwrap() {
                let rows = |i: usize| slice["rows"][i].as_u64().unwrap() as usize;
                let ids = out.entry(slice["partition"].as_str().unwrap().to_string()).or_default();
                ids.extend_from_slice(&ids_in_part[rows(0)..rows(1)]);
            }
        }
    }
    out
}

/// `ids` is exactly 1..=n in order, or a short account of how it is not.
pub(crate) fn exact(ids: &[u64], n: u64) -> Result<(), String> {
    if ids == one_to(n).as_slice() {
        return Ok(());
    }
    let set: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    let missing = (1..=n).filter(|id| !set.contains(id)).count();
    let first_off = ids.iter().zip(1..).position(|(id, want)| *id != want);
    Err(format!("{} ids, {} distinct, {missing} missing, first out of place at {first_off:?}", ids.len(), set.len()))
}

/// The mock's requests under `prefix`, each URI with how often it was asked.
pub(crate) fn asked_twice(f: &Fixture, prefix: &str) -> Vec<(String, usize)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for request in f.server.stats.log().iter().filter(|s| s.uri.starts_with(prefix)) {
        *seen.entry(request.uri.clone()).or_default() += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_id_once_across_1_2_3_and_7_shards_and_no_page_asked_twice() {
    let f = Fixture::new(2_000).await;
    for count in [1u32, 2, 3, 7] {
        // Many partitions: each whole partition goes to the shard its key hashes to.
        let tenants: Vec<String> = (0..20).map(|t| format!("\"n{count}t{t}\"")).collect();
        let many = format!(
            "name = \"many-{count}\"\n[request]\nurl = \"{{base}}/t/{{tenant}}/offset\"\n[records]\npath = \
             \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 250\ntotal = \"$.total\"\n\
             [partitions]\ntenant = [{}]\n[limits]\nconcurrency = 8\n",
            tenants.join(", ")
        );
        let summaries = run_shards(&f, &many, count, &format!("many-{count}")).await;
        let runs: Vec<&str> = summaries.iter().map(|s| s.run.as_str()).collect();
        assert!(runs.iter().all(|r| *r == runs[0]), "{count} shards share one run name: {runs:?}");
        let by_partition = ids_by_partition(&f.out().join(format!("many-{count}")));
        assert_eq!(by_partition.len(), 20, "{count} shards: every partition harvested");
        for (partition, ids) in &by_partition {
            assert_eq!(
                exact(ids, 2_000),
                Ok(()),
                "{count} shards: partition {partition} holds every id once, in order"
            );
        }
        assert_eq!(asked_twice(&f, &format!("/t/n{count}t")), vec![], "{count} shards: a request made twice");
        let owners: Vec<usize> = summaries.iter().map(|s| s.partitions.len()).collect();
        assert_eq!(owners.iter().sum::<usize>(), 20, "{count} shards: each partition has one owner: {owners:?}");

        // One large partition with a total, from a server that caps its pages at 70 records
        // (asked for 100): its pages are dealt out among the shards.
        let large = format!(
            "name = \"large-{count}\"\n[request]\nurl = \"{{base}}/t/big{count}/offset?max_page_size=70\"\n\
             [records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 100\n\
             total = \"$.total\"\n[limits]\nconcurrency = 8\n"
        );
        let summaries = run_shards(&f, &large, count, &format!("large-{count}")).await;
        let mut ids: Vec<u64> = ids_by_partition(&f.out().join(format!("large-{count}"))).remove("").unwrap();
        ids.sort_unstable();
        assert_eq!(exact(&ids, 2_000), Ok(()), "{count} shards: the large partition holds every id once");
        assert_eq!(asked_twice(&f, &format!("/t/big{count}/")), vec![], "{count} shards: a request made twice");
        if count > 1 {
            let pages: Vec<u64> = summaries.iter().map(|s| s.pages).collect();
            assert!(pages.iter().all(|&p| p > 1), "{count} shards: every shard took pages of it: {pages:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn page_numbers_are_dealt_out_and_a_shard_past_the_end_finishes_empty() {
    let f = Fixture::new(250).await;
    // 3 pages of 100 for 7 shards; the server answers 404 past the last page (as DRF does).
    let toml = "name = \"pages\"\n[request]\nurl = \"{base}/page?past_end=404\"\n[records]\npath = \"$.data[*]\"\n\
                [pagination]\nkind = \"page\"\npage_size = 100\ntotal_pages = \"$.total_pages\"\n";
    let summaries = run_shards(&f, toml, 7, "pages").await;
    let records: Vec<u64> = summaries.iter().map(|s| s.records).collect();
    assert_eq!(records, [100, 100, 50, 0, 0, 0, 0], "page p to shard p - 1");
    let mut ids = ids_by_partition(&f.out().join("pages")).remove("").unwrap();
    ids.sort_unstable();
    assert_eq!(exact(&ids, 250), Ok(()));
    assert_eq!(asked_twice(&f, "/page"), vec![]);
    assert_eq!(f.requests("/page"), 7, "each shard asked for its first page and no more");
    let manifests = std::fs::read_dir(f.out().join("pages/_harvest/runs")).unwrap().count();
    assert_eq!(manifests, 7, "a shard with no records still writes its manifest");
}

/// Shards started together, where most have no page: a shard that finishes while the others
/// are writing their manifests lists the manifests' folder mid-rename. Twenty times over, none
/// fails, and every id is there once.
#[tokio::test(flavor = "multi_thread")]
async fn shards_that_finish_together_never_trip_over_each_other() {
    for round in 0..20 {
        let f = Fixture::new(150).await;
        let toml = "name = \"race\"\n[request]\nurl = \"{base}/page?past_end=404\"\n[records]\npath = \"$.data[*]\"\n\
                    [pagination]\nkind = \"page\"\npage_size = 100\ntotal_pages = \"$.total_pages\"\n";
        let summaries = run_shards(&f, toml, 6, "race").await;
        assert_eq!(summaries.iter().map(|s| s.records).sum::<u64>(), 150, "round {round}");
        let mut ids = ids_by_partition(&f.out().join("race")).remove("").unwrap();
        ids.sort_unstable();
        assert_eq!(exact(&ids, 150), Ok(()), "round {round}");
    }
}

pub(crate) fn harvest(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(args).stdin(Stdio::null());
    for name in ["HARVEST_SHARD", "HARVEST_RUN_ID", "AWS_BATCH_JOB_ID", "SLURM_ARRAY_JOB_ID", "GITHUB_RUN_ID"] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied()).output().expect("harvest runs")
}

pub(crate) fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_from_scheduler_variables_and_the_rules_of_a_run_id() {
    let f = Fixture::new(600).await;
    let job = f.job(
        "name = \"rules\"\n[request]\nurl = \"{base}/t/{tenant}/offset\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\n\
         [partitions]\ntenant = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n[output]\nmode = \"replace\"\n",
    );
    let job = job.to_str().unwrap();
    let out = f.out();
    let out = out.to_str().unwrap();
    let run = |index: &str, vars: &[(&str, &str)]| {
        let mut all = vec![("JOB_COMPLETION_INDEX", index), ("HARVEST_RUN_ID", "k8s-job-1")];
        all.extend_from_slice(vars);
        harvest(&["run", job, "--output-dir", out, "--shards", "2", "-q"], &all)
    };
    // Shard 0 of a first run, from the Kubernetes index; shard 1 not yet.
    let first = run("0", &[]);
    assert!(first.status.success(), "{}", text(&first));
    let status = harvest(&["status", job, "--output-dir", out], &[]);
    let status = text(&status);
    assert!(status.contains("run id k8s-job-1, 2 shards): 1 of 2 shards complete"), "{status}");
    assert!(status.contains("shard 1 of 2: not started"), "{status}");
    // Finalize refuses an incomplete run.
    let early = harvest(&["finalize", job, "--output-dir", out], &[]);
    assert_eq!(early.status.code(), Some(1), "{}", text(&early));
    assert!(text(&early).contains("shard(s) 1 of 2 have no manifest"), "{}", text(&early));
    // Shard 0 again does nothing.
    let again = run("0", &[]);
    assert!(again.status.success() && text(&again).contains("nothing to do"), "{}", text(&again));
    let requests = f.server.stats.requests();
    // The same run id with another shard count is refused.
    let other = harvest(&["run", job, "--output-dir", out, "--shard", "1/3"], &[("HARVEST_RUN_ID", "k8s-job-1")]);
    assert_eq!(other.status.code(), Some(2), "{}", text(&other));
    assert!(text(&other).contains("was started as 2 shard(s)"), "{}", text(&other));
    // Shards past the count, and many shards without a run id, are refused.
    for (args, vars, says) in [
        (vec!["--shard", "2/2"], vec![("HARVEST_RUN_ID", "x")], "0 <= I < N"),
        (vec!["--shard", "0/2"], vec![], "run id"),
        (vec!["--shards", "2"], vec![("HARVEST_RUN_ID", "x")], "JOB_COMPLETION_INDEX"),
    ] {
        let mut all = vec!["run", job, "--output-dir", out];
        all.extend(args.iter().copied());
        let refused = harvest(&all, &vars);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {}", text(&refused));
        assert!(text(&refused).contains(says), "{args:?}: {}", text(&refused));
    }
    assert_eq!(f.server.stats.requests(), requests, "nothing asked by a shard with nothing to do or refused");
    // Shard 1 from Slurm's variables (its array counts from 1): the run completes.
    let slurm = harvest(
        &["run", job, "--output-dir", out, "--shards", "2", "-q"],
        &[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_MIN", "1"), ("HARVEST_RUN_ID", "k8s-job-1")],
    );
    assert!(slurm.status.success(), "{}", text(&slurm));
    let by_partition = ids_by_partition(&f.out().join("rules"));
    assert_eq!(by_partition.len(), 5);
    assert!(by_partition.values().all(|ids| exact(ids, 600).is_ok()));
    let status = text(&harvest(&["status", job, "--output-dir", out], &[]));
    assert!(status.contains(" 3,000 records in 30 pages"), "the last completed run is the shards' sum: {status}");
    let first_parts = part_files(&f.out().join("rules"));
    assert!(first_parts.iter().all(|p| p.to_string_lossy().contains("of2-")), "{first_parts:?}");

    // A second run replaces the first only once all its shards completed.
    let second = |index: &str| {
        let job_id = format!("batch-2:{index}");
        harvest(
            &["run", job, "--output-dir", out, "--shards", "2", "-q"],
            &[("AWS_BATCH_JOB_ARRAY_INDEX", index), ("AWS_BATCH_JOB_ID", &job_id)],
        )
    };
    std::thread::sleep(Duration::from_millis(1100));
    let half = second("1");
    assert!(half.status.success(), "{}", text(&half));
    let now = part_files(&f.out().join("rules"));
    assert!(first_parts.iter().all(|p| now.contains(p)), "the first run's parts stay while the second is half done");
    let rest = second("0");
    assert!(rest.status.success(), "{}", text(&rest));
    let last = part_files(&f.out().join("rules"));
    assert!(last.iter().all(|p| !first_parts.contains(p)), "the last shard to finish removed the first run's parts");
    let finalize = harvest(&["finalize", job, "--output-dir", out], &[]);
    assert!(finalize.status.success(), "{}", text(&finalize));
    assert!(text(&finalize).contains("removed 0 part file(s)"), "{}", text(&finalize));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_and_started_again_finishes_its_share_exactly() {
    let f = Fixture::slow(3_000, 5).await;
    let job = f.job(
        "name = \"killed\"\n[request]\nurl = \"{base}/t/{tenant}/offset\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n\
         [partitions]\ntenant = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\n[limits]\nconcurrency = 3\n\
         [output]\ncheckpoint_interval = \"20ms\"\nrows_per_file = 700\n",
    );
    let (job, out) = (job.to_str().unwrap().to_string(), f.out().to_str().unwrap().to_string());
    let start = |index: u32| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
        command
            .args(["run", &job, "--output-dir", &out, "--shard", &format!("{index}/3"), "--run-id", "r1", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("harvest starts")
    };
    let mut others = [start(0), start(2)];
    let mut victim = start(1);
    // Shard 1 has made 20 pages of its records durable.
    let checkpoint = f.out().join("killed/_harvest/checkpoint-1of3.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let written =
            std::fs::read(&checkpoint).ok().and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()).map(|c| {
                c["position"]["done"]["records"].as_u64().unwrap_or(0) + {
                    c["position"]["active"]
                        .as_object()
                        .map_or(0, |a| a.values().filter_map(|f| f["records"].as_u64()).sum())
                }
            });
        if written.is_some_and(|n| n >= 1_000) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "shard 1 wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A second worker for the same shard is refused while the first holds it.
    let second = harvest(&["run", &job, "--output-dir", &out, "--shard", "1/3", "--run-id", "r1"], &[]);
    assert_eq!(second.status.code(), Some(3), "{}", text(&second));
    assert!(victim.try_wait().unwrap().is_none(), "shard 1 ended before the kill");
    victim.kill().unwrap();
    victim.wait().unwrap();
    for child in others.iter_mut() {
        let status = child.wait().unwrap();
        assert!(status.success(), "another shard failed");
    }
    let status = text(&harvest(&["status", &job, "--output-dir", &out], &[]));
    assert!(status.contains("2 of 3 shards complete") && status.contains("shard 1 of 3: unfinished"), "{status}");
    let resumed = start(1).wait_with_output().unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed));
    let by_partition = ids_by_partition(&f.out().join("killed"));
    assert_eq!(by_partition.len(), 6);
    for (partition, ids) in &by_partition {
        assert_eq!(exact(ids, 3_000), Ok(()), "partition {partition}");
    }
    // The restart went on from shard 1's checkpoint: what it asks again is at most what was
    // in flight or not yet checkpointed at the kill, not the 20 pages made durable.
    let pages = 6 * 3_000 / 50;
    let requests = f.server.stats.requests();
    assert!(requests <= pages + 10, "{requests} requests for {pages} pages");
    let status = text(&harvest(&["status", &job, "--output-dir", &out], &[]));
    assert!(status.contains("3 shards): complete"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incremental_marks_of_every_shard_are_kept_and_sent_by_the_next_run() {
    let f = Fixture::new(400).await;
    let toml = "name = \"inc\"\n[request]\nurl = \"{base}/t/{tenant}/offset\"\n[records]\npath = \"$.items[*]\"\n\
                [pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n\
                [partitions]\ntenant = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]\n\
                [incremental]\nfield = \"$.updated_at\"\nparam = \"updated_since\"\nstart = \"2024-01-01T00:00:00Z\"\n";
    let first = run_shards(&f, toml, 2, "sync-1").await;
    let root = f.out().join("inc");
    let all = ids_of_run(&root, &first[0].run);
    assert_eq!(all.len(), 6);
    assert!(all.values().all(|ids| exact(ids, 400).is_ok()));
    for tag in ["0of2", "1of2"] {
        assert!(root.join(format!("_harvest/state-{tag}.json")).exists(), "shard {tag} keeps its partitions' marks");
    }
    let touched = reqwest::Client::new().post(format!("{}/_admin/touch?ids=5,17", f.server.url())).send().await;
    assert!(touched.unwrap().status().is_success());
    // The next run, as 3 shards: each partition sends the mark its owner kept last time.
    let second = run_shards(&f, toml, 3, "sync-2").await;
    let changed = ids_of_run(&root, &second[0].run);
    let expected: BTreeMap<String, Vec<u64>> = all.keys().map(|k| (k.clone(), vec![5, 17])).collect();
    assert_eq!(changed, expected, "every partition fetched only what changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_job_s_concurrency_is_shared_among_its_shards() {
    let f = Fixture::slow(600, 20).await;
    // 4 requests in flight for the whole job: 2 shards take 2 each, never 4 each.
    let toml = "name = \"shared\"\n[request]\nurl = \"{base}/t/{tenant}/offset\"\n[records]\npath = \"$.items[*]\"\n\
                [pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n\
                [partitions]\ntenant = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\"]\n\
                [limits]\nconcurrency = 4\n";
    run_shards(&f, toml, 2, "shared").await;
    let most = f.server.stats.max_in_flight();
    assert!(most <= 4, "{most} requests in flight at once over 2 shards of a job with concurrency = 4");
    assert!(most >= 3, "both shards ran side by side ({most} at most in flight)");
}

#[test]
fn a_rotating_refresh_token_cannot_be_shared_by_several_shards() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "name = \"rotating\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"none\"\n[auth]\nkind = \"oauth2_refresh_token\"\ntoken_url = \"http://127.0.0.1:9/token\"\n\
         client_id = \"c\"\nrefresh_token = \"${REFRESH}\"\n",
    )
    .unwrap();
    let job = job.to_str().unwrap();
    let vars = [("REFRESH", "r-1")];
    let two = harvest(&["run", job, "--shard", "0/2", "--run-id", "x"], &vars);
    assert_eq!(two.status.code(), Some(2), "{}", text(&two));
    assert!(text(&two).contains("cannot run as 2 shards"), "{}", text(&two));
    assert!(!text(&two).contains("r-1"), "{}", text(&two));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_shard_of_dealt_pages_resumes_exactly_from_inside_a_capped_span() {
    let f = Fixture::slow(3_000, 10).await;
    // One partition dealt out among 2 shards; the server serves 70 of the 100 asked, so each
    // span takes two requests, and an interrupt may land between them.
    let toml =
        "name = \"cut\"\n[request]\nurl = \"{base}/offset?max_page_size=70\"\n[records]\npath = \"$.items[*]\"\n\
                [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\n[limits]\nconcurrency = 4\n\
                [output]\ncheckpoint_interval = \"5ms\"\n";
    let path = f.job(toml);
    let text = std::fs::read_to_string(&path).unwrap();
    let plan = |index: u32| {
        let shard = ShardPlan { shard: Shard { index, count: 2 }, run_id: Some("cut".into()) };
        let overrides = Overrides { output_dir: Some(f.out()), shard: Some(shard), ..Default::default() };
        Arc::new(job::parse(&path, &text, &Env::default(), &overrides).unwrap())
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions { cancel: cancel.clone(), ..RunOptions::default() };
    let first = tokio::spawn(run::run(plan(0), options));
    crate::support::until_requests(&f.server, 9).await;
    cancel.cancel();
    let stopped = first.await.unwrap();
    assert!(matches!(stopped, Err(harvest::error::Error::Interrupted { .. })), "{stopped:?}");
    for index in [0, 1] {
        run::run(plan(index), RunOptions::default()).await.unwrap();
    }
    let mut ids = ids_by_partition(&f.out().join("cut")).remove("").unwrap();
    ids.sort_unstable();
    assert_eq!(exact(&ids, 3_000), Ok(()));
}
