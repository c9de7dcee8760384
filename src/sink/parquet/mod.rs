//! Parquet parts: records decoded to Arrow by arrow-json and written by the parquet crate's
//! `ArrowWriter`.
//!
//! Each record is first checked against the schema by a walk over its bytes (`schema.rs`):
//! inferred from the first `infer_sample` records, or declared in a file. A record that needs
//! a wider inferred schema closes the current part; the next part starts with the widened
//! schema, so no record or field is dropped and every part holds one schema (DuckDB's
//! `union_by_name` and pyarrow datasets read them as one table). A part is written under
//! `_harvest/open/` and renamed when complete, like NDJSON parts; `commit()` closes it.
//!
//! The per-record work needs no order, so the fetching tasks do it side by side
//! ([`Prepare`]): each page's own schema is inferred and the page decoded into a record batch
//! under the current schema. The writer thread then only merges the page's schema into its own
//! (a few nodes) and hands the batch to the Parquet encoder. A page whose schema widens the
//! current one, or that was decoded under an older one, is done over in the writer, record by
//! record, so a new part starts exactly at the record that needs it.

use std::fs::File;
use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_select::concat::concat_batches;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

mod ahead;

use super::{Ledger, PageBatch, PartFile, Prepare, Sink};
use crate::checkpoint::Position;
use crate::error::Error;
use crate::output::Layout;
use crate::partition::PartitionReport;
use crate::plan::{Compression, ParquetPlan};
use crate::schema::{Field, Rules, Ty, REJECTED};
use ahead::{Ahead, PreparedPage, SchemaSnapshot, SNAPSHOTS};

/// Rows Arrow decodes at a time.
const BATCH_ROWS: usize = 8192;
/// Rows handed to the Parquet writer at a time (at least; whole pages are queued): enough to
/// pay the encoder's cost per call once for several pages, few enough that most columns of the
/// joined batch stay under the mmap threshold (`main.rs`) and reuse heap memory. 4,096 rows
/// measured 3% more CPU and 6% more wall time, from page faults.
const WRITE_ROWS: usize = 512;
/// A row group is cut when the writer holds this much, or `row_group_size` rows.
const ROW_GROUP_BYTES: usize = 64 << 20;
/// A column's dictionary grows to this size before the column falls back to plain encoding:
/// columns of few distinct values keep theirs, and columns of unique values (ids, times,
/// text) stop hashing every value early.
const DICTIONARY_BYTES: usize = 128 << 10;

pub struct ParquetSink {
    ledger: Ledger,
    options: ParquetPlan,
    compression: Compression,
    rows_per_file: u64,
    rules: Rules,
    /// What records are checked against; `None` while the first records are sampled.
    schema: Option<Ty>,
    /// The sample, and the pages it came from, waiting for the schema.
    sample: Ty,
    pending: Vec<PageBatch>,
    pending_rows: u64,
    /// Partitions that ended while pages of theirs were held for inference: their end is
    /// counted once those pages are written, so that their rows and mark are the partition's.
    ended: Vec<(u64, PartitionReport)>,
    open: Option<OpenParquet>,
    /// Bumped whenever the schema's Arrow form changes; pages prepared under another version
    /// are done over.
    version: u64,
    ahead: Arc<Ahead>,
}

struct OpenParquet {
    part: PartFile,
    writer: ArrowWriter<File>,
    decoder: Decoder,
    /// Records checked but not yet decoded, one line each.
    lines: Vec<u8>,
    /// The part's schema for the manifest.
    described: serde_json::Value,
    /// Some column holds JSON text: records are rewritten before decoding.
    rewrite: bool,
    /// Decoded rows waiting to be handed to the writer together: the Parquet encoder's cost
    /// per call is then paid once for many pages.
    queued: Vec<RecordBatch>,
    queued_rows: usize,
}

impl OpenParquet {
    /// Write rows, in order with all written before.
    fn write(&mut self, batch: RecordBatch) -> Result<(), ParquetError> {
        if self.queued.first().is_some_and(|first| first.schema() != batch.schema()) {
            self.write_queued()?;
        }
        self.queued_rows += batch.num_rows();
        self.queued.push(batch);
        match self.queued_rows >= WRITE_ROWS {
            true => self.write_queued(),
            false => Ok(()),
        }
    }

    /// Hand the queued rows to the writer.
    fn write_queued(&mut self) -> Result<(), ParquetError> {
        let batch = match self.queued.len() {
            0 => return Ok(()),
            1 => self.queued.pop().expect("one"),
            _ => concat_batches(&self.queued[0].schema(), &self.queued)?,
        };
        self.queued.clear();
        self.queued_rows = 0;
        self.writer.write(&batch)
    }
}

/// Rows of one page counted into the open part but not yet into the ledger.
struct RowRun {
    partition: Arc<str>,
    page: u64,
    rows: u64,
}

/// How every part is written: the job's compression and row group size.
pub fn properties(compression: Compression, row_group_size: u64) -> WriterProperties {
    let codec = match compression {
        Compression::Snappy => Codec::SNAPPY,
        Compression::None => Codec::UNCOMPRESSED,
        _ => Codec::ZSTD(ZstdLevel::default()),
    };
    WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(row_group_size as usize))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_created_by(format!("harvest {}", env!("CARGO_PKG_VERSION")))
        .set_dictionary_page_size_limit(DICTIONARY_BYTES)
        .build()
}

impl ParquetSink {
    /// `position` is where a resumed run stands (the
    /// default for a new one): a Parquet commit closes its part, so there is none to reopen,
    /// and the next records start a new part with a schema inferred anew.
    pub fn resume(
        layout: Layout,
        run: &str,
        options: ParquetPlan,
        compression: Compression,
        rows_per_file: u64,
        position: &Position,
    ) -> Self {
        let schema = options.schema.clone().map(|mut declared| {
            if let (true, Ty::Struct(record)) = (options.reject_to_json, &mut declared) {
                record.fields.push(Field { name: REJECTED.into(), ty: Ty::Str, nullable: true });
            }
            declared
        });
        let rules = Rules { timestamps: options.infer_timestamps };
        let ahead = Arc::new(Ahead {
            rules,
            declared: options.schema.is_some() && !options.reject_to_json,
            current: RwLock::new(None),
        });
        let mut sink = ParquetSink {
            ledger: Ledger::resume(layout, run, position),
            rules,
            options,
            compression,
            rows_per_file,
            schema,
            sample: Ty::record(),
            pending: Vec::new(),
            pending_rows: 0,
            ended: Vec::new(),
            open: None,
            version: 0,
            ahead,
        };
        sink.schema_changed();
        sink
    }

    /// Tell the fetching side the schema pages are now prepared under.
    fn schema_changed(&mut self) {
        self.version += 1;
        let snapshot = match (&self.schema, self.options.reject_to_json) {
            // Misfits are sorted out record by record, in the writer.
            (Some(_), true) | (None, _) => None,
            (Some(ty), false) => Some(Arc::new(SchemaSnapshot {
                id: SNAPSHOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                version: self.version,
                ty: ty.clone(),
                arrow: Arc::new(ty.arrow_schema()),
                rewrite: ty.needs_rewrite_record(),
            })),
        };
        *self.ahead.current.write().expect("schema lock") = snapshot;
    }

    /// A page prepared by the fetching side under the current schema: merge its schema and
    /// write its rows. False when it must be done over here.
    fn write_prepared(&mut self, batch: &PageBatch, page: PreparedPage) -> Result<bool, Error> {
        let Some((version, rows)) = page.decoded else { return Ok(false) };
        let Some(schema) = self.schema.as_ref() else { return Ok(false) };
        if version != self.version || rows.num_rows() as u64 != batch.count {
            return Ok(false);
        }
        if self.options.schema.is_none() {
            let mut merged = schema.clone();
            if merged.merge_record(&page.ty) {
                return Ok(false);
            }
            self.schema = Some(merged);
        }
        let mut at = 0;
        while at < rows.num_rows() {
            let rows_per_file = self.rows_per_file;
            let open = self.open_part()?;
            // Rows decoded in the writer for earlier pages go first.
            if let Some(earlier) = open.decoder.flush().map_err(|e| self.failed("decoding", e))? {
                let open = self.open.as_mut().expect("opened above");
                open.write(earlier)
                    .map_err(|e| Error::Parquet { context: "writing Parquet".into(), source: Box::new(e) })?;
            }
            let open = self.open.as_mut().expect("opened above");
            let take = (rows.num_rows() - at).min((rows_per_file - open.part.rows) as usize);
            open.write(rows.slice(at, take))
                .map_err(|e| Error::Parquet { context: "writing Parquet".into(), source: Box::new(e) })?;
            self.ledger.add_rows(&mut open.part, &batch.partition, batch.page, take as u64);
            at += take;
            if open.part.rows >= rows_per_file {
                self.close_part(&mut RowRun { partition: batch.partition.clone(), page: batch.page, rows: 0 })?;
            }
        }
        self.ledger.page_done(batch);
        Ok(true)
    }

    /// The schema is known: write the sampled pages.
    fn settle(&mut self) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        tracing::debug!("schema inferred from {} records", self.pending_rows);
        self.schema = Some(std::mem::replace(&mut self.sample, Ty::record()));
        self.schema_changed();
        for batch in std::mem::take(&mut self.pending) {
            self.write_rows(batch)?;
        }
        self.pending_rows = 0;
        for (index, report) in std::mem::take(&mut self.ended) {
            self.ledger.end(index, report);
        }
        Ok(())
    }

    fn write_rows(&mut self, batch: PageBatch) -> Result<(), Error> {
        let mut run = RowRun { partition: batch.partition.clone(), page: batch.page, rows: 0 };
        if let Err(e) = self.add_page(&batch, &mut run) {
            // Only whole pages are written: drop this one's rows not yet counted (the waiting
            // lines are this page's alone), so what a commit then keeps is consistent.
            if let Some(open) = self.open.as_mut() {
                open.lines.clear();
            }
            return Err(e);
        }
        if let Some(open) = self.open.as_mut() {
            self.ledger.add_rows(&mut open.part, &run.partition, run.page, run.rows);
            drain(open).map_err(|e| self.failed("encoding", e))?;
        }
        self.ledger.page_done(&batch);
        Ok(())
    }

    fn add_page(&mut self, batch: &PageBatch, run: &mut RowRun) -> Result<(), Error> {
        for (index, line) in lines(&batch.lines).enumerate() {
            let widened = self.fit(line, batch, index)?;
            if widened && self.open.is_some() {
                tracing::info!(
                    "record {index} of page {} of {} needs a wider schema: starting a new part",
                    batch.page,
                    self.where_(&batch.partition)
                );
                self.close_part(run)?;
            }
            if widened {
                self.schema_changed();
            }
            let rewrite = self.open_part()?.rewrite || self.options.reject_to_json;
            let schema = self.schema.as_ref().expect("settled");
            let open = self.open.as_mut().expect("opened above");
            match (rewrite, self.options.reject_to_json) {
                (false, _) => open.lines.extend_from_slice(line),
                (true, false) => schema.rewrite(line, &mut open.lines),
                (true, true) => {
                    if let Err(m) = schema.rewrite_rejecting(line, &mut open.lines) {
                        return Err(self.misfit(batch, index, m));
                    }
                }
            }
            open.lines.push(b'\n');
            run.rows += 1;
            if open.part.rows + run.rows >= self.rows_per_file {
                self.close_part(run)?;
            }
        }
        Ok(())
    }

    /// Check a record against the schema; true when an inferred schema had to widen for it.
    fn fit(&mut self, line: &[u8], batch: &PageBatch, index: usize) -> Result<bool, Error> {
        if line.first() != Some(&b'{') {
            return Err(self.not_an_object(line, batch, index));
        }
        let schema = self.schema.as_mut().expect("settled");
        match (&self.options.schema, self.options.reject_to_json) {
            // Checked while rewriting.
            (Some(_), true) => Ok(false),
            (Some(_), false) => schema.check(line, "$").map(|()| false).map_err(|m| self.misfit(batch, index, m)),
            (None, _) => Ok(schema.widen_record(line, self.rules)),
        }
    }

    fn not_an_object(&self, line: &[u8], batch: &PageBatch, index: usize) -> Error {
        Error::Records(format!(
            "format = \"parquet\" needs records that are JSON objects; record {index} of page {} of {} is not: {}",
            batch.page,
            self.where_(&batch.partition),
            String::from_utf8_lossy(&line[..line.len().min(80)])
        ))
    }

    fn misfit(&self, batch: &PageBatch, index: usize, mismatch: crate::schema::Mismatch) -> Error {
        let file = self.options.schema_file.as_ref().map_or(String::new(), |f| format!(" in {}", f.display()));
        Error::Records(format!(
            "record {index} of page {} of {} does not fit the schema{file}: {mismatch} (with on_mismatch = \"json\" \
             it would be kept in the {REJECTED} column)",
            batch.page,
            self.where_(&batch.partition)
        ))
    }

    fn where_(&self, partition: &str) -> String {
        match partition {
            "" => "the job".to_string(),
            label => format!("partition {label}"),
        }
    }

    fn failed(&self, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
        let part = self.open.as_ref().map_or(String::new(), |o| format!(" {}", o.part.path.display()));
        Error::Parquet { context: format!("{what} Parquet part{part}"), source: Box::new(e) }
    }

    fn open_part(&mut self) -> Result<&mut OpenParquet, Error> {
        if self.open.is_none() {
            let schema = self.schema.as_ref().expect("settled");
            let arrow = Arc::new(schema.arrow_schema());
            let part = self.ledger.next_part(".parquet");
            let file =
                File::create(&part.path).map_err(|e| Error::io(format!("creating {}", part.path.display()), e))?;
            let properties = properties(self.compression, self.options.row_group_size);
            let writer = ArrowWriter::try_new(file, arrow.clone(), Some(properties)).map_err(|e| Error::Parquet {
                context: format!("starting Parquet part {}", part.path.display()),
                source: Box::new(e),
            })?;
            let decoder = ReaderBuilder::new(arrow)
                .with_batch_size(BATCH_ROWS)
                .with_strict_mode(true)
                .build_decoder()
                .map_err(|e| Error::Parquet { context: "starting the JSON decoder".into(), source: Box::new(e) })?;
            let described = match schema.describe() {
                serde_json::Value::Object(mut o) => o.remove("struct").unwrap_or_default(),
                other => other,
            };
            let rewrite = schema.needs_rewrite_record();
            self.open = Some(OpenParquet {
                part,
                writer,
                decoder,
                lines: Vec::new(),
                described,
                rewrite,
                queued: Vec::new(),
                queued_rows: 0,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Count the run's rows into the open part, then close and publish it.
    fn close_part(&mut self, run: &mut RowRun) -> Result<(), Error> {
        let Some(mut open) = self.open.take() else { return Ok(()) };
        self.ledger.add_rows(&mut open.part, &run.partition, run.page, run.rows);
        run.rows = 0;
        let path = open.part.path.clone();
        let fail = |what: &str, e: ParquetError| Error::Parquet {
            context: format!("{what} {}", path.display()),
            source: Box::new(e),
        };
        drain(&mut open).map_err(|e| fail("encoding", e))?;
        if let Some(batch) = open.decoder.flush().map_err(|e| fail("decoding records for", e.into()))? {
            open.write(batch).map_err(|e| fail("writing", e))?;
        }
        open.write_queued().map_err(|e| fail("writing", e))?;
        let file = open.writer.into_inner().map_err(|e| fail("finishing", e))?;
        file.sync_data().map_err(|e| Error::io(format!("syncing {}", path.display()), e))?;
        let bytes = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
        drop(file);
        self.ledger.publish(open.part, bytes, Some(open.described))
    }
}

/// Decode the waiting lines, handing each full batch to the writer.
fn drain(open: &mut OpenParquet) -> Result<(), ParquetError> {
    let mut at = 0;
    while at < open.lines.len() {
        at += open.decoder.decode(&open.lines[at..])?;
        if at < open.lines.len() {
            if let Some(batch) = open.decoder.flush()? {
                open.write(batch)?;
            }
        }
    }
    open.lines.clear();
    Ok(())
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', bytes).filter_map(move |end| {
        let line = &bytes[start..end];
        start = end + 1;
        (!line.is_empty()).then_some(line)
    })
}

impl Sink for ParquetSink {
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        Some(self.ahead.clone())
    }

    fn write(&mut self, mut batch: PageBatch) -> Result<(), Error> {
        if self.schema.is_some() {
            let prepared = batch.prepared.take().and_then(|p| p.downcast::<PreparedPage>().ok());
            if let Some(page) = prepared {
                if self.write_prepared(&batch, *page)? {
                    return Ok(());
                }
            }
            return self.write_rows(batch);
        }
        for (index, line) in lines(&batch.lines).enumerate() {
            if line.first() != Some(&b'{') {
                return Err(self.not_an_object(line, &batch, index));
            }
            self.sample.widen_record(line, self.rules);
        }
        self.pending_rows += batch.count;
        self.pending.push(batch);
        if self.pending_rows >= self.options.infer_sample {
            self.settle()?;
        }
        Ok(())
    }

    fn end(&mut self, index: u64, report: PartitionReport) {
        match self.pending.is_empty() {
            true => self.ledger.end(index, report),
            false => self.ended.push((index, report)),
        }
    }

    /// Parquet cannot be appended to: a commit closes the open part.
    fn commit(&mut self) -> Result<Position, Error> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Position, Error> {
        self.settle()?;
        let mut run = RowRun { partition: Arc::from(""), page: 0, rows: 0 };
        self.close_part(&mut run)?;
        Ok(self.ledger.position(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &std::path::Path, options: ParquetPlan) -> ParquetSink {
        let layout = Layout::create(dir.join("job")).unwrap();
        ParquetSink::resume(layout, "R", options, Compression::Zstd, 1000, &Position::default())
    }

    fn page(page: u64, records: &[&str]) -> PageBatch {
        let mut lines = Vec::new();
        for r in records {
            lines.extend_from_slice(r.as_bytes());
            lines.push(b'\n');
        }
        PageBatch::new("".into(), page, lines, records.len() as u64)
    }

    /// A partition that ends before the schema is inferred (an incremental sync of a few
    /// changed records) ends once its rows are written: its rows and mark are counted as a
    /// finished partition's, not left as an unfinished one's.
    #[test]
    fn a_partition_ended_during_inference_keeps_its_rows_and_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), ParquetPlan::default());
        let mut batch = page(0, &[r#"{"id":1,"at":"2024-05-01"}"#, r#"{"id":2,"at":"2024-05-02"}"#]);
        batch.mark = Some("2024-05-02".into());
        s.write(batch).unwrap();
        let report = PartitionReport {
            partition: String::new(),
            records: 2,
            pages: 1,
            stop: crate::paginate::StopReason::NoRecords,
            warning: None,
            missing: Vec::new(),
        };
        s.end(0, report);
        let done = s.finish().unwrap();
        assert!(done.active.is_empty(), "nothing left unfinished: {:?}", done.active);
        assert_eq!((done.done.records, done.done.pages), (2, 1));
        assert_eq!(done.done.marks.get("").map(String::as_str), Some("2024-05-02"));
    }

    #[test]
    fn odd_records_are_kept_or_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), ParquetPlan { infer_sample: 1, ..Default::default() });
        // Empty objects, then a field; duplicate keys; a key with an escape; deep nulls.
        s.write(page(0, &[r#"{}"#, r#"{"a":1,"a":2}"#, r#"{"k\"q":{"x":null},"a":null}"#])).unwrap();
        s.write(page(1, &[r#"{"a":3,"l":[[1],[],null]}"#])).unwrap();
        let done = s.finish().unwrap();
        let rows: u64 = done.parts.iter().map(|p| p.rows).sum();
        assert_eq!(rows, 4);
        let err = s.write(page(2, &["[1,2]"])).unwrap_err().to_string();
        assert!(
            err.contains("needs records that are JSON objects; record 0 of page 2 of the job is not: [1,2]"),
            "{err}"
        );
    }
}
