//! Retries: what is retried, how often, and what the manifest says about it.

use crate::support::{one_to, Fixture};

const N: u64 = 250;

fn job(fault: &str, attempts: u32) -> String {
    format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}/offset?{fault}\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n[retry]\nmax_attempts = {attempts}\ninitial_backoff = \"5ms\"\nmax_backoff = \"20ms\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn retryable_failures_are_retried_and_counted_by_cause() {
    let cases = [
        ("flaky=2&flaky_as=503", "status_503"),
        ("flaky=2&flaky_as=500", "status_500"),
        ("flaky=2&flaky_as=502", "status_502"),
        ("flaky=2&flaky_as=504", "status_504"),
        ("flaky=2&flaky_as=408", "status_408"),
        ("flaky=2&flaky_as=invalid", "body_cut_short"),
        ("flaky=2&flaky_as=cut", "body_cut_short"),
    ];
    for (fault, cause) in cases {
        let f = Fixture::new(N).await;
        let summary = f.run(&job(fault, 3)).await.unwrap_or_else(|e| panic!("{fault}: {e}"));
        assert_eq!(f.ids("t"), one_to(N), "{fault}");
        assert_eq!(f.requests("/offset"), 9, "{fault}: 3 pages, each failing twice");
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
        assert_eq!(manifest["http"]["retries"][cause], 6, "{fault}: {}", manifest["http"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_pauses_without_using_attempts() {
    let f = Fixture::new(N).await;
    // Each page is refused twice with Retry-After; one attempt is enough all the same.
    let summary = f.run(&job("flaky=2&flaky_as=429&retry_after=0.05", 1)).await.unwrap();
    assert_eq!(f.ids("t"), one_to(N));
    assert_eq!(f.requests("/offset"), 9);
    // What the server saw: each page asked again only once its Retry-After had passed.
    let mut by_uri: std::collections::BTreeMap<String, Vec<std::time::Duration>> = Default::default();
    for seen in f.server.stats.log() {
        by_uri.entry(seen.uri).or_default().push(seen.at);
    }
    assert_eq!(by_uri.len(), 3);
    for (uri, at) in by_uri {
        assert_eq!(at.len(), 3, "{uri}");
        for gap in at.windows(2).map(|w| w[1] - w[0]) {
            assert!(gap >= std::time::Duration::from_millis(50), "{uri} asked again {gap:?} after its 429: {at:?}");
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
    assert!(manifest["http"]["pauses"]["retry_after"].as_u64().unwrap() >= 3, "{}", manifest["http"]);
    assert!(manifest["http"]["server_wait_seconds"].as_f64().unwrap() >= 0.1, "{}", manifest["http"]);
    assert!(manifest["http"]["retries"].as_object().unwrap().is_empty(), "{}", manifest["http"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_beyond_max_wait_is_an_error() {
    let f = Fixture::new(N).await;
    let job = job("flaky=1&flaky_as=503&retry_after=120", 6).replace("[retry]", "[limits]\nmax_wait = \"1m\"\n[retry]");
    let message = f.run(&job).await.unwrap_err().to_string();
    assert!(
        message
            .contains("returned 503 and asked to wait 2m (503 with Retry-After: 120), more than limits.max_wait (1m)"),
        "{message}"
    );
    assert_eq!(f.requests("/offset"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_keeps_failing_stops_the_run_with_what_was_written_kept() {
    let f = Fixture::new(N).await;
    // The first page succeeds on its third attempt; with two attempts, it fails for good.
    let message = f.run(&job("flaky=2&flaky_as=503", 2)).await.unwrap_err().to_string();
    assert!(message.contains("returned 503 after 2 attempts"), "{message}");
    assert!(message.contains("(body: \"{\\\"detail\\\":\\\"injected fault\\\"}\")"), "{message}");
    assert!(message.contains("page 1"), "{message}");
    assert_eq!(f.requests("/offset"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_client_errors_are_not_retried() {
    for status in [400, 401, 403, 404, 422] {
        let f = Fixture::new(N).await;
        let message = f.run(&job(&format!("flaky=5&flaky_as={status}"), 6)).await.unwrap_err().to_string();
        assert!(message.contains(&format!("returned {status} (body")), "{message}");
        assert_eq!(f.requests("/offset"), 1, "{status} is not retried");
    }
}
