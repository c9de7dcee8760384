//! The `[notify]` webhook: a receiver here checks the signature over the timestamp and the
//! body as the README tells receivers to; a failing receiver changes no exit code; the
//! webhook's URL and secret appear in no log.

use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::Fixture;

const HOOK_TOKEN: &str = "hook-token-5e1b";
const HOOK_SECRET: &str = "whsec-9a7f3c";

/// What the receiver was sent: its headers and raw body.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on loopback answering `status`: its URL and what it received.
async fn receiver(status: Arc<AtomicU16>) -> (String, Received) {
    let received: Received = Default::default();
    let kept = received.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let (kept, status) = (kept.clone(), status.clone());
        async move {
            kept.lock().unwrap().push((headers, body.to_vec()));
            axum::http::StatusCode::from_u16(status.load(Ordering::Relaxed)).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/{HOOK_TOKEN}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// What a receiver does: the signature must be HMAC-SHA256 over "<timestamp>.<body>" and the
/// timestamp recent.
fn verify(headers: &axum::http::HeaderMap, body: &[u8]) -> serde_json::Value {
    let timestamp = headers["x-harvest-timestamp"].to_str().unwrap();
    let signature = headers["x-harvest-signature"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(signature, format!("sha256={expected}"), "a forged or altered notification");
    let age = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "a stale timestamp: {age} s old");
    serde_json::from_slice(body).unwrap()
}

async fn run(fixture: &Fixture, job: &str, url: &str, extra: &[&str]) -> (Option<i32>, String, std::time::Duration) {
    let path = fixture.job(job);
    let out = fixture.out();
    let (url, extra): (String, Vec<String>) = (url.to_string(), extra.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
            .args(["-vv", "run", path.to_str().unwrap(), "--output-dir", out.to_str().unwrap()])
            .args(&extra)
            .env("WEBHOOK_URL", url)
            .env("WEBHOOK_SECRET", HOOK_SECRET)
            .output()
            .unwrap();
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned(), started.elapsed())
    })
    .await
    .unwrap()
}

fn job(path: &str, on: &str) -> String {
    format!(
        "name = \"hooked\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n[retry]\nmax_attempts = 1\n\
         [notify]\nurl = \"${{WEBHOOK_URL}}\"\nsecret = \"${{WEBHOOK_SECRET}}\"\n{on}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_is_signed_to_the_webhook_on_success_and_on_failure() {
    let fixture = Fixture::new(250).await;
    let (url, received) = receiver(Arc::new(AtomicU16::new(204))).await;

    let (code, stderr, _) = run(&fixture, &job("/offset", ""), &url, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let sent = received.lock().unwrap().drain(..).collect::<Vec<_>>();
    assert_eq!(sent.len(), 1, "one notification per run");
    let report = verify(&sent[0].0, &sent[0].1);
    assert_eq!(
        (report["job"].as_str(), report["outcome"].as_str(), report["records"].as_u64()),
        (Some("hooked"), Some("complete"), Some(250))
    );
    assert!(sent[0].0.get("authorization").is_none() && sent[0].0.get("cookie").is_none());
    assert!(stderr.contains("notified the webhook that the run completed"), "{stderr}");

    // A failure (the server refuses every page) is sent too, and the exit code is the run's.
    let (code, stderr, _) = run(&fixture, &job("/auth/bearer/offset", ""), &url, &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let sent = received.lock().unwrap().drain(..).collect::<Vec<_>>();
    assert_eq!(sent.len(), 1);
    let report = verify(&sent[0].0, &sent[0].1);
    assert_eq!(report["outcome"], "failed");
    assert!(report["error"].as_str().unwrap().contains("401"), "{report}");
    for secret in [HOOK_TOKEN, HOOK_SECRET] {
        assert!(!stderr.contains(secret), "the log holds {secret}:\n{stderr}");
    }

    // `on = ["failure"]`: a run that completes sends nothing.
    let (code, _, _) = run(&fixture, &job("/offset", "on = [\"failure\"]\n"), &url, &["--fresh"]).await;
    assert_eq!(code, Some(0));
    assert!(received.lock().unwrap().is_empty(), "notified of a success it did not ask for");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_fails_leaves_the_exit_code_alone() {
    let fixture = Fixture::new(100).await;
    let (url, received) = receiver(Arc::new(AtomicU16::new(500))).await;
    let (code, stderr, took) = run(&fixture, &job("/offset", ""), &url, &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(received.lock().unwrap().len(), 3, "three attempts");
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    assert!(
        stderr.contains("the webhook was not notified (it answered 500 Internal Server Error; 3 attempts)"),
        "{stderr}"
    );
    for secret in [HOOK_TOKEN, HOOK_SECRET] {
        assert!(!stderr.contains(secret), "the log holds {secret}:\n{stderr}");
    }

    // Nobody listening: a refused connection is the same.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hooks/{HOOK_TOKEN}", listener.local_addr().unwrap())
    };
    let (code, stderr, _) = run(&fixture, &job("/offset", ""), &closed, &["--fresh"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("the webhook was not notified ("), "{stderr}");
    assert!(!stderr.contains(HOOK_TOKEN), "the log holds the webhook's URL:\n{stderr}");
}
