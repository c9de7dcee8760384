//! Micro-benchmark: one page of 100 mock records (~58 KB) from response bytes to NDJSON lines,
//! the work the pipeline does per page. `cargo bench --bench extract`.
//!
//! `raw` is the fast path (names, indexes and wildcards over a borrowed parse, the final array
//! split in one scan); `filter` goes through serde_json_path over a full `Value`; `validate`
//! is a bare validating parse, for scale. `schema/infer` is the Parquet sink's per-page work
//! before decoding: the page's records walked once to infer their schema. The `parquet` group
//! is the work of the Arrow and Parquet crates on the same records, per record: arrow-json's
//! decoding of 100- and 1,000-record pages, the Parquet encoding (zstd) of decoded rows, and
//! the two together as the sink chains them (pages decoded, 512 rows at a time encoded).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::SchemaRef;
use arrow_select::concat::concat_batches;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use harvest::jsonpath::{Document, JsonPath};
use harvest::schema::{Rules, Ty};
use harvest_mock::Dataset;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

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

/// `count` mock records, one compact JSON object a line.
fn lines(count: u64) -> Vec<u8> {
    let data = Dataset::new(count);
    let mut lines = Vec::new();
    for i in 0..count {
        lines.extend_from_slice(data.record(i));
        lines.push(b'\n');
    }
    lines
}

/// `lines` cut into pages of `rows` records.
fn pages(lines: &[u8], rows: usize) -> Vec<&[u8]> {
    let ends: Vec<usize> = memchr::memchr_iter(b'\n', lines).map(|end| end + 1).collect();
    let mut start = 0;
    ends.chunks(rows)
        .map(|chunk| {
            let page = &lines[start..chunk[chunk.len() - 1]];
            start = chunk[chunk.len() - 1];
            page
        })
        .collect()
}

fn decoder(schema: &SchemaRef, rows: usize) -> Decoder {
    ReaderBuilder::new(schema.clone()).with_batch_size(rows.max(128)).with_strict_mode(true).build_decoder().unwrap()
}

/// A Parquet writer as the sink sets one up, into memory.
fn writer(schema: &SchemaRef) -> ArrowWriter<Vec<u8>> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_page_size_limit(128 << 10)
        .build();
    ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).unwrap()
}

fn parquet(c: &mut Criterion) {
    const RECORDS: usize = 65_536;
    let lines = lines(RECORDS as u64);
    let mut ty = Ty::record();
    ty.widen_page(&lines, Rules::default()).unwrap();
    let schema: SchemaRef = Arc::new(ty.arrow_schema());
    let mut group = c.benchmark_group("parquet");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for rows in [100, 1000] {
        let pages = pages(&lines, rows);
        let mut decoder = decoder(&schema, rows);
        group.bench_function(format!("decode/pages_of_{rows}"), |b| {
            b.iter(|| {
                pages
                    .iter()
                    .map(|page| {
                        decoder.decode(page).unwrap();
                        decoder.flush().unwrap().unwrap().num_rows()
                    })
                    .sum::<usize>()
            })
        });
    }
    let mut decoder = decoder(&schema, RECORDS);
    decoder.decode(&lines).unwrap();
    let batch = decoder.flush().unwrap().unwrap();
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut writer = writer(&schema);
            for at in (0..RECORDS).step_by(512) {
                writer.write(&batch.slice(at, 512)).unwrap();
            }
            writer.into_inner().unwrap().len()
        })
    });
    let pages = pages(&lines, 100);
    let mut decoder = self::decoder(&schema, 100);
    group.bench_function("decode_and_encode", |b| {
        b.iter(|| {
            let mut writer = writer(&schema);
            let mut queued = Vec::new();
            for page in &pages {
                decoder.decode(page).unwrap();
                queued.push(decoder.flush().unwrap().unwrap());
                if queued.iter().map(RecordBatch::num_rows).sum::<usize>() >= 512 {
                    writer.write(&concat_batches(&schema, &queued).unwrap()).unwrap();
                    queued.clear();
                }
            }
            writer.write(&concat_batches(&schema, &queued).unwrap()).unwrap();
            writer.into_inner().unwrap().len()
        })
    });
    group.finish();
}

criterion_group!(parquet_group, parquet);
criterion_main!(benches, parquet_group);
