//! What cannot succeed is not asked again, and a hint of no pause is no pause: a server that
//! answers 429 forever with `Retry-After: 0` (or a moment already past) is asked at most
//! `max_attempts` times, with growing gaps, and the whole job holds back with it. Pagination
//! facts read from headers: every form, with pages fetched ahead once the total is known.

use std::time::Duration;

use crate::support::{one_to, Fixture};

/// A job against the mock's `/examples/throttled` (429 to everything) with `hint`.
fn throttled(hint: &str, extra: &str) -> String {
    format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}/examples/throttled?hint={hint}\"\n[records]\npath = \"$[*]\"\n\
         [pagination]\nkind = \"none\"\n[retry]\nmax_attempts = 4\ninitial_backoff = \"80ms\"\nmax_backoff = \"2s\"\n{extra}"
    )
}

/// Run `job` and expect it to fail; a run still going after 20 s (asking in a loop) fails the
/// test with how often the server was asked.
async fn fails(f: &Fixture, job: &str) -> String {
    match tokio::time::timeout(Duration::from_secs(20), f.run(job)).await {
        Ok(result) => result.expect_err("the run fails").to_string(),
        Err(_) => panic!("still running after 20 s, the server asked {} times", f.server.stats.requests()),
    }
}

/// When the server saw each request to `path`, in order.
fn arrivals(f: &Fixture, path: &str) -> Vec<Duration> {
    f.server.stats.log().into_iter().filter(|s| s.uri.split('?').next() == Some(path)).map(|s| s.at).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hint_of_no_wait_backs_off_as_a_retry_and_ends_after_max_attempts() {
    for hint in ["zero", "date", "reset", "ietf", "none"] {
        let f = Fixture::new(10).await;
        let message = fails(&f, &throttled(hint, "")).await;
        assert!(message.contains("returned 429 after 4 attempts"), "{hint}: {message}");
        let at = arrivals(&f, "/examples/throttled");
        assert_eq!(at.len(), 4, "{hint}: the server was asked {} times", at.len());
        // Equal jitter: the k-th wait is in [c/2, c) with c = 80 ms * 2^(k-1), so each gap is
        // at least half its ceiling and none is shorter than the one before.
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        for (k, gap) in gaps.iter().enumerate() {
            let floor = Duration::from_millis(40 << k);
            assert!(*gap >= floor, "{hint}: gap {k} is {gap:?}, under {floor:?}: {gaps:?}");
        }
        assert!(gaps.windows(2).all(|g| g[1] + Duration::from_millis(5) >= g[0]), "{hint}: {gaps:?}");
        assert!(f.out().join("t/_harvest/checkpoint.json").is_file(), "{hint}: the checkpoint is kept");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_one_second_forever_ends_at_max_wait() {
    let f = Fixture::new(10).await;
    let job = throttled("one", "[limits]\nmax_wait = \"3s\"\n").replace("max_attempts = 4", "max_attempts = 50");
    let message = fails(&f, &job).await;
    assert!(message.contains("more than limits.max_wait (3s)"), "{message}");
    let at = arrivals(&f, "/examples/throttled");
    assert_eq!(at.len(), 4, "1 s, 2 s and 3 s were within max_wait, the fourth second was not: {at:?}");
    for gap in at.windows(2).map(|w| w[1] - w[0]) {
        assert!(gap >= Duration::from_millis(990), "each Retry-After was waited: {at:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_without_a_usable_hint_holds_the_whole_job_not_only_its_request() {
    // Pages of 10 ms, one after another: the healthy partition would ask about every 10 ms.
    let f = Fixture::slow(200, 10).await;
    // Two partitions side by side: `flaky=0` serves its pages, `flaky=100` answers 429 with
    // `Retry-After: 0` to each of its pages' first hundred requests.
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset?flaky={f}&flaky_as=429&retry_after=0\"\n\
               [records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 5\n\
               [partitions]\nf = [\"100\", \"0\"]\n[limits]\nconcurrency = 2\n\
               [retry]\nmax_attempts = 3\ninitial_backoff = \"400ms\"\nmax_backoff = \"2s\"\n";
    let message = fails(&f, job).await;
    assert!(message.contains("returned 429 after 3 attempts"), "{message}");
    let log = f.server.stats.log();
    let first_429 = log.iter().find(|s| s.uri.contains("flaky=100")).expect("the throttled partition asked").at;
    // The healthy partition's requests while the job backs off: the 429 leaves 10 ms after
    // its request arrived, a page already on its way may still arrive 10 ms later, and then
    // nothing until half the first backoff (200 ms) has passed.
    let held = log
        .iter()
        .filter(|s| s.uri.contains("flaky=0&"))
        .filter(|s| s.at > first_429 + Duration::from_millis(30) && s.at < first_429 + Duration::from_millis(190))
        .count();
    assert_eq!(held, 0, "the other partition went on while the job backed off: {log:#?}");
    assert!(log.iter().filter(|s| s.uri.contains("flaky=100")).count() <= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_link_to_another_scheme_is_never_followed() {
    let f = Fixture::new(100).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/next-url?per_page=10&next_origin=file://\"\n\
               [records]\npath = \"$.results[*]\"\n[pagination]\nkind = \"next_url\"\n";
    let message = f.run(job).await.unwrap_err().to_string();
    assert!(message.contains("is not http or https; it is not followed"), "{message}");
    assert_eq!(f.requests("/next-url"), 1, "only the first page was asked");
}

/// A page job over `/page` with `totals_in` and `total`, eight in flight.
fn page_job(totals_in: &str, total: &str) -> String {
    format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}/page?totals_in={totals_in}\"\n[records]\npath = \"$.data[*]\"\n\
         [pagination]\nkind = \"page\"\npage_size = 10\n{total}\n[limits]\nconcurrency = 8\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn totals_from_headers_fetch_pages_ahead_and_every_id_once() {
    let cases = [
        ("x-total-count", "total = { header = \"X-Total-Count\" }"),
        ("x-pagination", "total = { header = \"X-Pagination\", path = \"$.total\" }"),
        ("x-pagination", "total_pages = { header = \"X-Pagination\", path = \"$.total_pages\" }"),
        ("content-range", "total = { header = \"Content-Range\" }"),
        ("gitlab", "total_pages = { header = \"X-Total-Pages\" }"),
        ("gitlab", "total = { header = \"x-total\" }"),
    ];
    for (totals_in, total) in cases {
        let f = Fixture::slow(300, 20).await;
        let summary = f.run(&page_job(totals_in, total)).await.unwrap_or_else(|e| panic!("{total}: {e}"));
        assert_eq!(f.ids("t"), one_to(300), "{total}");
        assert_eq!(f.requests("/page"), 30, "{total}: 30 pages, none asked twice, no page past the end");
        assert!(f.server.stats.max_in_flight() >= 4, "{total}: pages were not fetched ahead");
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary.manifest).unwrap()).unwrap();
        assert_eq!(manifest["partitions"][0]["stop"]["reason"], "total_reached", "{total}: {manifest}");
    }
    // An offset job reads its total from a header the same way.
    let f = Fixture::slow(300, 20).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset?totals_in=content-range\"\n[records]\n\
               path = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 10\n\
               total = { header = \"Content-Range\" }\n[limits]\nconcurrency = 8\n";
    f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(300));
    assert!(f.server.stats.max_in_flight() >= 4, "offsets were not fetched ahead");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_header_is_a_missing_fact_and_a_malformed_one_an_error_naming_it() {
    // No totals_in: the header is absent, and a short page ends the harvest as without a total.
    let f = Fixture::new(95).await;
    f.run(&page_job("none-at-all", "total = { header = \"X-Total-Count\" }").replace("?totals_in=none-at-all", ""))
        .await
        .unwrap();
    assert_eq!(f.ids("t"), one_to(95));

    let cases = [
        ("bad-range", "total = { header = \"Content-Range\" }", "the Content-Range header \"items 0-10/abc\""),
        (
            "bad-json",
            "total = { header = \"X-Pagination\", path = \"$.total\" }",
            "the X-Pagination header is not JSON",
        ),
    ];
    for (totals_in, total, expected) in cases {
        let f = Fixture::new(95).await;
        let message = f.run(&page_job(totals_in, total)).await.unwrap_err().to_string();
        assert!(message.contains(expected), "{totals_in}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_and_a_has_more_flag_from_headers() {
    // GitLab's X-Next-Page: a page number, sent back as `page` until it is empty.
    let f = Fixture::new(95).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/page?totals_in=gitlab&per_page=10\"\n[records]\n\
               path = \"$.data[*]\"\n[pagination]\nkind = \"cursor\"\ncursor_param = \"page\"\n\
               next = { header = \"X-Next-Page\" }\n";
    f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(95));
    assert_eq!(f.requests("/page"), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_parameters_reach_the_server_as_written() {
    let f = Fixture::new(30).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\nparams = { fields = [\"a\", \"b\"], \"include[]\" = [\"x\", \"y\"], state = \"all\" }\n\
               [records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n";
    f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(30));
    let uri = f.server.stats.log()[0].uri.clone();
    assert!(uri.contains("fields=a&fields=b&include%5B%5D=x&include%5B%5D=y&state=all"), "{uri}");
}
