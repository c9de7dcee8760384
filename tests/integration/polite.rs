//! Server-side limits: Retry-After pauses the whole job, faults are survived, rate limits
//! honoured, all checked from the mock's own log.

use std::process::Command;
use std::time::Duration;

use harvest_mock::{Faults, MockConfig, MockServer};

use crate::support::{one_to, Fixture};

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_holds_every_partition() {
    // Pages slow enough (90 of them, 40 ms each, four at a time) that the rest of the run cannot
    // hide inside the grace given to requests already in flight if the pause were ignored.
    let f = Fixture::with(MockConfig { records: 300, latency: Duration::from_millis(40), ..Default::default() }).await;
    // The server's 12th request, whichever partition sends it, gets 429 with Retry-After: 2.
    let job = r#"
name = "t"
[request]
url = "{base}/t/{tenant}/offset"
params = { throttle_at = "12", retry_after = "2" }
[records]
path = "$.items[*]"
[pagination]
kind = "offset"
page_size = 10
total = "$.total"
[partitions]
tenant = ["a", "b", "c"]
[limits]
concurrency = 4
"#;
    let summary = f.run(job).await.unwrap();
    assert_eq!(summary.records, 900);
    for records in f.records_by_partition("t").values() {
        assert_eq!(records.iter().map(|r| r["id"].as_u64().unwrap()).collect::<Vec<_>>(), one_to(300));
    }
    let log = f.server.stats.log();
    let throttled = log[11].at;
    // Requests in flight when the 429 went out may still arrive; nothing sent after it may.
    let early: Vec<Duration> = log
        .iter()
        .map(|s| s.at)
        .filter(|at| *at > throttled + Duration::from_millis(100) && *at < throttled + Duration::from_millis(2000))
        .collect();
    assert!(early.is_empty(), "requests within the 2 s pause: {early:?}");
    let tenants_after: std::collections::BTreeSet<String> = log
        .iter()
        .filter(|s| s.at >= throttled + Duration::from_millis(2000))
        .map(|s| s.uri.split('/').nth(2).unwrap_or("").to_string())
        .collect();
    assert!(tenants_after.len() >= 2, "the partitions went on after the pause: {tenants_after:?}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
    assert_eq!(manifest["http"]["pauses"]["retry_after"], 1, "{}", manifest["http"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_at_five_percent_still_yields_every_id_once() {
    let config = MockConfig {
        records: 3000,
        faults: Faults::parse("all=0.05").unwrap(),
        seed: 42,
        slow: Duration::from_millis(600),
        retry_after: Duration::from_millis(50),
        ..Default::default()
    };
    let f = Fixture::with(config).await;
    for (path, records, pagination) in [
        ("/offset", "$.items[*]", "kind = \"offset\"\npage_size = 50\ntotal = \"$.total\""),
        ("/page?total=omit", "$.data[*]", "kind = \"page\"\npage_size = 50"),
        ("/cursor", "$.items[*]", "kind = \"cursor\"\npage_size = 50"),
        ("/next-url?per_page=50", "$.results[*]", "kind = \"next_url\""),
    ] {
        let job = format!(
            "name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\ntimeout = \"300ms\"\n[records]\npath = \"{records}\"\n[pagination]\n{pagination}\n[retry]\nmax_attempts = 10\ninitial_backoff = \"5ms\"\nmax_backoff = \"50ms\"\n"
        );
        f.server.stats.reset();
        let summary = f.run(&job).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(f.ids("t"), one_to(3000), "{path}");
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
        let http = &manifest["http"];
        // Each kind of fault the server injected shows up under the cause it should have: a
        // retry by status, a reset connection, a cut body, a timeout; a 429 or 503 with
        // Retry-After as a pause of the whole job. Half a body is "cut short" to a JSON parser
        // whether or not the framing said it was whole.
        let injected = f.server.stats.faults();
        assert!(injected.len() >= 6, "{path}: the dice rolled most kinds: {injected:?}");
        let count = |section: &str, cause: &str| http[section][cause].as_u64().unwrap_or(0);
        for kind in injected.keys() {
            let counted = match kind.as_str() {
                "429" | "503" => count("pauses", "retry_after"),
                "reset" => count("retries", "transport"),
                "cut" => count("retries", "body_cut_short"),
                "invalid" => count("retries", "body_cut_short") + count("retries", "invalid_json"),
                "slow" => count("retries", "timeout"),
                status => count("retries", &format!("status_{status}")),
            };
            assert!(counted >= 1, "{path}: {kind} was injected ({injected:?}) but not counted: {http}");
        }
    }
}

#[test]
fn faults_that_outlast_max_attempts_fail_with_exit_code_1() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = MockConfig { records: 500, faults: Faults::parse("503=0.9").unwrap(), ..Default::default() };
    let server = runtime.block_on(MockServer::start(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"f\"\n[request]\nurl = \"{}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\n[limits]\nrespect_server_limits = false\n[retry]\nmax_attempts = 3\ninitial_backoff = \"5ms\"\nmax_backoff = \"10ms\"\n",
            server.url()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["run", job.to_str().unwrap(), "--output-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("returned 503 after 3 attempts"), "{stderr}");
    assert!(stderr.contains("injected fault"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_rate_limit_is_respected_from_its_headers() {
    // 30 pages against a server that allows 25 a second and says so in X-RateLimit headers.
    for concurrency in [1, 4] {
        let f = Fixture::with(MockConfig { records: 600, rate_limit: Some(25.0), ..Default::default() }).await;
        let job = format!(
            "name = \"t\"\n[request]\nurl = \"{{base}}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\n\
             kind = \"offset\"\npage_size = 20\ntotal = \"$.total\"\n[limits]\nconcurrency = {concurrency}\n"
        );
        let summary = f.run(&job).await.unwrap();
        assert_eq!(f.ids("t"), one_to(600));
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
        let http = &manifest["http"];
        let refused = f.server.stats.requests() - 30;
        let pauses = |cause: &str| http["pauses"][cause].as_u64().unwrap_or(0);
        match concurrency {
            // One request at a time: the response that says X-RateLimit-Remaining: 0 arrives
            // before the next request leaves, so the job pauses until X-RateLimit-Reset and the
            // server refuses nothing (a harvest that ignored the headers would get a 429).
            1 => {
                assert!(pauses("x_ratelimit") >= 1, "{http}");
                assert_eq!(refused, 0, "{http}");
            }
            // Four at a time: the requests already in flight when the bucket ran dry may be
            // refused, and the first word of the server (that response or a 429) pauses the
            // job; never a stream of retries.
            _ => {
                assert!(pauses("x_ratelimit") + pauses("retry_after") >= 1, "{http}");
                assert!(refused <= 4, "{refused} requests were refused at concurrency 4: {http}");
            }
        }
    }
}
