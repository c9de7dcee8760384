//! The writer side: one job-wide sink that takes whole pages and makes them durable.
//!
//! The pipeline hands the sink whole pages tagged (partition key, page index), as raw record
//! bytes: one compact JSON record per line, exactly as the API sent it, and then the end of
//! each partition. The sink never knows about HTTP. `commit()` makes everything written so
//! far durable and returns the [`Position`] a checkpoint stores: the parts already published,
//! each unfinished partition's page frontier by key, the finished ones as ranges of their
//! place in the job's order, and the open part's fsynced length. Formats are one file each (`ndjson.rs`,
//! `parquet.rs`); what they share (part names, the slices each part holds, publishing) is the
//! [`Ledger`].

pub mod ndjson;
pub mod parquet;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::{Finished, Frontier, OpenPart, Position};
use crate::error::Error;
use crate::output::Layout;
use crate::output::{PartInfo, PartSlice};
use crate::partition::PartitionReport;
use crate::plan::{Format, OutputPlan};

/// The sink of the job's format, going on from `position` (a resumed run's checkpoint, or the
/// start): parts are named `part-<run>-<seq>`.
pub fn open(layout: &Layout, run: &str, output: &OutputPlan, position: &Position) -> Result<Box<dyn Sink>, Error> {
    Ok(match output.format {
        Format::Ndjson => Box::new(ndjson::NdjsonSink::resume(
            layout.clone(),
            run,
            output.compression,
            output.rows_per_file,
            position,
        )?),
        Format::Parquet | Format::Delta => Box::new(parquet::ParquetSink::resume(
            layout.clone(),
            run,
            output.parquet.clone(),
            output.compression,
            output.rows_per_file,
            position,
        )),
    })
}

/// What the writer is handed, in order per partition.
pub enum Item {
    Page(PageBatch),
    /// The partition (at `index` in the job's order) has ended; its pages all came before.
    End {
        index: u64,
        report: PartitionReport,
    },
}

/// One page of records for the sink.
pub struct PageBatch {
    /// The partition's key.
    pub partition: Arc<str>,
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
    #[cfg(test)]
    pub fn new(partition: Arc<str>, page: u64, lines: Vec<u8>, count: u64) -> Self {
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

    /// A partition has ended: its pages have all been written.
    fn end(&mut self, index: u64, report: PartitionReport);

    /// Make everything written so far durable and say where that is.
    fn commit(&mut self) -> Result<Position, Error>;

    /// Close and publish the open part; the final position.
    fn finish(&mut self) -> Result<Position, Error>;
}

/// What every sink keeps: part names, the parts published, each partition's frontier.
pub struct Ledger {
    pub layout: Layout,
    run: String,
    next_seq: u32,
    parts: Vec<PartInfo>,
    active: BTreeMap<String, Frontier>,
    done: Finished,
}

/// A part being written under `_harvest/open/`.
pub struct PartFile {
    pub name: String,
    pub path: PathBuf,
    pub rows: u64,
    pub slices: Vec<PartSlice>,
    /// Slices of partitions past the first [`PartSlice::PARTITIONS`].
    pub more_slices: u64,
    /// The partitions `slices` holds.
    listed: std::collections::HashSet<String>,
}

impl Ledger {
    /// Part numbers start at `first_seq`.
    pub fn new(layout: Layout, run: &str, first_seq: u32) -> Self {
        Ledger {
            layout,
            run: run.to_string(),
            next_seq: first_seq,
            parts: Vec::new(),
            active: BTreeMap::new(),
            done: Finished::default(),
        }
    }

    /// Go on from a checkpoint's position: its parts published, its frontier reached.
    pub fn resume(layout: Layout, run: &str, position: &Position) -> Self {
        let mut ledger = Ledger::new(layout, run, position.next_seq.max(1));
        ledger.parts = position.parts.clone();
        ledger.active = position.active.clone();
        ledger.done = position.done.clone();
        ledger
    }

    /// A part that a resume goes on writing, as the checkpoint left it.
    pub fn reopened(&self, open: &OpenPart) -> PartFile {
        PartFile {
            name: open.file.clone(),
            path: self.layout.open_dir().join(crate::output::file_name(&open.file)),
            rows: open.rows,
            slices: open.partitions.clone(),
            more_slices: open.more_slices,
            listed: open.partitions.iter().map(|s| s.partition.clone()).collect(),
        }
    }

    /// Name the next part, `part-<run>-<seq><extension>`, placed in the open folder (its
    /// name is where it is published, from the root).
    pub fn next_part(&mut self, extension: &str) -> PartFile {
        let file = format!("part-{}-{:06}{extension}", self.layout.unit(&self.run), self.next_seq);
        self.next_seq += 1;
        let path = self.layout.open_dir().join(&file);
        PartFile {
            name: self.layout.part_rel(&file),
            path,
            rows: 0,
            slices: Vec::new(),
            more_slices: 0,
            listed: Default::default(),
        }
    }

    /// The frontier of the partition with `key`; its key is copied only the first time.
    fn frontier_mut(&mut self, key: &str) -> &mut Frontier {
        if !self.active.contains_key(key) {
            self.active.insert(key.to_string(), Frontier::default());
        }
        self.active.get_mut(key).expect("inserted above")
    }

    /// Count `rows` records of `partition`'s page `page` as written to `part`.
    pub fn add_rows(&mut self, part: &mut PartFile, partition: &str, page: u64, rows: u64) {
        if rows == 0 {
            return;
        }
        let frontier = self.frontier_mut(partition);
        let first_record = frontier.records;
        frontier.records += rows;
        let full = part.listed.len() >= PartSlice::PARTITIONS && !part.listed.contains(partition);
        match part.slices.last_mut() {
            Some(slice) if slice.partition == partition && slice.records[1] == first_record => {
                slice.rows[1] += rows;
                slice.records[1] += rows;
                slice.pages[1] = page;
            }
            _ if full => part.more_slices += 1,
            _ => {
                if part.listed.len() < PartSlice::PARTITIONS {
                    part.listed.insert(partition.to_string());
                }
                part.slices.push(PartSlice {
                    partition: partition.to_string(),
                    rows: [part.rows, part.rows + rows],
                    records: [first_record, first_record + rows],
                    pages: [page, page],
                })
            }
        }
        part.rows += rows;
    }

    /// A whole page has been handed to the sink.
    pub fn page_done(&mut self, batch: &PageBatch) {
        let frontier = self.frontier_mut(&batch.partition);
        frontier.pages = batch.page + 1;
        if batch.resume.is_some() {
            frontier.resume = batch.resume.clone();
        }
        frontier.seen.extend(&batch.seen);
        if batch.mark.is_some() {
            frontier.mark = crate::incremental::max(frontier.mark.take(), batch.mark.as_deref());
        }
    }

    /// Publish a complete, fsynced part: renamed into the dataset folder, or uploaded whole.
    pub fn publish(&mut self, part: PartFile, bytes: u64, schema: Option<serde_json::Value>) -> Result<(), Error> {
        self.layout.publish(&part.path, &part.name)?;
        tracing::debug!("published {} ({} rows)", self.layout.display(&part.name), part.rows);
        self.parts.push(PartInfo {
            file: part.name,
            rows: part.rows,
            bytes,
            partitions: part.slices,
            more_slices: part.more_slices,
            schema,
        });
        Ok(())
    }

    /// A partition has ended: from now on it is a place in the ranges, not an entry.
    pub fn end(&mut self, index: u64, report: PartitionReport) {
        let frontier = self.active.remove(&report.partition).unwrap_or_default();
        self.done.add(index, report, frontier);
    }

    pub fn position(&self, open: Option<OpenPart>) -> Position {
        Position {
            parts: self.parts.clone(),
            active: self.active.clone(),
            done: self.done.clone(),
            open,
            next_seq: self.next_seq,
        }
    }
}

/// The byte index just past the `n`th newline.
pub fn nth_line_end(lines: &[u8], n: u64) -> usize {
    if n == 0 {
        return 0;
    }
    memchr::memchr_iter(b'\n', lines).nth(n as usize - 1).map_or(lines.len(), |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paginate::StopReason;

    #[test]
    fn partitions_ending_out_of_order_merge_into_ranges() {
        let mut done = Finished::default();
        for index in [3, 0, 5, 1, 4, 9, 2] {
            let report = PartitionReport {
                partition: format!("n={index}"),
                records: 2,
                pages: 1,
                stop: StopReason::NoNext,
                warning: None,
                missing: Vec::new(),
            };
            let frontier = Frontier { mark: Some(format!("m{index}")), ..Frontier::default() };
            done.add(index, report, frontier);
        }
        assert_eq!(done.ranges, vec![[0, 6], [9, 10]]);
        assert!(done.contains(5) && done.contains(9) && !done.contains(6) && !done.contains(10));
        assert_eq!((done.count(), done.records, done.stops["no_next"]), (7, 14, 7));
        assert_eq!(done.marks["n=2"], "m2");
        let cut = PartitionReport {
            partition: "n=7".into(),
            records: 1,
            pages: 1,
            stop: StopReason::MaxPages { pages: 1 },
            warning: None,
            missing: Vec::new(),
        };
        done.add(7, cut, Frontier { mark: Some("m7".into()), ..Frontier::default() });
        assert!(!done.marks.contains_key("n=7"), "a partition cut short keeps the mark it had");
        assert_eq!(done.ranges, vec![[0, 6], [7, 8], [9, 10]]);
        done.add(
            6,
            PartitionReport {
                partition: "n=6".into(),
                records: 0,
                pages: 1,
                stop: StopReason::NoRecords,
                warning: None,
                missing: Vec::new(),
            },
            Frontier::default(),
        );
        done.add(
            8,
            PartitionReport {
                partition: "n=8".into(),
                records: 0,
                pages: 1,
                stop: StopReason::NoRecords,
                warning: None,
                missing: Vec::new(),
            },
            Frontier::default(),
        );
        assert_eq!(done.ranges, vec![[0, 10]]);
    }
    #[test]
    fn past_a_hundred_ended_only_the_partitions_that_warned_are_named() {
        let mut done = Finished::default();
        for index in 0..150u64 {
            let report = PartitionReport {
                partition: format!("n={index}"),
                records: 1,
                pages: 1,
                stop: StopReason::SinglePage,
                warning: (index % 50 == 7).then(|| "more".to_string()),
                missing: if index == 3 { vec!["x".into()] } else { Vec::new() },
            };
            done.add(index, report, Frontier::default());
        }
        assert_eq!(done.reports.keys().copied().collect::<Vec<_>>(), [7, 57, 107]);
        assert_eq!((done.warnings, done.count()), (3, 150));
        assert_eq!(done.missing().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn a_part_lists_the_slices_of_its_first_hundred_partitions_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().to_path_buf()).unwrap();
        let mut ledger = Ledger::new(layout, "r", 1);
        let mut part = ledger.next_part(".ndjson");
        for round in 0..2 {
            for p in 0..150 {
                ledger.add_rows(&mut part, &format!("p={p}"), round, 1);
            }
        }
        assert_eq!(part.rows, 300);
        assert_eq!(part.slices.len(), 200, "two slices of each of the first hundred");
        assert_eq!(part.more_slices, 100);
        let listed: std::collections::BTreeSet<&str> = part.slices.iter().map(|s| s.partition.as_str()).collect();
        let first: std::collections::BTreeSet<String> = (0..100).map(|p| format!("p={p}")).collect();
        assert!(listed.iter().copied().eq(first.iter().map(String::as_str)), "{listed:?}");
    }
}
