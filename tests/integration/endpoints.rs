//! Several endpoints: partitions from a file or another job's output, detail requests one by
//! one or in batches, records checked against what was asked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{one_to, read_records, Fixture};

fn harvest(job: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never", "-q"]);
    command
}

fn checkpoint(root: &Path) -> Option<Value> {
    let bytes = std::fs::read(root.join("_harvest/checkpoint.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A deterministic shuffle of `1..=n`.
fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut ids = one_to(n);
    let mut state = seed;
    for i in (1..ids.len()).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ids.swap(i, ((state >> 33) % (i as u64 + 1)) as usize);
    }
    ids
}

/// The detail path's id in a logged request.
fn item_id(uri: &str) -> Option<u64> {
    uri.strip_prefix("/items/")?.split('?').next()?.parse().ok()
}

/// 10,000 ids from a CSV (shuffled, some repeated), one detail request each, killed with
/// SIGKILL three times: every record once, no id done before a kill asked again after it,
/// and the checkpoint under 64 KiB throughout.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_partitions_from_a_csv_resume_exactly_after_kill_9_with_a_small_checkpoint() {
    const IDS: u64 = 10_000;
    let f = Fixture::slow(IDS, 2).await;
    let order = shuffled(IDS, 7);
    let mut csv = String::from("name,id\n");
    for (i, id) in order.iter().enumerate() {
        csv.push_str(&format!("n{id},{id}\n"));
        if i % 200 == 0 {
            // A repeat, far from the first: asked once all the same.
            csv.push_str(&format!("again,{}\n", order[i / 2]));
        }
    }
    std::fs::write(f.dir.path().join("ids.csv"), csv).unwrap();
    let job = f.job(
        "name = \"detail\"\n[request]\nurl = \"{base}/items/{id}\"\n[records]\npath = \"$\"\n\
         [pagination]\nkind = \"none\"\n[limits]\nconcurrency = 8\n\
         [output]\ncheckpoint_interval = \"30ms\"\n[partitions]\nid = { file = \"ids.csv\", column = \"id\" }\n",
    );
    let (out, root) = (f.out(), f.out().join("detail"));

    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (largest, watching, path) = (largest.clone(), watching.clone(), root.join("_harvest/checkpoint.json"));
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(meta) = std::fs::metadata(&path) {
                    largest.fetch_max(meta.len(), std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut done_before: BTreeSet<u64> = BTreeSet::new();
    let mut asked_after: Vec<u64> = Vec::new();
    for at in [1_500u64, 4_000, 7_000] {
        let seen = f.server.stats.log().len();
        let mut child = harvest(&job, &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while f.server.stats.requests() < at {
            assert!(child.try_wait().unwrap().is_none(), "the run ended before {at} requests");
            assert!(std::time::Instant::now() < deadline, "the run did not reach {at} requests");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        asked_after.extend(f.server.stats.log()[seen..].iter().filter_map(|s| item_id(&s.uri)));
        // What this checkpoint says is done is never asked for again.
        let saved = checkpoint(&root).expect("a checkpoint after a kill");
        for range in saved["position"]["done"]["ranges"].as_array().unwrap() {
            let (from, to) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
            done_before.extend((from..to).map(|index| order[index as usize]));
        }
        assert!(done_before.len() as u64 >= at / 2, "{} done by request {at}", done_before.len());
    }
    let seen = f.server.stats.log().len();
    let status = harvest(&job, &out).status().unwrap();
    assert!(status.success(), "the last run completes");
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let again: Vec<u64> = f.server.stats.log()[seen..].iter().filter_map(|s| item_id(&s.uri)).collect();
    let repeated: Vec<&u64> = again.iter().filter(|id| done_before.contains(id)).collect();
    assert!(repeated.is_empty(), "ids done before a kill were asked again: {:?}", &repeated[..repeated.len().min(10)]);
    assert!(!asked_after.is_empty() && !again.is_empty());
    // A kill costs what was in flight and what was written since the last checkpoint.
    let asked = f.server.stats.requests();
    assert!(asked <= IDS + 3 * 500, "{asked} requests for {IDS} ids and 3 kills");

    let mut ids: Vec<u64> = read_records(&root).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len() as u64, IDS, "every record once");
    ids.sort();
    assert_eq!(ids, one_to(IDS));
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(largest > 0 && largest < 64 * 1024, "the checkpoint reached {largest} bytes");
}

/// Ids in batches of 100 through `/items?ids=...`, some of which the server does not have:
/// those are reported (log, report, manifest) and the rest harvested exactly; the run exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn batches_of_a_hundred_ids_report_the_ids_not_returned_and_harvest_the_rest_exactly() {
    let f = Fixture::new(2_000).await;
    // 1..=2000 exist; 2001..=2150 do not, and the file holds some as JSON strings.
    let mut lines = String::new();
    for id in 1..=2_150u64 {
        match id % 3 {
            0 => lines.push_str(&format!("{{\"id\":\"{id}\"}}\n")),
            _ => lines.push_str(&format!("{{\"id\":{id}}}\n")),
        }
    }
    std::fs::write(f.dir.path().join("ids.ndjson"), lines).unwrap();
    let job = f.job(
        "name = \"batch\"\n[request]\nurl = \"{base}/items?ids={id}\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"none\"\n\
         [partitions]\nid = { file = \"ids.ndjson\", field = \"$.id\", batch = 100, join = \",\" }\n\
         [partitions.check]\nfield = \"$.id\"\n",
    );
    let output = harvest(&job, &f.out()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ids not returned are a warning, not a failure: {stderr}");
    assert!(stderr.contains("150 ids asked but not returned: 2001, 2002, 2003"), "{stderr}");
    assert_eq!(f.requests("/items"), 22, "2,150 ids in batches of 100");
    let root = f.out().join("batch");
    let mut ids: Vec<u64> = read_records(&root).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, one_to(2_000));
    let manifest = manifest(&root);
    let missing: Vec<&str> = manifest["missing"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let expected: Vec<String> = (2_001..=2_150u64).map(|id| id.to_string()).collect();
    assert_eq!(missing, expected, "the manifest lists every id not returned");
    assert_eq!(manifest["report"]["missing"]["count"], 150);
}

/// A detail request answered 404 counts its id as missing; the others are harvested.
#[tokio::test(flavor = "multi_thread")]
async fn a_detail_request_answered_404_is_a_missing_id_not_a_failure() {
    let f = Fixture::new(50).await;
    std::fs::write(f.dir.path().join("ids.txt"), "3\n77\n5\n\n3\n90\n").unwrap();
    let job = f.job(
        "name = \"one\"\n[request]\nurl = \"{base}/items/{id}\"\n[records]\npath = \"$\"\n\
         [pagination]\nkind = \"none\"\n[partitions]\nid = { file = \"ids.txt\" }\n",
    );
    let output = harvest(&job, &f.out()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ids: Vec<u64> = read_records(&f.out().join("one")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>(), [3, 5].iter().collect());
    assert_eq!(ids.len(), 2, "the repeated 3 is asked once");
    let manifest = manifest(&f.out().join("one"));
    assert_eq!(manifest["missing"], serde_json::json!(["77", "90"]));
    assert_eq!(manifest["stops"]["not_found"], 2);
}

fn manifest(root: &Path) -> Value {
    let mut manifests: Vec<_> =
        std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().map(|e| e.path()).collect();
    manifests.sort();
    serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap()
}

/// Parents (12 records of `/offset`), then 7 children of each through `/t/{repo}/offset`, as a
/// two-job pipeline with `include`: every child once, in its parent's order, each with its
/// parent's fields; the child reads the parent's NDJSON, and its Parquet.
#[tokio::test(flavor = "multi_thread")]
async fn a_two_job_pipeline_carries_parent_fields_into_every_child_from_ndjson_and_parquet() {
    let f = Fixture::new(40).await;
    for format in ["ndjson", "parquet"] {
        let dir = f.dir.path().join(format);
        std::fs::create_dir_all(&dir).unwrap();
        let base = f.server.url();
        std::fs::write(
            dir.join("repos.toml"),
            format!(
                "name = \"repos\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n\
                 [pagination]\nkind = \"offset\"\npage_size = 5\ntotal = \"$.total\"\nmax_records = 12\n\
                 [output]\nformat = \"{format}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("issues.toml"),
            format!(
                "name = \"issues\"\n[request]\nurl = \"{base}/t/{{repo}}/offset\"\n[records]\npath = \"$.items[*]\"\n\
                 [pagination]\nkind = \"offset\"\npage_size = 5\ntotal = \"$.total\"\nmax_records = 7\n\
                 [partitions]\nrepo = {{ from = \"repos\", field = \"$.id\", include = {{ repo_id = \"$.id\", repo_name = \"$.name\" }} }}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("github.toml"),
            "name = \"github\"\n[[job]]\nfile = \"issues.toml\"\nafter = [\"repos\"]\n[[job]]\nfile = \"repos.toml\"\n",
        )
        .unwrap();
        let out = dir.join("out");
        let output = harvest(&dir.join("github.toml"), &out).output().unwrap();
        assert!(output.status.success(), "{format}: {}", String::from_utf8_lossy(&output.stderr));

        let parents: BTreeMap<u64, String> = match format {
            "ndjson" => read_records(&out.join("repos"))
                .iter()
                .map(|r| (r["id"].as_u64().unwrap(), r["name"].as_str().unwrap().to_string()))
                .collect(),
            _ => (1..=12).map(|id| (id, String::new())).collect(),
        };
        assert_eq!(parents.keys().copied().collect::<Vec<_>>(), one_to(12), "{format}");
        let children = read_records(&out.join("issues"));
        assert_eq!(children.len(), 12 * 7, "{format}: every child once");
        let mut by_parent: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for child in &children {
            let parent = &child["_parent"];
            let id = parent["repo_id"].as_u64().unwrap_or_else(|| panic!("{format}: no parent in {child}"));
            assert!(parent["repo_name"].as_str().unwrap().starts_with(&format!("Ærøskøbing #{id} ")), "{child}");
            if format == "ndjson" {
                assert_eq!(parent["repo_name"].as_str().unwrap(), parents[&id]);
            }
            assert_eq!(
                child.as_object().unwrap().keys().next_back().unwrap(),
                "_parent",
                "appended after the record's own"
            );
            by_parent.entry(id).or_default().push(child["id"].as_u64().unwrap());
        }
        assert_eq!(by_parent.keys().copied().collect::<Vec<_>>(), one_to(12), "{format}");
        assert!(by_parent.values().all(|ids| ids == &one_to(7)), "{format}: {by_parent:?}");
        let state: Value = serde_json::from_slice(&std::fs::read(out.join("_pipelines/github.json")).unwrap()).unwrap();
        assert_eq!(state["jobs"]["repos"]["state"], "complete");
        assert_eq!(state["jobs"]["issues"]["records"], 84);
        assert!(state["finished_at"].is_string());
    }
    for parent in 1..=12 {
        assert_eq!(f.requests(&format!("/t/{parent}/offset")), 4, "two pages of each parent, for each format");
    }
}

/// A job that fails stops the jobs after it and not the others; the next run of the pipeline
/// takes it up: what completed is not run again, the rest runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_stops_its_dependents_not_the_others_and_the_next_run_takes_the_pipeline_up() {
    let f = Fixture::new(30).await;
    let dir = f.dir.path();
    let base = f.server.url();
    let job = |name: &str, path: &str, attempts: u32| {
        format!(
            "name = \"{name}\"\n[request]\nurl = \"{base}{path}\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 10\ntotal = \"$.total\"\n\
             [retry]\nmax_attempts = {attempts}\ninitial_backoff = \"10ms\"\n"
        )
    };
    std::fs::write(dir.join("a.toml"), job("a", "/t/a/offset", 1)).unwrap();
    // Each of its pages fails once (503), and it tries once.
    std::fs::write(dir.join("b.toml"), job("b", "/t/b/offset?flaky=1", 1)).unwrap();
    std::fs::write(dir.join("c.toml"), job("c", "/t/c/offset", 1)).unwrap();
    std::fs::write(dir.join("d.toml"), job("d", "/t/d/offset", 1)).unwrap();
    std::fs::write(
        dir.join("p.toml"),
        "[[job]]\nfile = \"c.toml\"\nafter = [\"b\"]\n[[job]]\nfile = \"a.toml\"\n[[job]]\nfile = \"b.toml\"\n\
         after = [\"a\"]\n[[job]]\nfile = \"d.toml\"\n",
    )
    .unwrap();
    let out = dir.join("out");
    let output = harvest(&dir.join("p.toml"), &out).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pipeline p did not complete"), "{stderr}");
    let state: Value = serde_json::from_slice(&std::fs::read(out.join("_pipelines/p.json")).unwrap()).unwrap();
    let states: Vec<(&str, &str)> =
        state["jobs"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v["state"].as_str().unwrap())).collect();
    assert_eq!(states, [("c", "blocked"), ("a", "complete"), ("b", "failed"), ("d", "complete")]);
    assert_eq!(state["jobs"]["b"]["exit"], 1);
    assert_eq!(state["jobs"]["c"]["by"], "b");
    assert_eq!(f.requests("/t/c/offset"), 0, "a blocked job asks nothing");

    // Tries twice now (retries are no part of what a resume must match).
    std::fs::write(dir.join("b.toml"), job("b", "/t/b/offset?flaky=1", 2)).unwrap();
    let output = harvest(&dir.join("p.toml"), &out).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!((f.requests("/t/a/offset"), f.requests("/t/d/offset")), (3, 3), "completed jobs are not run again");
    assert_eq!(f.requests("/t/c/offset"), 3, "c runs once b completed");
    assert_eq!(read_records(&out.join("b")).len(), 30, "b resumed and completed");
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["status", dir.join("p.toml").to_str().unwrap(), "--output-dir", out.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("pipeline p: run") && text.contains("complete at"), "{text}");
    assert!(text.contains("job c (") && text.contains("last completed run"), "{text}");
}

/// A job whose values come from a job with no complete run exits 1 naming the folder; a file
/// source that changed under an unfinished run refuses the resume (exit 2, --fresh).
#[tokio::test(flavor = "multi_thread")]
async fn a_source_that_is_not_there_or_changed_is_refused_clearly() {
    let f = Fixture::slow(3_000, 2).await;
    let child = f.job(
        "name = \"child\"\n[request]\nurl = \"{base}/items/{id}\"\n[records]\npath = \"$\"\n[pagination]\nkind = \"none\"\n\
         [partitions]\nid = { from = \"parents\", field = \"$.id\" }\n",
    );
    let output = harvest(&child, &f.out()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("job parents has no complete run in") && stderr.contains("parents"), "{stderr}");

    let ids: String = (1..=3_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(f.dir.path().join("ids.txt"), &ids).unwrap();
    let job = f.job(
        "name = \"detail\"\n[request]\nurl = \"{base}/items/{id}\"\n[records]\npath = \"$\"\n[pagination]\nkind = \"none\"\n\
         [output]\ncheckpoint_interval = \"20ms\"\n[partitions]\nid = { file = \"ids.txt\" }\n",
    );
    let mut running = harvest(&job, &f.out()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    crate::support::until_requests(&f.server, 500).await;
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(checkpoint(&f.out().join("detail")).is_some());
    std::fs::write(f.dir.path().join("ids.txt"), format!("{ids}3001\n")).unwrap();
    let output = harvest(&job, &f.out()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("(partitions differs)") && stderr.contains("--fresh"), "{stderr}");
}

/// Run harvest to its end under a small Python parent: its exit status and peak RSS in KiB.
/// (Spawned from the test process itself, its peak would count the test's memory: Linux keeps
/// the largest RSS of the image a process execs from.)
fn peak_rss(python: &str, command: &Command) -> (bool, u64) {
    let script = "import resource, subprocess, sys\n\
                  code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n\
                  print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let mut outer = Command::new(python);
    outer.args(["-c", script, command.get_program().to_str().unwrap()]).args(command.get_args());
    let output = outer.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let (code, peak) =
        text.trim().split_once(' ').unwrap_or_else(|| panic!("{text} {}", String::from_utf8_lossy(&output.stderr)));
    (code == "0", peak.parse().unwrap())
}

/// A million partitions from a file (one small page each, max_records = 1): the plan is read
/// lazily and ended partitions are kept as ranges, so the peak RSS stays under 100 MB and
/// within 10 % of a run of 100,000.
#[tokio::test(flavor = "multi_thread")]
async fn a_million_partitions_from_a_file_take_no_more_memory_than_a_hundred_thousand() {
    let Some(python) = crate::support::python_with("resource") else { return };
    let f = Fixture::new(100).await;
    let mut peaks = Vec::new();
    for count in [100_000u64, 1_000_000] {
        let values: String = (1..=count).map(|i| format!("k{i}\n")).collect();
        std::fs::write(f.dir.path().join(format!("k{count}.txt")), values).unwrap();
        let job = f.dir.path().join(format!("many{count}.toml"));
        std::fs::write(
            &job,
            format!(
                "name = \"many{count}\"\n[request]\nurl = \"{}/offset?tag={{k}}\"\n[records]\npath = \"$.items[*]\"\n\
                 [pagination]\nkind = \"offset\"\npage_size = 1\nmax_records = 1\n[limits]\nconcurrency = 64\n\
                 [output]\ncompression = \"zstd\"\n[partitions]\nk = {{ file = \"k{count}.txt\" }}\n",
                f.server.url()
            ),
        )
        .unwrap();
        let (complete, peak) = peak_rss(&python, &harvest(&job, &f.out()));
        assert!(complete, "{count} partitions");
        let manifest = manifest(&f.out().join(format!("many{count}")));
        assert_eq!(manifest["records"].as_u64(), Some(count));
        assert_eq!(manifest["stops"]["max_records"].as_u64(), Some(count));
        peaks.push(peak);
    }
    let (small, large) = (peaks[0] as f64, peaks[1] as f64);
    assert!(large < 100.0 * 1024.0, "peak RSS {:.1} MiB with a million partitions", large / 1024.0);
    assert!(large <= small * 1.10, "peak RSS {small} KiB with 100,000 partitions, {large} KiB with 1,000,000");
}

/// Bounded memory against the records of one large partition (SPEC, guarantee 4): ten times
/// the records, pages fetched eight at a time, and the peak RSS stays where it was (loosely:
/// within half again, and under 64 MiB, while the records themselves grow from 12 to 120 MB).
#[tokio::test(flavor = "multi_thread")]
async fn ten_times_the_records_of_one_partition_take_no_more_memory() {
    let Some(python) = crate::support::python_with("resource") else { return };
    let mut peaks = Vec::new();
    for records in [20_000u64, 200_000] {
        let f = Fixture::new(records).await;
        let job = f.job(
            "name = \"big\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 500\ntotal = \"$.total\"\n[limits]\nconcurrency = 8\n",
        );
        let (complete, peak) = peak_rss(&python, &harvest(&job, &f.out()));
        assert!(complete, "{records} records");
        assert_eq!(manifest(&f.out().join("big"))["records"].as_u64(), Some(records));
        peaks.push(peak);
    }
    let (small, large) = (peaks[0] as f64, peaks[1] as f64);
    assert!(large < 64.0 * 1024.0, "peak RSS {:.1} MiB for 200,000 records", large / 1024.0);
    assert!(large <= small * 1.5, "peak RSS {small} KiB for 20,000 records, {large} KiB for 200,000");
}

/// A parent run as two shards is read whole (both shards' manifests), and only once both have
/// completed; before that, `check` says the values are not there yet.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_output_source_reads_every_shard_of_its_parent_s_latest_run() {
    let f = Fixture::new(95).await;
    let parent = f.dir.path().join("nums.toml");
    std::fs::write(
        &parent,
        format!(
            "name = \"nums\"\n[request]\nurl = \"{}/offset\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 10\ntotal = \"$.total\"\n",
            f.server.url()
        ),
    )
    .unwrap();
    let child = f.job(
        "name = \"detail\"\n[request]\nurl = \"{base}/items/{id}\"\n[records]\npath = \"$\"\n[pagination]\nkind = \"none\"\n\
         [partitions]\nid = { from = \"nums\", field = \"$.id\", include = { n = \"$.id\" } }\n",
    );
    let check = Command::new(env!("CARGO_BIN_EXE_harvest")).args(["check", child.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains("partitions: not listed yet: job nums has no complete run"),
        "{text}"
    );

    let shard = |i: u32| {
        let mut command = harvest(&parent, &f.out());
        command.args(["--shard", &format!("{i}/2"), "--run-id", "r1"]);
        assert!(command.status().unwrap().success(), "shard {i}");
    };
    shard(0);
    let output = harvest(&child, &f.out()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "one shard of two is no complete run");
    shard(1);
    let output = harvest(&child, &f.out()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let records = read_records(&f.out().join("detail"));
    let mut ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(records.iter().all(|r| r["_parent"]["n"] == r["id"]), "each detail carries its own parent");
    ids.sort();
    assert_eq!(ids, one_to(95));
}

/// An interrupted pipeline: its independent jobs ran side by side, each stops with its
/// checkpoint, the pipeline exits 130 and its dependent did not start; the next run resumes
/// both and then runs the dependent.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_pipeline_exits_130_and_the_next_run_finishes_it() {
    let f = Fixture::slow(400, 20).await;
    let dir = f.dir.path();
    let base = f.server.url();
    for name in ["a", "b", "c"] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\n[request]\nurl = \"{base}/t/{name}/cursor\"\n[records]\npath = \"$.items[*]\"\n\
                 [pagination]\nkind = \"cursor\"\nnext = \"$.next_cursor\"\nlimit_param = \"limit\"\npage_size = 10\n\
                 [output]\ncheckpoint_interval = \"50ms\"\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("p.toml"),
        "[[job]]\nfile = \"a.toml\"\n[[job]]\nfile = \"b.toml\"\n[[job]]\nfile = \"c.toml\"\nafter = [\"a\", \"b\"]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let mut child = harvest(&dir.join("p.toml"), &out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    crate::support::until_requests(&f.server, 10).await;
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let (a, b) = (f.requests("/t/a/cursor"), f.requests("/t/b/cursor"));
    assert!(a > 0 && b > 0, "independent jobs run side by side: {a} and {b} requests");
    assert_eq!(f.requests("/t/c/cursor"), 0, "the dependent did not start");
    let state: Value = serde_json::from_slice(&std::fs::read(out.join("_pipelines/p.json")).unwrap()).unwrap();
    assert_eq!(state["jobs"]["a"]["exit"], 130, "{state}");
    assert!(checkpoint(&out.join("a")).is_some() && checkpoint(&out.join("b")).is_some());

    let output = harvest(&dir.join("p.toml"), &out).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for name in ["a", "b", "c"] {
        let ids: Vec<u64> = read_records(&out.join(name)).iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, one_to(400), "{name}: every record once");
    }
}

/// `[partitions.check]` over a partition of many pages, killed half way: the values its
/// earlier pages answered are kept in the checkpoint, so the resume reports none missing.
#[tokio::test(flavor = "multi_thread")]
async fn values_answered_before_a_kill_are_not_reported_missing_after_the_resume() {
    let f = Fixture::slow(60, 30).await;
    std::fs::write(f.dir.path().join("ids.txt"), (1..=60).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    // One batch of 60 ids, answered 5 records a page by /offset (which serves ids 1..60).
    let job = f.job(
        "name = \"checked\"\n[request]\nurl = \"{base}/offset?ids={id}\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 5\n[limits]\nconcurrency = 1\n\
         [output]\ncheckpoint_interval = \"10ms\"\n\
         [partitions]\nid = { file = \"ids.txt\", batch = 60 }\n[partitions.check]\nfield = \"$.id\"\n",
    );
    let mut child = harvest(&job, &f.out()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Killed once a checkpoint holds the partition half way.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let half_way = |c: &Value| c["position"]["active"].as_object().is_some_and(|a| !a.is_empty());
    while !checkpoint(&f.out().join("checked")).is_some_and(|c| half_way(&c)) {
        assert!(std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no checkpoint half way");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let output = harvest(&job, &f.out()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("asked but not returned"), "{stderr}");
    assert!(manifest(&f.out().join("checked")).get("missing").is_none());
    let ids: Vec<u64> = read_records(&f.out().join("checked")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, one_to(60));
}

/// Comments per issue need two fields of each parent (the number and its
/// repository): an `include` name the URL places fills its placeholder, and tells apart
/// issues of the same number in different repositories.
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_field_the_url_places_fills_its_placeholder_beside_the_value() {
    let f = Fixture::new(20).await;
    let dir = f.dir.path();
    let base = f.server.url();
    let job = |name: &str, url: &str, max: u32, partitions: &str| {
        format!(
            "name = \"{name}\"\n[request]\nurl = \"{base}{url}\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 5\ntotal = \"$.total\"\nmax_records = {max}\n{partitions}"
        )
    };
    std::fs::write(dir.join("repos.toml"), job("repos", "/offset", 3, "")).unwrap();
    std::fs::write(
        dir.join("issues.toml"),
        job(
            "issues",
            "/t/r{repo}/offset",
            4,
            "[partitions]\nrepo = { from = \"repos\", field = \"$.id\", include = { owner = \"$.id\" } }\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("comments.toml"),
        job(
            "comments",
            "/t/r{owner}-n{number}/offset",
            2,
            "[partitions]\nnumber = { from = \"issues\", field = \"$.id\", include = { owner = \"$._parent.owner\" } }\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("p.toml"),
        "[[job]]\nfile = \"repos.toml\"\n[[job]]\nfile = \"issues.toml\"\nafter = [\"repos\"]\n\
         [[job]]\nfile = \"comments.toml\"\nafter = [\"issues\"]\n",
    )
    .unwrap();
    let output = harvest(&dir.join("p.toml"), &f.out()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // 3 repositories x issues 1..4: 12 issues, numbers repeating across repositories.
    for repo in 1..=3 {
        for number in 1..=4 {
            assert_eq!(f.requests(&format!("/t/r{repo}-n{number}/offset")), 1, "issue {number} of repository {repo}");
        }
    }
    let comments = read_records(&f.out().join("comments"));
    assert_eq!(comments.len(), 12 * 2, "two comments of each of the 12 issues");
    let manifest = manifest(&f.out().join("comments"));
    let named: BTreeSet<&str> =
        manifest["partitions"].as_array().unwrap().iter().map(|p| p["partition"].as_str().unwrap()).collect();
    assert!(named.contains("number=4,owner=3"), "{named:?}");
}
