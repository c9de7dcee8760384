//! `repo = { from = "repos", field = "$.full_name", include = { repo_id = "$.id" } }`: the
//! values of a field in another job's latest complete run (all its shards' manifests
//! written), read from the parts its manifests list, in their order: NDJSON in any
//! compression, or Parquet (each row as arrow-json writes it); for a Delta job, from its
//! table's current version. A partition source
//! ([`crate::partition::listed`]); its fingerprint is the run's name.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow_schema::ArrowError;
use parquet::errors::ParquetError;

use crate::jsonpath::{Document, JsonPath};
use crate::output::{latest_complete, Layout};
use crate::partition::file::{decompressed, lines, text_at, FieldError};
use crate::partition::listed::{Entries, Failure, ListedEntry, Reader};
use crate::plan::StorePlan;
use crate::store::Store;

pub struct JobOutput {
    dir: PathBuf,
    store: StorePlan,
    job: String,
    field: JsonPath,
    include: Vec<(String, JsonPath)>,
    /// The names of `include` that the request's URL places too.
    placed: Vec<String>,
    run: OnceLock<Result<ParentRun, Failure>>,
}

/// The run read: its name and its parts with their rows, in order.
struct ParentRun {
    layout: Layout,
    name: String,
    parts: Vec<(String, u64)>,
}

impl std::fmt::Debug for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let include: Vec<(&str, &str)> = self.include.iter().map(|(n, p)| (n.as_str(), p.as_str())).collect();
        f.debug_struct("JobOutput")
            .field("job", &self.job)
            .field("field", &self.field.as_str())
            .field("include", &include)
            .finish()
    }
}

impl JobOutput {
    /// `placed`: the names of `include` the request's URL has as placeholders, filled with
    /// the parent's field as text beside the value (and telling partitions apart with it).
    pub fn new(
        dir: &Path,
        store: &StorePlan,
        job: &str,
        field: JsonPath,
        include: Vec<(String, JsonPath)>,
        placed: Vec<String>,
    ) -> Self {
        JobOutput {
            dir: dir.to_path_buf(),
            store: store.clone(),
            job: job.to_string(),
            field,
            include,
            placed,
            run: OnceLock::new(),
        }
    }

    /// The job's latest complete run, found once.
    fn run(&self) -> Result<&ParentRun, Failure> {
        self.run.get_or_init(|| self.find()).as_ref().map_err(Clone::clone)
    }

    fn find(&self) -> Result<ParentRun, Failure> {
        let layout =
            Layout::for_reading_at(&self.dir, &self.job, &self.store).map_err(|e| Failure::Job(e.to_string()))?;
        let folder = layout.display("");
        let read = |e: std::io::Error| Failure::Read(format!("reading {folder}: {e}"));
        let Some((name, manifests)) = latest_complete(&layout).map_err(read)? else {
            return Err(Failure::Read(format!(
                "job {} has no complete run in {folder}: run it first (its values feed this job)",
                self.job
            )));
        };
        let mut parts = Vec::new();
        let mut table = false;
        for rel in manifests {
            let manifest = crate::manifest::read(&layout, &rel).map_err(|e| Failure::Read(e.to_string()))?;
            table |= manifest.format == Some(crate::plan::Format::Delta);
            parts.extend(manifest.parts.into_iter().map(|part| (part.file, part.rows)));
        }
        // A Delta job's output is its table: read as it stands (a merge run's parts are gone
        // once merged, and what it holds is the table's rows, not the run's records).
        if table {
            let files =
                crate::table::blocking(crate::table::files(&layout)).map_err(|e| Failure::Read(e.to_string()))?;
            parts = files.ok_or_else(|| Failure::Read(format!("job {} has no table in {folder} yet", self.job)))?;
        }
        tracing::debug!("partitions from job {}: run {name}, {} part(s)", self.job, parts.len());
        Ok(ParentRun { layout, name, parts })
    }

    /// The records of one part, one JSON text each.
    fn records<'a>(
        &'a self,
        run: &'a ParentRun,
        file: &'a str,
        rows: u64,
    ) -> Box<dyn Iterator<Item = Result<String, Failure>> + Send + 'a> {
        let failed =
            move |e: &dyn std::fmt::Display| Failure::Read(format!("reading {}: {e}", run.layout.display(file)));
        let bytes: Box<dyn Read + Send> = match &run.layout.store {
            Store::Local(root) => match std::fs::File::open(root.join(file)) {
                Ok(f) => Box::new(f),
                Err(e) => return Box::new(std::iter::once(Err(failed(&e)))),
            },
            store => match store.get(file) {
                Ok(Some((bytes, _))) => Box::new(std::io::Cursor::new(bytes)),
                Ok(None) => return Box::new(std::iter::once(Err(failed(&"it is gone")))),
                Err(e) => return Box::new(std::iter::once(Err(failed(&e)))),
            },
        };
        if file.ends_with(".parquet") {
            return match parquet_rows(bytes) {
                Ok(rows) => Box::new(rows.map(move |r| r.map_err(|e| failed(&e)))),
                Err(e) => Box::new(std::iter::once(Err(failed(&e)))),
            };
        }
        let input: Box<dyn BufRead + Send> = match decompressed(Path::new(file), bytes) {
            Ok(input) => input,
            Err(e) => return Box::new(std::iter::once(Err(failed(&e)))),
        };
        Box::new(lines(input).take(rows as usize).map(move |(_, line)| line.map_err(|e| failed(&e))))
    }

    fn entry(&self, record: &str) -> Result<Option<ListedEntry>, FieldError> {
        let doc = Document::parse(record.as_bytes()).map_err(FieldError::NotJson)?;
        let Some(value) = text_at(&self.field, &doc)? else { return Ok(None) };
        let mut entry = ListedEntry { value, ..ListedEntry::default() };
        for (name, path) in &self.include {
            let node = path.first(&doc)?;
            if self.placed.contains(name) {
                // A placeholder the parent cannot fill (null, missing, no single value): no
                // request to make for it.
                let Some(text) = node.as_ref().and_then(|n| n.as_text()) else { return Ok(None) };
                entry.placed.push((name.clone(), text));
            }
            if !entry.parent.is_empty() {
                entry.parent.push(',');
            }
            entry.parent.push_str(&serde_json::to_string(name).expect("a name serializes"));
            entry.parent.push(':');
            match node {
                Some(node) => entry.parent.push_str(&node.to_compact_string()),
                None => entry.parent.push_str("null"),
            }
        }
        Ok(Some(entry))
    }
}

/// A Parquet part's rows as JSON objects, a batch at a time.
fn parquet_rows(
    mut input: Box<dyn Read + Send>,
) -> Result<impl Iterator<Item = Result<String, ArrowError>> + Send, ParquetError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    // The footer is at the end: the part is read whole (it holds at most rows_per_file rows).
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?.with_batch_size(1024).build()?;
    Ok(reader.flat_map(|batch| {
        let json = batch.and_then(|batch| {
            let mut out = Vec::new();
            let mut writer = arrow_json::LineDelimitedWriter::new(&mut out);
            writer.write(&batch)?;
            writer.finish()?;
            Ok(out)
        });
        let lines: Vec<Result<String, ArrowError>> = match json {
            Ok(out) => String::from_utf8_lossy(&out).lines().map(|l| Ok(l.to_string())).collect(),
            Err(e) => vec![Err(e)],
        };
        lines
    }))
}

impl Reader for JobOutput {
    fn entries(&self) -> Result<Entries<'_>, Failure> {
        let run = self.run()?;
        Ok(Box::new(run.parts.iter().flat_map(move |(file, rows)| {
            self.records(run, file, *rows).zip(1u64..).filter_map(move |(record, n)| {
                let record = match record {
                    Ok(record) => record,
                    Err(failure) => return Some(Err(failure)),
                };
                self.entry(&record)
                    .map_err(|e| Failure::Read(format!("{} record {n}: {e}", run.layout.display(file))))
                    .transpose()
            })
        })))
    }

    fn fingerprint(&self) -> Result<String, Failure> {
        Ok(format!("job {} run {}", self.job, self.run()?.name))
    }

    fn placed(&self) -> Vec<String> {
        self.placed.clone()
    }
}
