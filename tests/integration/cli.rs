//! The binary: the demo, exit codes, `check`.

use std::process::Command;

use crate::support::read_records;

fn harvest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_harvest")).args(args).output().expect("harvest runs")
}

#[test]
fn the_demo_harvests_every_record_and_a_second_run_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    for _ in 0..2 {
        let output = harvest(&["demo", "--records", "2345", "--output-dir", out]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains("harvested 2345 records"), "{stdout}");
        assert!(stdout.contains("manifest:"), "{stdout}");
    }
    let root = dir.path().join("demo");
    let ids: Vec<u64> = read_records(&root).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=2345).collect::<Vec<_>>(), "replace mode: one copy after two runs");
    let manifests: Vec<_> = std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().collect();
    assert_eq!(manifests.len(), 2);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifests[0].path()).unwrap()).unwrap();
    assert_eq!(manifest["records"], 2345);
    assert_eq!(manifest["partitions"][0]["stop"]["reason"], "total_reached");
    assert_eq!(manifest["parts"][0]["partitions"][0]["records"], serde_json::json!([0, 2345]));
}

#[test]
fn a_bad_job_file_exits_2_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.toml");
    std::fs::write(&job, "name = \"x\"\n[request]\nurl = \"http://127.0.0.1:9/\"\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"offset\"\nlimt_param = \"n\"\n").unwrap();
    for command in ["run", "check"] {
        let output = harvest(&[command, job.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("bad.toml:8:1: unknown key `limt_param` in [pagination]; did you mean `limit_param`?"),
            "{stderr}"
        );
    }
}

#[test]
fn every_example_job_checks() {
    for entry in std::fs::read_dir("jobs").unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = harvest(&["check", path.to_str().unwrap()]);
            assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
            assert!(String::from_utf8_lossy(&output.stdout).contains("pagination:"));
        }
    }
}

#[test]
fn the_reference_job_is_valid() {
    let readme = std::fs::read_to_string("docs/REFERENCE.md").unwrap();
    let start = readme.find("<!-- reference:start -->").expect("the reference block");
    let end = readme.find("<!-- reference:end -->").expect("the reference block ends");
    let block = &readme[start..end];
    let toml = block.split("```toml").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
    let env = harvest::job::Env::from_pairs(
        [("API_TOKEN", "t"), ("WEBHOOK_URL", "https://hooks.example.com/x"), ("WEBHOOK_SECRET", "s")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let plan = harvest::job::parse(std::path::Path::new("docs/REFERENCE.md"), toml, &env, &Default::default())
        .unwrap_or_else(|e| panic!("the reference job: {e}"));
    assert_eq!(plan.partitions.count(), 14, "2 repos x 7 days");
    assert_eq!(plan.limits.concurrency, 8);
    assert!(plan.notify.as_ref().is_some_and(|n| n.on_success && n.on_failure && n.secret.is_some()));
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        harvest(&["demo", "--records", "50", "--output-dir", dir.path().to_str().unwrap(), "--log-format", "json"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    let quiet = harvest(&["demo", "--records", "50", "--output-dir", dir.path().to_str().unwrap(), "-q"]);
    assert!(quiet.status.success());
    assert!(quiet.stderr.is_empty(), "-q: {}", String::from_utf8_lossy(&quiet.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_stops_cleanly_with_130_and_keeps_what_was_written() {
    use harvest_mock::{MockConfig, MockServer};
    use std::time::Duration;
    let server =
        MockServer::start(MockConfig { records: 10_000, latency: Duration::from_millis(50), ..Default::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    // Offset pages fetched eight at a time: several are in flight when the signal comes.
    std::fs::write(
        &job,
        format!(
            "name = \"slow\"\n[request]\nurl = \"{}/offset\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 10\ntotal = \"$.total\"\n[limits]\nconcurrency = 8\n",
            server.url()
        ),
    )
    .unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_harvest"))
            .args(["run", job.to_str().unwrap(), "--output-dir", dir.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = run();
    crate::support::until_requests(&server, 40).await;
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let asked_before_signal = server.stats.requests() as usize;
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    // What the server answered before the signal, by offset.
    let offsets = |from: usize| -> Vec<u64> {
        server.stats.log()[from..]
            .iter()
            .map(|seen| {
                let query = seen.uri.split_once('?').map_or("", |(_, q)| q);
                url::form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "offset")
                    .map_or(0, |(_, v)| v.parse().unwrap())
            })
            .collect()
    };
    let first_run = offsets(0);
    // No new request after the signal (one already on its way when it came is allowed).
    assert!(
        first_run.len() <= asked_before_signal + 1,
        "{} requests after the signal",
        first_run.len() - asked_before_signal
    );
    let answered = &first_run[..asked_before_signal];

    // What was written is on disk in order, each record once, and it takes in the pages in
    // flight (eight at a time, 50 ms each) up to the first that was never sent.
    let open = dir.path().join("slow/_harvest/open");
    let part = std::fs::read_dir(&open).unwrap().flatten().next().expect("the open part").path();
    let ids: Vec<u64> = std::fs::read_to_string(part)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
    let written = ids.len() as u64;
    let first_unsent = (0..).map(|page| page * 10).find(|offset| !answered.contains(offset)).unwrap();
    assert!(written >= first_unsent, "{written} written; every page before offset {first_unsent} was asked");

    // The resume asks none of the written pages again, each other page once, and so every page
    // answered before the signal is either written or fetched again: none is lost.
    let resumed = run().wait_with_output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let again = offsets(first_run.len());
    assert_eq!(again.iter().min(), Some(&written), "the resume starts after the written pages");
    let mut sorted = again.clone();
    sorted.sort();
    assert_eq!(sorted, (written / 10..1000).map(|page| page * 10).collect::<Vec<_>>(), "each remaining page once");
    for offset in answered {
        assert!(*offset < written || again.contains(offset), "the page at offset {offset} was lost");
    }
    let all: Vec<u64> = read_records(&dir.path().join("slow")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(all, (1..=10_000).collect::<Vec<_>>());
}

#[test]
fn a_first_page_without_records_names_the_path_that_holds_them() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(harvest_mock::MockServer::start(harvest_mock::MockConfig { records: 5, ..Default::default() }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, format!("name = \"z\"\n[request]\nurl = \"{}/offset\"\n[records]\npath = \"$.results[*]\"\n[pagination]\nkind = \"offset\"\n", server.url())).unwrap();
    let output = harvest(&["run", job.to_str().unwrap(), "--output-dir", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "WARN the job stopped after its first page (empty page): no records at records.path $.results[*], \
             while $.items[*] holds 5 objects: should [records] path be \"$.items[*]\"?"
        ),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("harvested 0 records"));
}

#[test]
fn run_help_states_the_interrupt_rule() {
    let output = harvest(&["run", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    for rule in [
        "no new request is sent",
        "at most 2 s",
        "exits 130",
        "fetched again on resume",
        "A second signal exits at once",
    ] {
        assert!(help.contains(rule), "{rule:?} in {help}");
    }
}
