//! How real APIs paginate and break pagination (shared/QUIRKS.md), one case each.

use harvest_mock::{with_odd_forms, Dataset};

use crate::support::{one_to, part_files, Fixture, FAST_RETRY};

const N: u64 = 437;

async fn harvest_all(path: &str, records: &str, pagination: &str) -> Fixture {
    // Every case holds whether pages are fetched one at a time or eight ahead; the fixture
    // returned is the sequential one, whose request count is exact.
    let mut fixture = None;
    for concurrency in [8, 1] {
        let f = Fixture::new(N).await;
        let job = format!(
            "name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"{records}\"\n[pagination]\n{pagination}\n[limits]\nconcurrency = {concurrency}\n"
        );
        f.run(&job).await.unwrap_or_else(|e| panic!("{path} at concurrency {concurrency}: {e}"));
        assert_eq!(f.ids("t"), one_to(N), "{path} at concurrency {concurrency}: every id once, in order");
        fixture = Some(f);
    }
    fixture.expect("ran")
}

#[tokio::test(flavor = "multi_thread")]
async fn silently_capped_page_sizes_leave_no_gap() {
    // Asked 100, served 30: offsets advance by what arrived; a short page is not the end.
    let offset = "kind = \"offset\"\npage_size = 100";
    let f = harvest_all("/offset?max_page_size=30", "$.items[*]", &format!("{offset}\ntotal = \"$.total\"")).await;
    assert_eq!(f.requests("/offset"), 15, "437 / 30 rounded up, no confirming request with a total");
    let f = harvest_all("/offset?max_page_size=30&total=omit", "$.items[*]", offset).await;
    // The page after the first short one confirms the cap; the page after the last, the end.
    assert_eq!(f.requests("/offset"), 16, "15 pages of records and one empty page");
    let page = "kind = \"page\"\npage_size = 100";
    harvest_all("/page?max_page_size=30", "$.data[*]", &format!("{page}\ntotal_pages = \"$.total_pages\"")).await;
    harvest_all("/page?max_page_size=30&total=omit", "$.data[*]", page).await;
    harvest_all("/next-url?per_page=100&max_page_size=30", "$.results[*]", "kind = \"next_url\"").await;
    harvest_all("/cursor?max_page_size=30", "$.items[*]", "kind = \"cursor\"\npage_size = 100").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_page_refused_with_422_names_the_parameter() {
    let f = Fixture::new(N).await;
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}/offset?max_page_size=50&oversize=422\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\npage_size = 500\n{FAST_RETRY}"
    );
    let message = f.run(&job).await.unwrap_err().to_string();
    assert!(message.contains("returned 422"), "{message}");
    assert!(message.contains("lower pagination.page_size: this request asked limit=500"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_next_links_in_every_form() {
    for form in ["absolute", "root", "query", "path"] {
        harvest_all(&format!("/next-url?per_page=50&links={form}"), "$.results[*]", "kind = \"next_url\"").await;
        harvest_all(&format!("/link?per_page=50&links={form}"), "$[*]", "kind = \"link_header\"").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn link_headers_split_unquoted_or_empty_at_the_end() {
    for style in ["link_style=split", "link_style=unquoted", "end=empty"] {
        let f = harvest_all(&format!("/link?per_page=50&{style}"), "$[*]", "kind = \"link_header\"").await;
        assert_eq!(f.requests("/link"), 9, "{style}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_page_says_next_is_null_empty_or_missing() {
    for end in ["null", "empty", "missing"] {
        let f = harvest_all(&format!("/next-url?per_page=50&end={end}"), "$.results[*]", "kind = \"next_url\"").await;
        assert_eq!(f.requests("/next-url"), 9, "{end}");
        let f = harvest_all(&format!("/cursor?end={end}"), "$.items[*]", "kind = \"cursor\"\npage_size = 50").await;
        assert_eq!(f.requests("/cursor"), 9, "{end}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_null_or_missing_on_an_empty_page_end_the_partition() {
    for how in ["null", "missing"] {
        let f = harvest_all(
            &format!("/offset?total=omit&empty_results={how}"),
            "$.items[*]",
            "kind = \"offset\"\npage_size = 100",
        )
        .await;
        assert_eq!(f.requests("/offset"), 6, "{how}: 5 pages and the confirming one");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_unasked_or_undeclared_and_a_wrong_content_type_are_fine() {
    for knob in ["gzip=1", "gzip=hidden", "content_type=text/plain"] {
        harvest_all(&format!("/offset?{knob}"), "$.items[*]", "kind = \"offset\"\ntotal = \"$.total\"").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_written_byte_for_byte() {
    // The mock's records hold non-ASCII text, escapes and integers beyond 2^53, and with
    // `odd=1` JSON that a serializer would write otherwise (`\u00e9`, `\/`, surrogate pairs,
    // `1E2`, `1.50`, `-0`, integers beyond 2^64). Served indented (whitespace between tokens
    // only), they must come out as the compact original bytes, one record a line.
    let data = Dataset::new(N);
    // A filter goes through the full JSONPath engine; what it selects is taken back from the
    // raw response, so it too keeps the server's bytes.
    let filter = ("$.items[?@.id > 0]", "kind = \"offset\"\ntotal = \"$.total\"");
    let simple = ("$.items[*]", "kind = \"cursor\"\npage_size = 100");
    for (path, (records, pagination), odd) in [
        ("/cursor?pretty=1", simple, false),
        ("/cursor?pretty=1&odd=1", simple, true),
        ("/offset?pretty=1&odd=1", filter, true),
    ] {
        let f = harvest_all(path, records, pagination).await;
        assert!(f.server.stats.log()[0].uri.contains("pretty=1"));
        let mut expected = Vec::new();
        for i in 0..N {
            match odd {
                true => expected.extend_from_slice(with_odd_forms(data.record_str(i)).as_bytes()),
                false => expected.extend_from_slice(data.record(i)),
            }
            expected.push(b'\n');
        }
        let files = part_files(&f.out().join("t"));
        assert_eq!(files.len(), 1);
        let written = std::fs::read(&files[0]).unwrap();
        let first = String::from_utf8_lossy(written.split(|b| *b == b'\n').next().unwrap()).into_owned();
        assert!(!odd || first.contains(r#""escaped":"caf\u00e9 \/ \u2713""#), "{first}");
        assert!(written == expected, "{path}: output differs from the served bytes; first record:\n{first}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filter_paths_keep_key_order_and_digits() {
    // A filter path goes through the full JSONPath engine: still key order and every digit.
    let f = harvest_all("/offset?pretty=1", "$.items[?@.id > 0]", "kind = \"offset\"\ntotal = \"$.total\"").await;
    let files = part_files(&f.out().join("t"));
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("{\"id\":1,\"name\":\"Ærøskøbing #1"), "{first}");
    assert!(first.contains("\"snowflake\":1234567890123456790"), "{first}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_link_is_requested_exactly_as_the_server_wrote_it() {
    // The link carries `tag=a%2Bb%2Fc%3D` (already encoded): it must come back byte for byte.
    let f =
        harvest_all("/next-url?per_page=100&tag=a%2Bb%2Fc%3D&links=root", "$.results[*]", "kind = \"next_url\"").await;
    let log = f.server.stats.log();
    assert_eq!(log.len(), 5);
    assert!(log[0].uri.contains("tag=a%2Bb%2Fc%3D"), "{}", log[0].uri);
    for seen in &log[1..] {
        assert!(seen.uri.starts_with("/next-url?per_page=100&tag=a%2Bb%2Fc%3D&links=root&page="), "{}", seen.uri);
    }
}
