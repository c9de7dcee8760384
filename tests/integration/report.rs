//! The run report: its figures against what the server counted and what is on disk, and the
//! warnings for a partition that stops after its first page while the response says there is
//! more (a wrong next or records path, the most common silent failure in this field).

use std::process::Command;
use std::sync::Arc;

use harvest::job::{self, Env, Overrides};
use harvest::run::{self, RunOptions};
use harvest_mock::MockConfig;
use serde_json::Value;

use crate::support::{part_files, Fixture};

fn manifest(root: &std::path::Path) -> Value {
    let runs = root.join("_harvest/runs");
    let path = std::fs::read_dir(&runs).unwrap().flatten().map(|e| e.path()).max().expect("a manifest");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_counts_retries_pauses_parts_and_says_why_each_partition_stopped() {
    let fixture = Fixture::with(MockConfig { records: 450, ..Default::default() }).await;
    // Every page fails once with a 503 (retried with backoff); the server's 2nd request (the first retry) is a
    // 429 with Retry-After: 1 (a pause of the whole job).
    let job = fixture.job(
        r#"name = "reported"
[request]
url = "{base}/t/{tenant}/offset"
params = { flaky = "1", flaky_as = "503", throttle_at = "2" }
[records]
path = "$.items[*]"
[pagination]
kind = "offset"
page_size = 100
total = "$.total"
[partitions]
tenant = ["a", "b"]
[retry]
initial_backoff = "10ms"
[output]
rows_per_file = 200
"#,
    );
    let out = fixture.out();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_harvest"))
            .args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--concurrency", "1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");

    let root = fixture.out().join("reported");
    let manifest = manifest(&root);
    let report = &manifest["report"];
    assert_eq!(report["outcome"], "complete");
    assert_eq!(report["records"], 900);
    assert_eq!(report["pages"], 10);
    let parts = part_files(&root);
    assert_eq!(report["parts"], parts.len() as u64);
    assert_eq!(parts.len(), 5, "900 rows, 200 a part");
    let on_disk: u64 = parts.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(report["bytes_written"], on_disk);
    assert_eq!(report["requests"], fixture.server.stats.requests());
    // Ten page URIs each failed once; the 429 is a pause, not a retry.
    assert_eq!(report["retries"]["status_503"], 10, "{report}");
    assert_eq!(report["server_pauses"]["retry_after"], 1, "{report}");
    let waited = report["server_wait_seconds"].as_f64().unwrap();
    assert!((0.9..3.0).contains(&waited), "waited {waited} s");
    let rate = report["records_per_second"].as_f64().unwrap();
    let seconds = report["seconds"].as_f64().unwrap();
    assert!((rate * seconds - 900.0).abs() < 1.0, "{rate} records/s over {seconds} s");
    let named = report["partitions"]["named"].as_array().unwrap();
    assert_eq!(named.len(), 2);
    for (n, tenant) in named.iter().zip(["a", "b"]) {
        assert_eq!(n["partition"], format!("tenant={tenant}"));
        assert_eq!(
            (n["records"].as_u64(), n["pages"].as_u64(), n["stop"].as_str()),
            (Some(450), Some(5), Some("total reached"))
        );
    }
    assert_eq!(report["partitions"]["stops"]["total_reached"], 2);

    // The same on stderr, in words.
    for line in [
        "  records: 900 in 10 pages (",
        "  written: 5 parts, ",
        "10 retries (10 status 503); waited 1",
        "s on the server's limits (1 Retry-After)",
        "  partitions: 2 of 2 ended (2 total reached)",
        "    tenant=a  450 records  5 pages  total reached",
        "    tenant=b  450 records  5 pages  total reached",
    ] {
        assert!(stderr.contains(line), "no {line:?} in:\n{stderr}");
    }
    assert!(stderr.contains(&format!("  requests: {}, 10 retries", fixture.server.stats.requests())), "{stderr}");

    // Quiet: no report.
    let job = fixture.dir.path().join("job.toml");
    let out = fixture.out();
    let quiet = tokio::task::spawn_blocking(move || {
        let args = ["-q", "run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--fresh"];
        Command::new(env!("CARGO_BIN_EXE_harvest")).args(args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(quiet.status.success());
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("records:"), "-q printed a report");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_that_stops_after_its_first_page_warns_with_the_likely_fix() {
    let fixture = Fixture::with(MockConfig { records: 120, ..Default::default() }).await;
    let cases = [
        // A wrong next path: the response has next_cursor.
        (
            "kind = \"cursor\"\nnext = \"$.next\"\nlimit_param = \"limit\"\npage_size = 50",
            "cursor",
            "$.items[*]",
            Some("the response names a next page at $.next_cursor: check pagination.next (is it \"$.next_cursor\"?)"),
        ),
        // A wrong records path: the records are under results.
        (
            "kind = \"next_url\"\nnext = \"$.next\"",
            "next-url",
            "$.data[*]",
            Some("no records at records.path $.data[*], while $.results[*] holds 100 objects: should [records] path be \"$.results[*]\"?"),
        ),
        // The next page is in a Link header.
        (
            "kind = \"next_url\"\nnext = \"$.next\"",
            "link",
            "$[*]",
            Some("the response has a Link header with rel=\"next\": pagination kind = \"link_header\" follows it"),
        ),
        // A full page that names no next page (the cursor is in a header the job ignores).
        (
            "kind = \"cursor\"\nnext = \"$.next\"\nlimit_param = \"limit\"\npage_size = 40",
            "cursor-header",
            "$[*]",
            Some("the page was full (40 records, as limit=40 asked) yet named no next page: check [pagination]"),
        ),
        // Right: the last page of a one-page harvest says nothing more.
        ("kind = \"cursor\"\nnext = \"$.next_cursor\"\nlimit_param = \"limit\"\npage_size = 200", "cursor", "$.items[*]", None),
    ];
    for (pagination, path, records, warning) in cases {
        let summary = fixture
            .run(&format!(
                "name = \"w\"\n[request]\nurl = \"{{base}}/{path}\"\n[records]\npath = \"{records}\"\n[pagination]\n{pagination}\n[output]\nmode = \"replace\"\n"
            ))
            .await
            .unwrap();
        assert_eq!(summary.partitions.len(), 1);
        assert_eq!(summary.partitions[0].warning.as_deref(), warning, "{path} with {pagination}");
        let manifest = manifest(&fixture.out().join("w"));
        assert_eq!(manifest["partitions"][0]["warning"].as_str(), warning);
        assert_eq!(manifest["report"]["partitions"]["warnings"], u64::from(warning.is_some()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn above_a_hundred_partitions_the_report_counts_and_names_only_those_that_warned() {
    let fixture = Fixture::with(MockConfig { records: 30, ..Default::default() }).await;
    // 1,200 partitions whose next path is wrong: each stops after a first page that has a
    // next cursor. A run reads 100 first pages for hints, so 100 warn.
    let tenants: Vec<String> = (0..1200).map(|i| format!("\"t{i}\"")).collect();
    let toml = format!(
        "name = \"many\"\n[request]\nurl = \"{}/t/{{tenant}}/cursor\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"cursor\"\nnext = \"$.next\"\nlimit_param = \"limit\"\npage_size = 10\n\
         [partitions]\ntenant = [{}]\n[limits]\nconcurrency = 16\n",
        fixture.server.url(),
        tenants.join(", ")
    );
    let path = fixture.dir.path().join("many.toml");
    std::fs::write(&path, &toml).unwrap();
    let overrides = Overrides { output_dir: Some(fixture.out()), ..Default::default() };
    let plan = job::parse(&path, &toml, &Env::from_pairs(Vec::new()), &overrides).unwrap();
    let (result, report) = run::run_reported(Arc::new(plan), RunOptions::default()).await;
    result.unwrap();
    let report = report.expect("a report");
    let p = &report.partitions;
    assert_eq!((p.total, p.ended, p.warnings), (1200, 1200, 100));
    assert_eq!(p.stops.get("no_next"), Some(&1200));
    assert_eq!(p.named.len(), 100, "only the partitions that warned are named");
    assert!(p.named.iter().all(|n| n.warning.is_some()));
    let text = report.text();
    assert!(text.contains("  partitions: 1,200 of 1,200 ended (1200 no next link), 100 with a warning"), "{text}");
    assert!(text.lines().count() < 220, "{} lines", text.lines().count());
    // The manifest holds the same report.
    let manifest = manifest(&fixture.out().join("many"));
    assert_eq!(manifest["report"]["partitions"]["named"].as_array().unwrap().len(), 100);
}
