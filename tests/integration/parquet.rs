//! Parquet output: read back equal to NDJSON, schemas that grow, declared schemas, DuckDB.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::support::{one_to, part_files, python_with, Fixture};

fn job(name: &str, path: &str, output: &str) -> String {
    format!(
        "name = \"{name}\"\n[request]\nurl = \"{{base}}/{path}\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\n[output]\n{output}\n"
    )
}

/// Every Parquet part under `root`, in name order, each as its batches.
fn parts(root: &Path) -> Vec<(PathBuf, Vec<RecordBatch>)> {
    part_files(root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|path| {
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            let batches = reader.map(|b| b.unwrap()).collect();
            (path, batches)
        })
        .collect()
}

/// The rows of every part as JSON objects, nulls written out.
fn rows(root: &Path) -> Vec<Value> {
    part_files(root).iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).flat_map(|p| rows_of(p)).collect()
}

/// Field by field: a missing field is a null; integers compare exactly, other numbers as
/// Float64.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys().chain(y.keys()).all(|k| same(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null)))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_reads_back_equal_to_ndjson() {
    let f = Fixture::new(1234).await;
    f.run(&job("nd", "offset", "format = \"ndjson\"")).await.unwrap();
    f.run(&job("pq", "offset", "format = \"parquet\"")).await.unwrap();
    let ndjson = f.records("nd");
    let parquet = rows(&f.out().join("pq"));
    assert_eq!(parquet.len(), 1234);
    for (n, p) in ndjson.iter().zip(&parquet) {
        assert!(same(n, p), "\nndjson:  {n}\nparquet: {p}");
    }
    // The values the rules are about, named.
    let third = &parquet[2];
    assert_eq!(third["snowflake"].as_i64(), Some(1_234_567_890_123_456_792), "Int64 exact beyond 2^53");
    assert_eq!(third["nickname"], Value::String(String::new()), "an empty string stays a string");
    assert_eq!(parquet[0]["nickname"], Value::Null, "and a null a null");
    assert!(third["notes"].as_str().unwrap().contains("ünïcödé ✓, quotes \"ok\", backslash \\ and tab\t end"));

    let (_, batches) = parts(&f.out().join("pq")).remove(0);
    let schema = batches[0].schema();
    let ty = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    assert_eq!(ty("id"), DataType::Int64);
    assert_eq!(ty("score"), DataType::Float64);
    assert_eq!(ty("created_at"), DataType::Utf8, "timestamps are kept as text unless asked");
    assert_eq!(ty("deleted_at"), DataType::Null, "always null so far");
    assert!(matches!(ty("tags"), DataType::List(item) if item.data_type() == &DataType::Utf8));
    assert!(matches!(ty("address"), DataType::Struct(fields) if fields.len() == 3));

    // With timestamps = "infer", RFC 3339 strings become instants.
    f.run(&job("ts", "offset", "format = \"parquet\"\ntimestamps = \"infer\"")).await.unwrap();
    let (_, batches) = parts(&f.out().join("ts")).remove(0);
    let created = batches[0].column_by_name("created_at").unwrap();
    assert_eq!(created.data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())));
    let micros = created.as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>().unwrap().value(0);
    let expected = chrono::DateTime::parse_from_rfc3339(ndjson[0]["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(micros, expected.timestamp_micros());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_growing_schema_starts_new_parts_and_loses_nothing() {
    let f = Fixture::new(1000).await;
    let output = "format = \"parquet\"\ninfer_sample = 100";
    f.run(&job("grow", "offset?gain_field_after=300&float_after=700", output)).await.unwrap();
    let root = f.out().join("grow");
    let parts = parts(&root);
    assert_eq!(parts.len(), 3, "one part per schema: {:?}", parts.iter().map(|p| &p.0).collect::<Vec<_>>());
    let field_type =
        |part: usize, name: &str| parts[part].1[0].schema().field_with_name(name).ok().map(|f| f.data_type().clone());
    assert_eq!((field_type(0, "added"), field_type(0, "amount")), (None, Some(DataType::Int64)));
    assert_eq!((field_type(1, "added"), field_type(1, "amount")), (Some(DataType::Utf8), Some(DataType::Int64)));
    assert_eq!((field_type(2, "added"), field_type(2, "amount")), (Some(DataType::Utf8), Some(DataType::Float64)));

    let rows = rows(&root);
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, one_to(1000), "every id once, in order");
    for row in &rows {
        let id = row["id"].as_u64().unwrap();
        let added = row.get("added").cloned().unwrap_or(Value::Null);
        assert_eq!(added, if id > 300 { Value::String(format!("late {id}")) } else { Value::Null }, "{row}");
        let amount = row["amount"].as_f64().unwrap();
        assert_eq!(amount, if id > 700 { id as f64 + 0.5 } else { id as f64 }, "{row}");
    }
    // The manifest lists each part's schema.
    let manifest = newest_manifest(&root);
    let schemas: Vec<&Value> = manifest["parts"].as_array().unwrap().iter().map(|p| &p["schema"]).collect();
    assert!(schemas[0].to_string().contains(r#"{"name":"amount","type":"int64"}"#), "{}", schemas[0]);
    assert!(schemas[2].to_string().contains(r#"{"name":"amount","type":"float64"}"#), "{}", schemas[2]);
    assert_eq!(manifest["parts"][1]["partitions"][0]["records"], serde_json::json!([300, 700]));
}

fn newest_manifest(root: &Path) -> Value {
    let mut manifests: Vec<PathBuf> =
        std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().map(|e| e.path()).collect();
    manifests.sort();
    serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap()
}

fn declared_schema(f: &Fixture, edit: impl Fn(&mut Value)) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/schemas/mock.json")).unwrap();
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    edit(&mut schema);
    let path = f.dir.path().join("schema.json");
    std::fs::write(&path, schema.to_string()).unwrap();
    path.display().to_string()
}

fn set_field(schema: &mut Value, name: &str, field: Value) {
    let fields = schema["fields"].as_array_mut().unwrap();
    let at = fields.iter().position(|f| f["name"] == name).unwrap();
    fields[at] = field;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_schema_is_written_as_declared() {
    let f = Fixture::new(250).await;
    let schema = declared_schema(&f, |_| {});
    f.run(&job("declared", "offset", &format!("format = \"parquet\"\nschema = \"{schema}\""))).await.unwrap();
    let parts = parts(&f.out().join("declared"));
    let arrow = parts[0].1[0].schema();
    let names: Vec<&str> = arrow.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names[..4], ["id", "name", "email", "nickname"]);
    assert!(!arrow.field_with_name("id").unwrap().is_nullable());
    let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    assert_eq!(arrow.field_with_name("deleted_at").unwrap().data_type(), &timestamp);
    assert_eq!(arrow.field_with_name("notes").unwrap().data_type(), &DataType::Utf8);
    let rows = rows(&f.out().join("declared"));
    assert_eq!(rows.len(), 250);
    let notes: Value = serde_json::from_str(rows[0]["notes"].as_str().unwrap()).unwrap();
    assert!(notes.as_str().unwrap().starts_with("Record 1: naïve"), "a json column holds JSON text");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_does_not_fit_is_a_clear_error_and_what_was_written_stays() {
    let f = Fixture::new(250).await;
    // manager_id is null for every fourth id: declared non-nullable, id 4 does not fit.
    let schema = declared_schema(&f, |s| {
        set_field(s, "manager_id", serde_json::json!({"name": "manager_id", "type": "int64", "nullable": false}))
    });
    let toml = job("strict", "offset", &format!("format = \"parquet\"\nschema = \"{schema}\""))
        .replace("page_size = 100", "page_size = 2");
    let err = f.run(&toml).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "record 1 of page 1 of the job does not fit the schema in {schema}: field `manager_id`: expected int64, \
             found null"
        )),
        "{err}"
    );
    // The page before it is written, under its final name.
    let ids: Vec<u64> = rows(&f.out().join("strict")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2]);

    // With on_mismatch = "json", what does not fit goes to _rejected and the run completes.
    let schema =
        declared_schema(&f, |s| set_field(s, "nickname", serde_json::json!({"name": "nickname", "type": "int64"})));
    let toml =
        job("lenient", "offset", &format!("format = \"parquet\"\nschema = \"{schema}\"\non_mismatch = \"json\""));
    f.run(&toml).await.unwrap();
    let rows = rows(&f.out().join("lenient"));
    assert_eq!(rows.len(), 250);
    assert_eq!((&rows[0]["nickname"], &rows[0]["_rejected"]), (&Value::Null, &Value::Null), "null fits");
    assert_eq!(rows[1]["nickname"], Value::Null);
    assert_eq!(rows[1]["_rejected"], Value::String(r#"{"nickname":"nick2"}"#.into()));
    assert_eq!(rows[2]["_rejected"], Value::String(r#"{"nickname":""}"#.into()));
    assert_eq!(rows[2]["id"], 3, "the rest of the record is kept");
}

/// Run a Python script; its stdout is JSON.
fn python_json(python: &str, script: &str) -> Value {
    let out = std::process::Command::new(python).args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// 1,000 records whose schema grows (a field after id 300, a float after id 700), in parts
/// of 250 rows: the output other tools must read as one table.
async fn grown_and_rotated(name: &str) -> Fixture {
    let f = Fixture::new(1000).await;
    let output = "format = \"parquet\"\ninfer_sample = 100\nrows_per_file = 250";
    f.run(&job(name, "offset?gain_field_after=300&float_after=700", output)).await.unwrap();
    f
}

/// The sum of `amount` over those records.
fn grown_amount_sum() -> f64 {
    (1..=1000).map(|id| if id > 700 { id as f64 + 0.5 } else { id as f64 }).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_reads_the_output_as_one_table() {
    let Some(python) = python_with("duckdb") else { return };
    let f = grown_and_rotated("duck").await;
    let glob = f.out().join("duck").join("*.parquet");
    let script = format!(
        r#"
import duckdb, json
t = "read_parquet('{glob}', union_by_name = true)"
q = lambda sql: duckdb.sql(sql.replace("@T", t)).fetchall()
print(json.dumps({{
  "count": q("select count(*) from @T")[0][0],
  "distinct": q("select count(distinct id) from @T")[0][0],
  "min_max": list(q("select min(id), max(id) from @T")[0]),
  "lat": q("select address.geo.lat from @T where id = 5")[0][0],
  "city": q("select address.city from @T where id = 5")[0][0],
  "added": q("select count(added) from @T")[0][0],
  "amount_type": q("select typeof(amount) from @T limit 1")[0][0],
  "amount_sum": q("select sum(amount) from @T")[0][0],
  "snowflake": q("select snowflake from @T where id = 3")[0][0],
  "files": q("select count(distinct filename) from read_parquet('{glob}', filename = true)")[0][0],
}}))
"#,
        glob = glob.display()
    );
    let got = python_json(&python, &script);
    let dataset = harvest_mock::Dataset::new(5);
    let fifth: Value = serde_json::from_slice(dataset.record(4)).unwrap();
    assert_eq!(got["count"], 1000);
    assert_eq!(got["distinct"], 1000);
    assert_eq!(got["min_max"], serde_json::json!([1, 1000]));
    assert_eq!(got["lat"], fifth["address"]["geo"]["lat"]);
    assert_eq!(got["city"], fifth["address"]["city"]);
    assert_eq!(got["added"], 700);
    assert_eq!(got["amount_type"], "DOUBLE");
    assert_eq!(got["amount_sum"].as_f64(), Some(grown_amount_sum()));
    assert_eq!(got["snowflake"], 1_234_567_890_123_456_792u64);
    // Rotated every 250 rows and at each widening (ids 301 and 701): 1-250, 251-300,
    // 301-550, 551-700, 701-950, 951-1000.
    assert_eq!(got["files"], 6, "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_compression_writes_readable_parts_with_statistics() {
    let f = Fixture::new(300).await;
    for (name, expected) in [("zstd", "ZSTD"), ("snappy", "SNAPPY"), ("none", "UNCOMPRESSED")] {
        let output = format!("format = \"parquet\"\ncompression = \"{name}\"\nrow_group_size = 120");
        f.run(&job(name, "offset", &output)).await.unwrap();
        let root = f.out().join(name);
        let file = std::fs::File::open(&part_files(&root)[0]).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let metadata = builder.metadata().clone();
        assert_eq!(metadata.num_row_groups(), 3, "row groups of 120 rows");
        let id = metadata.row_group(0).column(0);
        assert_eq!(format!("{:?}", id.compression()).split('(').next().unwrap(), expected);
        let stats = id.statistics().expect("column statistics");
        assert_eq!(stats.min_bytes_opt(), Some(&1i64.to_le_bytes()[..]));
        assert_eq!(stats.max_bytes_opt(), Some(&120i64.to_le_bytes()[..]));
        assert_eq!(rows(&root).len(), 300);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_side_by_side_keep_their_order_and_max_records_cuts_exactly() {
    let f = Fixture::new(450).await;
    let toml = "name = \"parts\"\n[request]\nurl = \"{base}/t/{tenant}/offset\"\n[records]\npath = \"$.items[*]\"\n\
                [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\nmax_records = 250\n\
                [partitions]\ntenant = [\"a\", \"b\", \"c\"]\n[limits]\nconcurrency = 8\n\
                [output]\nformat = \"parquet\"\nrows_per_file = 320\ninfer_sample = 100\n";
    f.run(toml).await.unwrap();
    let root = f.out().join("parts");
    let manifest = newest_manifest(&root);
    let mut by_partition: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for part in manifest["parts"].as_array().unwrap() {
        let rows = rows_of(&root.join(part["file"].as_str().unwrap()));
        for slice in part["partitions"].as_array().unwrap() {
            let (from, to) = (slice["rows"][0].as_u64().unwrap() as usize, slice["rows"][1].as_u64().unwrap() as usize);
            let ids = by_partition.entry(slice["partition"].as_str().unwrap().to_string()).or_default();
            ids.extend(rows[from..to].iter().map(|r| r["id"].as_u64().unwrap()));
        }
    }
    assert_eq!(by_partition.len(), 3);
    for (partition, ids) in by_partition {
        assert_eq!(ids, one_to(250), "partition {partition}");
    }
}

/// The rows of one Parquet file as JSON objects, nulls written out.
fn rows_of(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).unwrap();
    let batches: Vec<RecordBatch> =
        ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()).collect();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    writer.write_batches(&batches.iter().collect::<Vec<_>>()).unwrap();
    writer.finish().unwrap();
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pyarrow_reads_the_parts_as_one_dataset_with_a_unified_schema() {
    let Some(python) = python_with("pyarrow") else { return };
    let f = grown_and_rotated("arrow").await;
    let script = format!(
        r#"
import glob, json, pyarrow as pa, pyarrow.parquet as pq, pyarrow.dataset as ds
files = sorted(glob.glob("{dir}/*.parquet"))
schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
table = ds.dataset(files, format="parquet", schema=schema).to_table()
print(json.dumps({{
  "rows": table.num_rows,
  "ids": sorted(table.column("id").to_pylist()),
  "amount": str(schema.field("amount").type),
  "amount_sum": sum(table.column("amount").to_pylist()),
  "added": table.column("added").null_count,
  "lat": table.column("address").combine_chunks().field("geo").field("lat").to_pylist()[4],
}}))
"#,
        dir = f.out().join("arrow").display()
    );
    let got = python_json(&python, &script);
    let fifth: Value = serde_json::from_slice(harvest_mock::Dataset::new(5).record(4)).unwrap();
    assert_eq!(got["rows"], 1000);
    assert_eq!(got["ids"], serde_json::json!(one_to(1000)));
    assert_eq!(got["amount"], "double");
    assert_eq!(got["amount_sum"].as_f64(), Some(grown_amount_sum()));
    assert_eq!(got["added"], 300, "null before the field existed");
    assert_eq!(got["lat"], fifth["address"]["geo"]["lat"]);
}

/// Polars 2 as a new user would read a run whose schema grew: `pl.scan_parquet(parts)` refuses
/// the parts (an extra column outside the expected schema), so the README gives each part read
/// on its own and concatenated with `how="diagonal_relaxed"`; for NDJSON parts,
/// `infer_schema_length=None` so a column that turns float late is read as float.
#[tokio::test(flavor = "multi_thread")]
async fn polars_reads_a_grown_run_the_way_the_readme_says() {
    let Some(python) = python_with("polars") else { return };
    let f = grown_and_rotated("polars").await;
    let ndjson = Fixture::new(1000).await;
    ndjson.run(&job("grown", "offset?gain_field_after=300&float_after=700", "rows_per_file = 250")).await.unwrap();
    let script = format!(
        r#"
import glob, json, polars as pl
parts = sorted(glob.glob("{parquet}/*.parquet"))
try:
    pl.scan_parquet(parts).collect()
    scan = "read"
except Exception as e:
    scan = "refused"
table = pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed")
lines = sorted(glob.glob("{ndjson}/*.ndjson"))
rows = pl.concat([pl.read_ndjson(p, infer_schema_length=None) for p in lines], how="diagonal_relaxed")
print(json.dumps({{
  "scan": scan,
  "rows": table.height,
  "ids": table["id"].sort().to_list(),
  "amount": str(table["amount"].dtype),
  "amount_sum": table["amount"].sum(),
  "added": table["added"].null_count(),
  "ndjson_rows": rows.height,
  "ndjson_amount": str(rows["amount"].dtype),
  "ndjson_sum": rows["amount"].sum(),
}}))
"#,
        parquet = f.out().join("polars").display(),
        ndjson = ndjson.out().join("grown").display()
    );
    let got = python_json(&python, &script);
    assert_eq!(got["scan"], "refused", "Polars now reads the parts with scan_parquet: the README can say so");
    assert_eq!(got["rows"], 1000);
    assert_eq!(got["ids"], serde_json::json!(one_to(1000)));
    assert_eq!(got["amount"], "Float64");
    assert_eq!(got["amount_sum"].as_f64(), Some(grown_amount_sum()));
    assert_eq!(got["added"], 300, "null before the field existed");
    assert_eq!((got["ndjson_rows"].as_u64(), got["ndjson_amount"].as_str()), (Some(1000), Some("Float64")));
    assert_eq!(got["ndjson_sum"].as_f64(), Some(grown_amount_sum()));
}
