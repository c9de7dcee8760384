//! Concurrency: bounded in flight, ordered output, the same bytes at any concurrency.

use std::time::Duration;

use harvest_mock::MockConfig;

use crate::support::{assert_keeps_to_bucket, one_to, part_files, Fixture, Jitter};

async fn slow_fixture(records: u64, latency_ms: u64) -> Fixture {
    Fixture::with(MockConfig { records, latency: Duration::from_millis(latency_ms), ..Default::default() }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_never_sees_more_than_concurrency_or_the_rate() {
    let f = slow_fixture(400, 30).await;
    let job = r#"
name = "t"
[request]
url = "{base}/t/{tenant}/offset"
[records]
path = "$.items[*]"
[pagination]
kind = "offset"
page_size = 50
total = "$.total"
[partitions]
tenant = ["a", "b", "c", "d"]
[limits]
concurrency = 3
requests_per_second = 40.0
burst = 3
"#;
    let jitter = Jitter::start().await;
    let summary = f.run(job).await.unwrap();
    let jitter = jitter.finish().await;
    assert_eq!(summary.records, 1600);
    let stats = &f.server.stats;
    assert!(stats.max_in_flight() <= 3, "in flight: {}", stats.max_in_flight());
    assert_eq!(stats.max_in_flight(), 3, "the bound is also reached");
    let arrivals: Vec<Duration> = stats.log().iter().map(|s| s.at).collect();
    assert_eq!(arrivals.len(), 32);
    assert_keeps_to_bucket(&arrivals, 40.0, 3.0, jitter);
    for records in f.records_by_partition("t").values() {
        let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, one_to(400));
    }
}

/// The bytes a job writes at `concurrency`. Each response is 2 to 12 ms late (a seeded draw
/// per request), so that pages fetched ahead come back out of the order they were asked in
/// every time, not only when the scheduler happens to reorder them.
async fn bytes_at(path: &str, records: &str, pagination: &str, n: u64, concurrency: usize) -> (Vec<u8>, u64) {
    let config = MockConfig {
        records: n,
        latency: Duration::from_millis(2),
        jitter: Duration::from_millis(10),
        seed: n,
        ..Default::default()
    };
    let f = Fixture::with(config).await;
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"{records}\"\n[pagination]\n{pagination}\n[limits]\nconcurrency = {concurrency}\n"
    );
    f.run(&job).await.unwrap_or_else(|e| panic!("{path} at {concurrency}: {e}"));
    assert_eq!(f.ids("t"), one_to(n), "{path} at {concurrency}");
    let files = part_files(&f.out().join("t"));
    (files.iter().flat_map(|p| std::fs::read(p).unwrap()).collect(), f.server.stats.max_in_flight())
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_fetched_ahead_are_written_in_order() {
    let cases = [
        ("/offset", "$.items[*]", "kind = \"offset\"\npage_size = 50\ntotal = \"$.total\""),
        ("/offset?total=omit", "$.items[*]", "kind = \"offset\"\npage_size = 50"),
        ("/offset?total=omit&past_end=404", "$.items[*]", "kind = \"offset\"\npage_size = 50"),
        ("/array?max_page_size=30", "$[*]", "kind = \"offset\"\npage_size = 50"),
        // Pages shrink part way: a short page in the middle moves every page fetched after it.
        ("/offset?shrink_at=310", "$.items[*]", "kind = \"offset\"\npage_size = 50\ntotal = \"$.total\""),
        ("/array?shrink_at=310", "$[*]", "kind = \"offset\"\npage_size = 50"),
        ("/page", "$.data[*]", "kind = \"page\"\npage_size = 50\ntotal_pages = \"$.total_pages\""),
        ("/page?total=omit", "$.data[*]", "kind = \"page\"\npage_size = 50"),
        ("/page?total=omit&past_end=422", "$.data[*]", "kind = \"page\"\npage_size = 50"),
    ];
    for n in [1000, 1037] {
        for (path, records, pagination) in cases {
            let (one, _) = bytes_at(path, records, pagination, n, 1).await;
            let (eight, in_flight) = bytes_at(path, records, pagination, n, 8).await;
            assert!(one == eight, "{path}, N = {n}: concurrency 8 wrote other bytes than concurrency 1");
            assert!(in_flight > 1, "{path}, N = {n}: pages were fetched ahead ({in_flight} in flight)");
        }
    }
}
