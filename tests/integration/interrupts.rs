//! Interrupts stop everything: a SIGINT during a server's long pause, a retry backoff, a
//! rate-limiter wait or a response stalled mid-body ends the run within a few seconds, with its
//! checkpoint saved and no request sent after the signal; the next run resumes exactly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harvest_mock::{MockConfig, MockServer};

use crate::support::{read_records, until_requests};

const N: u64 = 200;

/// Run a job of 20 offset pages, interrupt it once the server has seen `requests` requests and
/// `settle` has passed, and check what the interrupt promises; then resume with `resume_args`.
async fn interrupt(what: &str, knobs: &str, extra: &str, requests: u64, settle: Duration, resume_args: &[&str]) {
    let server = MockServer::start(MockConfig { records: N, ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"i\"\n[request]\nurl = \"{}/offset\"\nparams = {{ {knobs} }}\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 10\ntotal = \"$.total\"\n[limits]\nconcurrency = 1\n{extra}",
            server.url()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
        command.args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--progress", "never"]);
        command.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    };
    let child = run(&[]).spawn().unwrap();
    until_requests(&server, requests).await;
    tokio::time::sleep(settle).await;
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0, "{what}");
    let (signalled, asked) = (Instant::now(), server.stats.requests());
    // A run that ignores the signal is stopped after 10 s, so the test fails rather than waits.
    let output = tokio::task::spawn_blocking(move || {
        let mut child = child;
        while child.try_wait().unwrap().is_none() && signalled.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap();
    let took = signalled.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{what}: {stderr}");
    assert!(took < Duration::from_secs(3), "{what}: exited {took:?} after the signal: {stderr}");
    assert_eq!(server.stats.requests(), asked, "{what}: a request arrived after the signal");
    assert!(out.join("i/_harvest/checkpoint.json").exists(), "{what}: the checkpoint is saved");
    eprintln!("{what}: exit 130 {took:?} after the signal, {asked} requests");

    let resumed = run(resume_args).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success() && stderr.contains("resuming run"), "{what}: {stderr}");
    let ids: Vec<u64> = read_records(&out.join("i")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=N).collect::<Vec<_>>(), "{what}: every id once");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_ends_a_long_retry_after_pause() {
    // The server's third request gets 429 with Retry-After: 300.
    let knobs = "throttle_at = \"3\", retry_after = \"300\"";
    interrupt("a 300 s pause", knobs, "", 3, Duration::from_millis(300), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_ends_a_retry_backoff() {
    // The first request gets a 500; the backoff before its retry is up to a minute (longer
    // than the 0.3 s before the signal but for one run in 200).
    let knobs = "fail_at = \"1\"";
    let retry = "[retry]\ninitial_backoff = \"60s\"\nmax_backoff = \"60s\"\n";
    interrupt("a retry backoff", knobs, retry, 1, Duration::from_millis(300), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_ends_a_rate_limit_wait() {
    // One request every 5 s: the second waits for its token.
    let limits = "requests_per_second = 0.2\nburst = 1\n";
    // (It follows `concurrency = 1` in the job's [limits]; the resume lifts it from the command line.)
    interrupt("a rate-limit wait", "", limits, 1, Duration::from_millis(500), &["--rps", "1000"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_gives_a_response_stalled_mid_body_two_seconds() {
    // The server's second response sends half its body, then nothing for 30 s.
    let knobs = "stall_at = \"2\"";
    interrupt("a response stalled mid-body", knobs, "", 2, Duration::from_millis(300), &[]).await;
}
