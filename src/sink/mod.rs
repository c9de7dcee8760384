//! The writer side: one job-wide sink that takes whole pages and makes them durable.
//!
//! The pipeline hands the sink whole pages tagged (partition, page index), as raw record
//! bytes: one compact JSON record per line, exactly as the API sent it. The sink never knows
//! about HTTP. `commit()` makes everything written so far durable and returns the
//! [`Position`] a checkpoint stores: the parts already published, each partition's page
//! frontier, and the open part's fsynced length. Formats are one file each (`ndjson.rs`).

pub mod ndjson;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One page of records for the sink.
#[derive(Debug)]
pub struct PageBatch {
    pub partition: usize,
    /// 0-based page index within the partition.
    pub page: u64,
    /// Records, each one line of compact JSON ending in `\n`.
    pub lines: Vec<u8>,
    pub count: u64,
}

pub trait Sink: Send {
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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    /// Pages written: the next page to write has this index.
    pub pages: u64,
    pub records: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    pub partitions: Vec<PartSlice>,
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
