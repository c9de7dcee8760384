//! Every pagination style harvests ids 1..N exactly once, in order, with the request count
//! the server expects; and every stop condition.

use harvest::error::Error;
use harvest::paginate::StopReason;

use crate::support::{one_to, Fixture, FAST_RETRY};

const N: u64 = 1234;

/// Harvest `N` records through `path` with the given records path and pagination section.
async fn harvest(path: &str, records: &str, pagination: &str, requests: usize) -> (Fixture, StopReason) {
    let f = Fixture::new(N).await;
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"{records}\"\n[pagination]\n{pagination}\n[limits]\nconcurrency = 1\n"
    );
    let summary = f.run(&job).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let route = path.split('?').next().unwrap();
    assert_eq!(f.ids("t"), one_to(N), "{path}: every id once, in order");
    assert_eq!(summary.records, N);
    assert_eq!(f.requests(route), requests, "{path}: requests the server saw");
    (f, summary.partitions[0].stop.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn offset_with_a_total_stops_at_the_total() {
    let (_, stop) =
        harvest("/offset", "$.items[*]", "kind = \"offset\"\npage_size = 100\ntotal = \"$.total\"", 13).await;
    assert_eq!(stop, StopReason::TotalReached { total: N });
}

#[tokio::test(flavor = "multi_thread")]
async fn offset_without_a_total_confirms_the_short_page() {
    let (_, stop) = harvest("/offset?total=omit", "$.items[*]", "kind = \"offset\"\npage_size = 100", 14).await;
    assert_eq!(stop, StopReason::EndConfirmed { status: 200 });
}

#[tokio::test(flavor = "multi_thread")]
async fn offset_over_a_bare_array() {
    harvest("/array", "$[*]", "kind = \"offset\"\npage_size = 100", 14).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_with_total_pages() {
    let (_, stop) =
        harvest("/page", "$.data[*]", "kind = \"page\"\npage_size = 100\ntotal_pages = \"$.total_pages\"", 13).await;
    assert_eq!(stop, StopReason::TotalReached { total: 13 });
}

#[tokio::test(flavor = "multi_thread")]
async fn page_with_a_record_total() {
    harvest("/page", "$.data[*]", "kind = \"page\"\npage_size = 100\ntotal = \"$.total\"", 13).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn page_without_totals_confirms_the_short_page() {
    harvest("/page?total=omit", "$.data[*]", "kind = \"page\"\npage_size = 100", 14).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_in_the_body() {
    let (f, stop) =
        harvest("/cursor", "$.items[*]", "kind = \"cursor\"\nnext = \"$.next_cursor\"\npage_size = 100", 13).await;
    assert_eq!(stop, StopReason::NoNext);
    // Cursors like `p100+x/0=` go back encoded exactly once.
    let log = f.server.stats.log();
    assert!(log[1].uri.contains("cursor=p100%2Bx%2F0%3D"), "{}", log[1].uri);
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_from_a_response_header_sent_as_a_header() {
    let (f, _) = harvest(
        "/cursor-header",
        "$[*]",
        "kind = \"cursor\"\nnext_header = \"X-Next-Cursor\"\ncursor_in = \"header\"\ncursor_param = \"X-Cursor\"\nlimit_param = \"limit\"\npage_size = 100",
        13,
    )
    .await;
    let log = f.server.stats.log();
    assert!(log[1].headers.iter().any(|(k, v)| k == "x-cursor" && v == "p100+x/0="), "{:?}", log[1].headers);
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_with_has_more() {
    let (_, stop) = harvest(
        "/has-more",
        "$.data[*]",
        "kind = \"cursor\"\ncursor_param = \"starting_after\"\nnext = \"$.data[-1].id\"\nhas_more = \"$.has_more\"\npage_size = 100",
        13,
    )
    .await;
    assert_eq!(stop, StopReason::HasMoreFalse);
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_with_has_more_as_a_string() {
    harvest(
        "/has-more?has_more_as=string",
        "$.data[*]",
        "kind = \"cursor\"\ncursor_param = \"starting_after\"\nnext = \"$.data[-1].id\"\nhas_more = \"$.has_more\"\npage_size = 100",
        13,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graphql_cursor_in_a_post_body() {
    let f = Fixture::new(N).await;
    let job = r#"
name = "t"
[request]
url = "{base}/graphql"
method = "POST"
body = { query = "query($first: Int, $after: String) { items(first: $first, after: $after) { nodes { id } } }" }
[records]
path = "$.data.items.nodes[*]"
[pagination]
kind = "cursor"
params_in = "body"
cursor_param = "variables.after"
limit_param = "variables.first"
page_size = 100
next = "$.data.items.pageInfo.endCursor"
has_more = "$.data.items.pageInfo.hasNextPage"
"#;
    let summary = f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(N));
    assert_eq!(f.requests("/graphql"), 13);
    assert_eq!(summary.partitions[0].stop, StopReason::HasMoreFalse);
}

#[tokio::test(flavor = "multi_thread")]
async fn next_url() {
    let (_, stop) =
        harvest("/next-url?per_page=100", "$.results[*]", "kind = \"next_url\"\nnext = \"$.next\"", 13).await;
    assert_eq!(stop, StopReason::NoNext);
}

#[tokio::test(flavor = "multi_thread")]
async fn link_header() {
    harvest("/link?per_page=100", "$[*]", "kind = \"link_header\"", 13).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn none_fetches_one_page() {
    let f = Fixture::new(N).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\nparams = { limit = 50 }\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n";
    let summary = f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(50));
    assert_eq!(f.requests("/offset"), 1);
    assert_eq!(summary.partitions[0].stop, StopReason::SinglePage);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_pages_and_max_records() {
    let f = Fixture::new(N).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/cursor\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"cursor\"\npage_size = 100\nmax_pages = 3\n[limits]\nconcurrency = 1\n";
    let summary = f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(300));
    assert_eq!(f.requests("/cursor"), 3);
    assert_eq!(summary.partitions[0].stop, StopReason::MaxPages { pages: 3 });

    let f = Fixture::new(N).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 100\nmax_records = 250\n[limits]\nconcurrency = 1\n";
    let summary = f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(250));
    assert_eq!(f.requests("/offset"), 3);
    assert_eq!(summary.partitions[0].stop, StopReason::MaxRecords { records: 250 });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_cursor_or_link_is_an_error_not_a_loop() {
    for (path, kind, records) in [
        ("/cursor?loop=2", "kind = \"cursor\"\npage_size = 100", "$.items[*]"),
        ("/next-url?per_page=100&loop=2", "kind = \"next_url\"", "$.results[*]"),
        ("/link?per_page=100&loop=2", "kind = \"link_header\"", "$[*]"),
    ] {
        let f = Fixture::new(N).await;
        let job = format!("name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"{records}\"\n[pagination]\n{kind}\n");
        let err = f.run(&job).await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Page { .. }), "{path}: {message}");
        assert!(message.contains("a second time"), "{path}: {message}");
        assert!(f.requests(path.split('?').next().unwrap()) <= 4, "{path}: stopped at once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_400_or_422_past_the_end_is_not_a_failure() {
    for status in [404, 400, 422] {
        let (_, stop) = harvest(
            &format!("/offset?total=omit&past_end={status}"),
            "$.items[*]",
            "kind = \"offset\"\npage_size = 100",
            14,
        )
        .await;
        assert_eq!(stop, StopReason::EndConfirmed { status });
        let (_, stop) = harvest(
            &format!("/page?total=omit&past_end={status}"),
            "$.data[*]",
            "kind = \"page\"\npage_size = 100",
            14,
        )
        .await;
        assert_eq!(stop, StopReason::EndConfirmed { status });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_where_no_end_was_expected_fails() {
    let f = Fixture::new(N).await;
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}/nowhere\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\n{FAST_RETRY}"
    );
    let message = f.run(&job).await.unwrap_err().to_string();
    assert!(
        message.contains("GET http://127.0.0.1:") && message.contains("/nowhere?offset=0&limit=100 returned 404"),
        "{message}"
    );
    assert!(message.contains("no such path"), "the body excerpt: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_are_a_cartesian_product_with_encoded_placeholders() {
    let f = Fixture::new(120).await;
    let job = r#"
name = "t"
[request]
url = "{base}/t/{region}/offset"
params = { note = "{kind}", total = "omit" }
[records]
path = "$.items[*]"
[pagination]
kind = "offset"
page_size = 50
[partitions]
region = ["eu west", "a/b", "Zürich"]
kind = ["x", "y z"]
"#;
    let summary = f.run(job).await.unwrap();
    assert_eq!(summary.partitions.len(), 6);
    for p in &summary.partitions {
        assert_eq!(p.records, 120, "{}", p.partition);
    }
    // Partitions run side by side: each holds every id once, in order.
    let by_partition = f.records_by_partition("t");
    assert_eq!(by_partition.len(), 6);
    for (label, records) in by_partition {
        let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, one_to(120), "{label}");
    }
    let uris: Vec<String> = f.server.stats.log().into_iter().map(|s| s.uri).collect();
    for expected in ["/t/eu%20west/offset?", "/t/a%2Fb/offset?", "/t/Z%C3%BCrich/offset?"] {
        assert!(uris.iter().any(|u| u.starts_with(expected)), "{expected} in {uris:?}");
    }
    assert!(uris.iter().any(|u| u.contains("note=y+z")), "{uris:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_page_ends_when_the_last_page_was_full() {
    let f = Fixture::new(1200).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/array\"\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 100\n[limits]\nconcurrency = 1\n";
    let summary = f.run(job).await.unwrap();
    assert_eq!(f.ids("t"), one_to(1200));
    assert_eq!(f.requests("/array"), 13);
    assert_eq!(summary.partitions[0].stop, StopReason::NoRecords);
}

#[tokio::test(flavor = "multi_thread")]
async fn date_range_partitions_fill_start_and_end_placeholders() {
    let f = Fixture::new(30).await;
    let job = r#"
name = "t"
[request]
url = "{base}/offset"
params = { from = "{day}", to = "{day_end}" }
[records]
path = "$.items[*]"
[pagination]
kind = "offset"
total = "$.total"
[partitions]
day = { start = 2024-01-30, end = 2024-02-02, step = "1d" }
"#;
    let summary = f.run(job).await.unwrap();
    assert_eq!(summary.partitions.len(), 3);
    let mut uris: Vec<String> = f.server.stats.log().into_iter().map(|s| s.uri).collect();
    uris.sort();
    assert_eq!(
        uris,
        vec![
            "/offset?from=2024-01-30&to=2024-01-31&offset=0&limit=100",
            "/offset?from=2024-01-31&to=2024-02-01&offset=0&limit=100",
            "/offset?from=2024-02-01&to=2024-02-02&offset=0&limit=100",
        ]
    );
}
