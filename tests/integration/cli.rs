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
        assert!(stderr.contains("bad.toml:8:1: unknown key `limt_param`; did you mean `limit_param`?"), "{stderr}");
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
fn the_readme_reference_job_is_valid() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find("<!-- reference:start -->").expect("the reference block");
    let end = readme.find("<!-- reference:end -->").expect("the reference block ends");
    let block = &readme[start..end];
    let toml = block.split("```toml").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
    let env = harvest::job::Env::from_pairs([("API_TOKEN".to_string(), "t".to_string())]);
    let plan = harvest::job::parse(std::path::Path::new("README.md"), toml, &env, &Default::default())
        .unwrap_or_else(|e| panic!("the README's reference job: {e}"));
    assert_eq!(plan.partitions.len(), 2);
    assert_eq!(plan.limits.concurrency, 8);
}
