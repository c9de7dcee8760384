//! Bad responses: each is a clear error naming the (redacted) URL and the status.

use crate::support::{Fixture, FAST_RETRY};

async fn failure(path: &str, records: &str, extra: &str) -> String {
    let f = Fixture::new(300).await;
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\n{extra}\n[records]\npath = \"{records}\"\n[pagination]\nkind = \"offset\"\n{FAST_RETRY}"
    );
    f.run(&job).await.expect_err("the run fails").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn html_instead_of_json() {
    let message = failure("/offset?html=1", "$.items[*]", "").await;
    assert!(message.contains("GET http://127.0.0.1:"), "{message}");
    assert!(message.contains("not valid JSON"), "{message}");
    assert!(message.contains("content-type text/html"), "{message}");
    assert!(message.contains("We'll be back soon"), "the excerpt: {message}");
    assert!(message.contains("after 2 attempts"), "retried: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_where_the_records_path_expects_an_array() {
    let message = failure("/offset", "$[*]", "").await;
    assert!(
        message.contains("records.path $[*] expects an array at $, but the response has an object there"),
        "{message}"
    );
    assert!(message.contains("GET http://127.0.0.1:"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn graphql_errors_on_a_200() {
    let message = failure("/offset?errors=1", "$.items[*]", "").await;
    assert!(message.contains("the response reports errors at $.errors (HTTP 200)"), "{message}");
    assert!(message.contains("Cannot query field \"itemz\""), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_max_body() {
    let message = failure("/offset", "$.items[*]", "max_body = \"10KiB\"").await;
    assert!(message.contains("larger than max_body (10 KiB)"), "{message}");
}

/// A small compressed body that would decompress past `max_body` (a gzip bomb, declared or
/// not) is refused while it is decompressed, never held whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_body_over_max_body_after_decompression() {
    for gzip in ["1", "hidden"] {
        let f = Fixture::new(3000).await;
        let job = format!(
            "name = \"t\"\n[request]\nurl = \"{{base}}/offset?gzip={gzip}&limit=3000\"\nmax_body = \"256KiB\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n{FAST_RETRY}"
        );
        let message = f.run(&job).await.expect_err("the run fails").to_string();
        assert!(message.contains("larger than max_body (256 KiB)"), "gzip={gzip}: {message}");
        // The compressed body itself was under the limit: the check is on what it inflates to.
        let raw = reqwest::get(format!("{}/offset?gzip=hidden&limit=3000", f.server.url())).await.unwrap();
        let compressed = raw.bytes().await.unwrap().len();
        assert!(compressed < 256 * 1024, "{compressed} bytes compressed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_records_location_is_an_empty_page() {
    let f = Fixture::new(300).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.nothing[*]\"\n[pagination]\nkind = \"offset\"\n";
    let summary = f.run(job).await.unwrap();
    assert_eq!(summary.records, 0);
    assert_eq!(f.requests("/offset"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_refused_is_retried_then_reported() {
    let f = Fixture::new(10).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:{port}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\n{FAST_RETRY}"
    );
    let message = f.run(&job).await.unwrap_err().to_string();
    assert!(message.contains(&format!("GET http://127.0.0.1:{port}/offset?offset=0&limit=100 failed")), "{message}");
    assert!(message.contains("after 2 attempts"), "{message}");
}
