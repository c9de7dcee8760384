//! Micro-benchmark: one page of 100 mock records (~58 KB) from response bytes to NDJSON lines,
//! the work the pipeline does per page. `cargo bench --bench extract`.
//!
//! `raw` is the fast path (names, indexes and wildcards over a borrowed parse, the final array
//! split in one scan); `filter` goes through serde_json_path over a full `Value`; `validate`
//! is a bare validating parse, for scale. `schema/infer` is the Parquet sink's per-page work
//! before decoding: the page's records walked once to infer their schema.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use harvest::jsonpath::{Document, JsonPath};
use harvest::mock::Dataset;
use harvest::schema::{Rules, Ty};

fn page(records: u64, pretty: bool) -> Vec<u8> {
    let data = Dataset::new(records);
    let mut body = b"{\"total\":100,\"items\":[".to_vec();
    for i in 0..records {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(data.record(i));
    }
    body.extend_from_slice(b"]}");
    if pretty {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        body = serde_json::to_vec_pretty(&value).unwrap();
    }
    body
}

fn extract(body: &[u8], path: &JsonPath) -> usize {
    let doc = Document::parse(body).unwrap();
    let mut lines = Vec::with_capacity(body.len());
    path.write_records(&doc, &mut lines).unwrap();
    lines.len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("page_of_100");
    for (name, pretty) in [("compact", false), ("indented", true)] {
        let body = page(100, pretty);
        group.throughput(Throughput::Bytes(body.len() as u64));
        let raw = JsonPath::parse("$.items[*]").unwrap();
        let filter = JsonPath::parse("$.items[?@.id > 0]").unwrap();
        group.bench_function(format!("raw/{name}"), |b| b.iter(|| extract(&body, &raw)));
        group.bench_function(format!("filter/{name}"), |b| b.iter(|| extract(&body, &filter)));
        group.bench_function(format!("validate/{name}"), |b| {
            b.iter(|| serde_json::from_slice::<&serde_json::value::RawValue>(&body).unwrap().get().len())
        });
    }
    let body = page(100, false);
    let mut lines = Vec::new();
    JsonPath::parse("$.items[*]").unwrap().write_records(&Document::parse(&body).unwrap(), &mut lines).unwrap();
    group.throughput(Throughput::Bytes(lines.len() as u64));
    group.bench_function("schema/infer", |b| {
        b.iter(|| {
            let mut ty = Ty::record();
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                ty.widen_record(line, Rules::default());
            }
            ty
        })
    });
    group.bench_function("schema/infer_page", |b| {
        b.iter(|| {
            let mut ty = Ty::record();
            ty.widen_page(&lines, Rules::default()).unwrap();
            ty
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
