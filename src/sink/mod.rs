//! The writer side: one job-wide sink that takes whole pages and makes them durable.
//!
//! The pipeline hands the sink whole pages tagged (partition, page index), as raw record
//! bytes: one compact JSON record per line, exactly as the API sent it. The sink never knows
//! about HTTP. `commit()` makes everything written so far durable and returns the
//! [`Position`] a checkpoint stores: the parts already published, each partition's page
//! frontier, and the open part's fsynced length. Formats are one file each (`ndjson.rs`,
//! `parquet.rs`); what they share (part names, the slices each part holds, publishing) is the
//! [`Ledger`].

pub mod ndjson;
pub mod parquet;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::output::{fsync_dir, Layout};
use crate::plan::{Format, OutputPlan};

/// The sink of the job's format, going on from `position` (a resumed run's checkpoint, or the
/// start): parts are named `part-<run>-<seq>` and partitions labelled by `labels`.
pub fn open(
    layout: &Layout,
    run: &str,
    output: &OutputPlan,
    labels: Vec<String>,
    position: &Position,
) -> Result<Box<dyn Sink>, Error> {
    Ok(match output.format {
        Format::Ndjson => Box::new(ndjson::NdjsonSink::resume(
            layout.clone(),
            run,
            output.compression,
            output.rows_per_file,
            labels,
            position,
        )?),
        Format::Parquet => Box::new(parquet::ParquetSink::resume(
            layout.clone(),
            run,
            output.parquet.clone(),
            output.compression,
            output.rows_per_file,
            labels,
            position,
        )),
    })
}

/// One page of records for the sink.
pub struct PageBatch {
    pub partition: usize,
    /// 0-based page index within the partition.
    pub page: u64,
    /// Records, each one line of compact JSON ending in `\n`.
    pub lines: Vec<u8>,
    pub count: u64,
    /// What the sink's [`Prepare`] made of these lines, if it ran.
    pub prepared: Option<Prepared>,
    /// Where the partition goes on after this page, for a checkpoint: opaque to the sink.
    pub resume: Option<serde_json::Value>,
    /// The cursors or URLs the strategy remembered with this page, hashed, so that a resumed
    /// partition still knows every one it has seen.
    pub seen: Vec<u64>,
    /// Incremental syncs: the greatest value of the mark field on this page.
    pub mark: Option<String>,
}

impl PageBatch {
    pub fn new(partition: usize, page: u64, lines: Vec<u8>, count: u64) -> Self {
        PageBatch { partition, page, lines, count, prepared: None, resume: None, seen: Vec::new(), mark: None }
    }
}

/// Work a sink has done on a page before the page reaches it, opaque to everyone else.
pub type Prepared = Box<dyn std::any::Any + Send>;

/// A sink's per-page work that needs no order: run by the fetching tasks, side by side, so
/// that the one writer thread does only what must happen in order. The sink must accept a
/// page whatever its preparation says (or without one), falling back to doing the work itself.
pub trait Prepare: Send + Sync {
    fn prepare(&self, lines: &[u8], count: u64) -> Option<Prepared>;
}

pub trait Sink: Send {
    /// The work pages may have done before they arrive, if the format has any.
    fn preparer(&self) -> Option<std::sync::Arc<dyn Prepare>> {
        None
    }

    /// Append a page. Pages of one partition arrive in order.
    fn write(&mut self, batch: PageBatch) -> Result<(), Error>;

    /// Make everything written so far durable and say where that is.
    fn commit(&mut self) -> Result<Position, Error>;

    /// Close and publish the open part; the final position.
    fn finish(&mut self) -> Result<Position, Error>;
}

/// A durable position: what a checkpoint points past.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Parts published under their final names.
    pub parts: Vec<PartInfo>,
    /// Per partition (by index): pages and records made durable.
    pub frontier: Vec<Frontier>,
    /// The part being written, if any, and how much of it is on disk.
    pub open: Option<OpenPart>,
    /// The number the next part gets.
    pub next_seq: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frontier {
    /// Pages written: the next page to write has this index.
    pub pages: u64,
    pub records: u64,
    /// Where the partition goes on from here (the last page's `resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<serde_json::Value>,
    /// The cursors or URLs of the pages written, hashed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<u64>,
    /// Incremental syncs: the high-water mark of the records written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPart {
    pub file: String,
    pub rows: u64,
    /// Bytes fsynced; a resume truncates the file to this length.
    pub len: u64,
    pub partitions: Vec<PartSlice>,
}

/// A published part file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub partitions: Vec<PartSlice>,
    /// Parquet: the part's schema, as schema files write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
}

/// A run of consecutive records of one partition inside a part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSlice {
    pub partition: String,
    /// Row range in the part, `[first, end)`.
    pub rows: [u64; 2],
    /// The same records' range in the partition's own sequence.
    pub records: [u64; 2],
    /// Pages `[first, last]` these records came from.
    pub pages: [u64; 2],
}

/// What every sink keeps: part names, the parts published, each partition's frontier.
pub struct Ledger {
    pub layout: Layout,
    run: String,
    labels: Vec<String>,
    next_seq: u32,
    parts: Vec<PartInfo>,
    frontier: Vec<Frontier>,
}

/// A part being written under `_harvest/open/`.
pub struct PartFile {
    pub name: String,
    pub path: PathBuf,
    pub rows: u64,
    pub slices: Vec<PartSlice>,
}

impl Ledger {
    /// `labels` names each partition, by index; part numbers start at `first_seq`.
    pub fn new(layout: Layout, run: &str, labels: Vec<String>, first_seq: u32) -> Self {
        let frontier = vec![Frontier::default(); labels.len()];
        Ledger { layout, run: run.to_string(), labels, next_seq: first_seq, parts: Vec::new(), frontier }
    }

    /// Go on from a checkpoint's position: its parts published, its frontier reached.
    pub fn resume(layout: Layout, run: &str, labels: Vec<String>, position: &Position) -> Self {
        let mut ledger = Ledger::new(layout, run, labels, position.next_seq.max(1));
        ledger.parts = position.parts.clone();
        for (mine, saved) in ledger.frontier.iter_mut().zip(&position.frontier) {
            *mine = saved.clone();
        }
        ledger
    }

    /// A part that a resume goes on writing, as the checkpoint left it.
    pub fn reopened(&self, open: &OpenPart) -> PartFile {
        PartFile {
            name: open.file.clone(),
            path: self.layout.open_dir().join(&open.file),
            rows: open.rows,
            slices: open.partitions.clone(),
        }
    }

    /// Name the next part, `part-<run>-<seq><extension>`, placed in the open folder.
    pub fn next_part(&mut self, extension: &str) -> PartFile {
        let name = format!("part-{}-{:06}{extension}", self.run, self.next_seq);
        self.next_seq += 1;
        let path = self.layout.open_dir().join(&name);
        PartFile { name, path, rows: 0, slices: Vec::new() }
    }

    pub fn label(&self, partition: usize) -> &str {
        &self.labels[partition]
    }

    /// Count `rows` records of `partition`'s page `page` as written to `part`.
    pub fn add_rows(&mut self, part: &mut PartFile, partition: usize, page: u64, rows: u64) {
        let first_record = self.frontier[partition].records;
        let label = &self.labels[partition];
        match part.slices.last_mut() {
            Some(slice) if slice.partition == *label && slice.records[1] == first_record => {
                slice.rows[1] += rows;
                slice.records[1] += rows;
                slice.pages[1] = page;
            }
            _ => part.slices.push(PartSlice {
                partition: label.clone(),
                rows: [part.rows, part.rows + rows],
                records: [first_record, first_record + rows],
                pages: [page, page],
            }),
        }
        part.rows += rows;
        self.frontier[partition].records += rows;
    }

    /// A whole page has been handed to the sink.
    pub fn page_done(&mut self, batch: &PageBatch) {
        let frontier = &mut self.frontier[batch.partition];
        frontier.pages = batch.page + 1;
        if batch.resume.is_some() {
            frontier.resume = batch.resume.clone();
        }
        frontier.seen.extend(&batch.seen);
        if batch.mark.is_some() {
            frontier.mark = crate::incremental::max(frontier.mark.take(), batch.mark.as_deref());
        }
    }

    /// Move a complete, fsynced part into the dataset folder.
    pub fn publish(&mut self, part: PartFile, bytes: u64, schema: Option<serde_json::Value>) -> Result<(), Error> {
        let root = &self.layout.root;
        let target = root.join(&part.name);
        std::fs::rename(&part.path, &target).map_err(|e| Error::io(format!("publishing {}", target.display()), e))?;
        crate::output::failpoint("publish");
        fsync_dir(root).map_err(|e| Error::io(format!("syncing {}", root.display()), e))?;
        tracing::debug!("published {} ({} rows)", target.display(), part.rows);
        self.parts.push(PartInfo { file: part.name, rows: part.rows, bytes, partitions: part.slices, schema });
        Ok(())
    }

    pub fn position(&self, open: Option<OpenPart>) -> Position {
        Position { parts: self.parts.clone(), frontier: self.frontier.clone(), open, next_seq: self.next_seq }
    }
}

/// The byte index just past the `n`th newline.
pub fn nth_line_end(lines: &[u8], n: u64) -> usize {
    if n == 0 {
        return 0;
    }
    memchr::memchr_iter(b'\n', lines).nth(n as usize - 1).map_or(lines.len(), |i| i + 1)
}
