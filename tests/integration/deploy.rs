//! The deployment files under docs/deploy: the Kubernetes Indexed Job runs one shard per
//! index, each taking its shard from JOB_COMPLETION_INDEX, and the Dockerfile builds the binary
//! the way the README says. (No container engine runs here: the image itself is not built.)

use std::process::Command;

use serde_json::Value;

use crate::support::python_with;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_kubernetes_indexed_job_runs_one_shard_per_index() {
    let Some(python) = python_with("yaml") else { return };
    let path = format!("{ROOT}/docs/deploy/kubernetes/indexed-job.yaml");
    let out = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", &path])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = &job["spec"];
    assert_eq!((job["apiVersion"].as_str(), job["kind"].as_str()), (Some("batch/v1"), Some("Job")));
    assert_eq!(spec["completionMode"], "Indexed");
    let shards = spec["completions"].as_u64().expect("completions");
    assert_eq!(spec["parallelism"].as_u64(), Some(shards), "completions = parallelism");
    assert!(spec["backoffLimitPerIndex"].as_u64().is_some_and(|n| n >= 1), "a killed pod's index is retried");
    let container = &spec["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let count = shards.to_string();
    assert!(args.windows(2).any(|w| w == ["--shards", count.as_str()]), "--shards {shards} in {args:?}");
    let output = args.windows(2).find(|w| w[0] == "--output-dir").map(|w| w[1]);
    assert!(output.is_some_and(|dir| dir.starts_with("s3://")), "output to S3: {args:?}");
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name} is set"));
    assert_eq!(
        var("JOB_COMPLETION_INDEX")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    assert!(var("HARVEST_RUN_ID")["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap().contains("controller-uid"));
    assert!(var("API_TOKEN")["valueFrom"]["secretKeyRef"].is_object(), "the API token comes from a Secret");
}

#[test]
fn the_dockerfile_builds_the_static_binary_in_stages() {
    let text = std::fs::read_to_string(format!("{ROOT}/docs/deploy/Dockerfile")).unwrap();
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2 && stages.last() == Some(&"FROM scratch"), "{stages:?}");
    assert!(text.contains("cargo build --release --locked --bin harvest"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/harvest\"]"));
    for copied in text.lines().filter_map(|l| l.strip_prefix("COPY ")).filter(|l| !l.starts_with("--from")) {
        for source in copied.split_whitespace().rev().skip(1) {
            assert!(std::path::Path::new(ROOT).join(source).exists(), "the Dockerfile copies {source}, which exists");
        }
    }
}
