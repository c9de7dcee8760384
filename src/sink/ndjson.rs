//! NDJSON parts: one record per line, optionally gzip or zstd, rotated by `rows_per_file`.
//!
//! A part is written under `_harvest/open/` and renamed into the dataset folder only when
//! complete, so a reader never sees a half-written file. A commit ends the current gzip
//! member or zstd frame before it fsyncs: the durable prefix of the file is then always a
//! valid stream, which is what lets a resume truncate to it.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use flate2::write::GzEncoder;

use super::{nth_line_end, Ledger, PageBatch, PartFile, Sink};
use crate::checkpoint::{OpenPart, Position};
use crate::error::Error;
use crate::output::Layout;
use crate::partition::PartitionReport;
use crate::plan::Compression;

const BUFFER: usize = 1 << 20;

pub struct NdjsonSink {
    ledger: Ledger,
    compression: Compression,
    rows_per_file: u64,
    open: Option<OpenNdjson>,
}

struct OpenNdjson {
    part: PartFile,
    encoder: Option<Encoder>,
}

enum Encoder {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Encoder {
    fn new(file: File, compression: Compression) -> io::Result<Self> {
        let out = BufWriter::with_capacity(BUFFER, file);
        Ok(match compression {
            Compression::None | Compression::Snappy => Encoder::Plain(out),
            Compression::Gzip => Encoder::Gzip(GzEncoder::new(out, flate2::Compression::default())),
            Compression::Zstd => Encoder::Zstd(zstd::Encoder::new(out, 3)?),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(bytes),
            Encoder::Gzip(w) => w.write_all(bytes),
            Encoder::Zstd(w) => w.write_all(bytes),
        }
    }

    /// End the current member or frame, flush and fsync; returns the file and its length.
    fn finish(self) -> io::Result<(File, u64)> {
        let out = match self {
            Encoder::Plain(w) => w,
            Encoder::Gzip(w) => w.finish()?,
            Encoder::Zstd(w) => w.finish()?,
        };
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }
}

impl NdjsonSink {
    /// Part numbers start at `first_seq`.
    #[cfg(test)]
    pub fn new(layout: Layout, run: &str, compression: Compression, rows_per_file: u64, first_seq: u32) -> Self {
        NdjsonSink { ledger: Ledger::new(layout, run, first_seq), compression, rows_per_file, open: None }
    }

    /// Go on from a checkpoint: its open part (already cut back to the checkpoint's length)
    /// is appended to, after a new gzip member or zstd frame.
    pub fn resume(
        layout: Layout,
        run: &str,
        compression: Compression,
        rows_per_file: u64,
        position: &Position,
    ) -> Result<Self, Error> {
        let ledger = Ledger::resume(layout, run, position);
        let open = match &position.open {
            Some(open) => {
                let part = ledger.reopened(open);
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&part.path)
                    .map_err(|e| Error::io(format!("reopening {}", part.path.display()), e))?;
                let encoder = Encoder::new(file, compression).map_err(|e| Error::io("starting compression", e))?;
                Some(OpenNdjson { part, encoder: Some(encoder) })
            }
            None => None,
        };
        Ok(NdjsonSink { ledger, compression, rows_per_file, open })
    }

    fn open_part(&mut self) -> Result<&mut OpenNdjson, Error> {
        if self.open.is_none() {
            let part = self.ledger.next_part(&format!(".ndjson{}", self.compression.extension()));
            let file =
                File::create(&part.path).map_err(|e| Error::io(format!("creating {}", part.path.display()), e))?;
            let encoder = Encoder::new(file, self.compression).map_err(|e| Error::io("starting compression", e))?;
            self.open = Some(OpenNdjson { part, encoder: Some(encoder) });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }

    /// Close the open part and rename it into the dataset folder.
    fn publish(&mut self) -> Result<(), Error> {
        let Some(mut open) = self.open.take() else { return Ok(()) };
        let (file, len) = open
            .encoder
            .take()
            .expect("an open part has an encoder")
            .finish()
            .map_err(|e| Error::io(format!("writing {}", open.part.path.display()), e))?;
        drop(file);
        self.ledger.publish(open.part, len, None)
    }
}

impl Sink for NdjsonSink {
    fn write(&mut self, batch: PageBatch) -> Result<(), Error> {
        let mut lines = batch.lines.as_slice();
        let mut remaining = batch.count;
        while remaining > 0 {
            let rows_per_file = self.rows_per_file;
            let open = self.open_part()?;
            let take = remaining.min(rows_per_file - open.part.rows);
            let cut = if take == remaining { lines.len() } else { nth_line_end(lines, take) };
            open.encoder
                .as_mut()
                .expect("an open part has an encoder")
                .write_all(&lines[..cut])
                .map_err(|e| Error::io(format!("writing {}", open.part.path.display()), e))?;
            let open = self.open.as_mut().expect("opened above");
            self.ledger.add_rows(&mut open.part, &batch.partition, batch.page, take);
            let full = open.part.rows >= rows_per_file;
            lines = &lines[cut..];
            remaining -= take;
            if full {
                self.publish()?;
            }
        }
        self.ledger.page_done(&batch);
        Ok(())
    }

    fn end(&mut self, index: u64, report: PartitionReport) {
        self.ledger.end(index, report);
    }

    fn commit(&mut self) -> Result<Position, Error> {
        if !self.ledger.layout.store.is_local() {
            // In object storage a part is never appended to: a checkpoint closes it.
            self.publish()?;
            return Ok(self.ledger.position(None));
        }
        let compression = self.compression;
        let open = match self.open.as_mut() {
            Some(open) => {
                let (file, len) = open
                    .encoder
                    .take()
                    .expect("an open part has an encoder")
                    .finish()
                    .map_err(|e| Error::io(format!("syncing {}", open.part.path.display()), e))?;
                open.encoder =
                    Some(Encoder::new(file, compression).map_err(|e| Error::io("restarting compression", e))?);
                let part = &open.part;
                Some(OpenPart {
                    file: part.name.clone(),
                    rows: part.rows,
                    len,
                    partitions: part.slices.clone(),
                    more_slices: part.more_slices,
                })
            }
            None => None,
        };
        Ok(self.ledger.position(open))
    }

    fn finish(&mut self) -> Result<Position, Error> {
        self.publish()?;
        Ok(self.ledger.position(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Frontier;
    use crate::output::PartSlice;
    use crate::paginate::StopReason;

    fn batch(partition: &str, page: u64, ids: std::ops::Range<u64>) -> PageBatch {
        let mut lines = Vec::new();
        for id in ids.clone() {
            lines.extend_from_slice(format!("{{\"id\":{id}}}\n").as_bytes());
        }
        PageBatch::new(partition.into(), page, lines, ids.end - ids.start)
    }

    #[test]
    fn rotates_within_pages_and_records_slices() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("job")).unwrap();
        let mut sink = NdjsonSink::new(layout.clone(), "R", Compression::None, 4, 1);
        sink.write(batch("a", 0, 0..3)).unwrap();
        sink.write(batch("b", 0, 0..3)).unwrap();
        let committed = sink.commit().unwrap();
        assert_eq!(committed.parts.len(), 1);
        assert_eq!(committed.open.as_ref().unwrap().rows, 2);
        let done = sink.finish().unwrap();
        assert_eq!(done.parts.len(), 2);
        assert_eq!(
            done.parts[0].partitions[1],
            PartSlice { partition: "b".into(), rows: [3, 4], records: [0, 1], pages: [0, 0] }
        );
        assert_eq!(done.parts[1].partitions[0].records, [1, 3]);
        let first = std::fs::read_to_string(layout.root.join("part-R-000001.ndjson")).unwrap();
        assert_eq!(first, "{\"id\":0}\n{\"id\":1}\n{\"id\":2}\n{\"id\":0}\n");
        assert_eq!(done.active["b"], Frontier { pages: 1, records: 3, ..Frontier::default() });
        let report = PartitionReport {
            partition: "b".into(),
            records: 3,
            pages: 1,
            stop: StopReason::NoNext,
            warning: None,
            missing: Vec::new(),
        };
        sink.end(1, report.clone());
        let ended = sink.finish().unwrap();
        assert_eq!(ended.active.keys().collect::<Vec<_>>(), ["a"], "an ended partition is no longer an entry");
        assert_eq!(
            (ended.done.ranges.clone(), ended.done.records, ended.done.reports[&1].clone()),
            (vec![[1, 2]], 3, report)
        );
    }

    #[test]
    fn compressed_commits_leave_a_valid_stream() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::create(dir.path().join("job")).unwrap();
        let mut sink = NdjsonSink::new(layout.clone(), "R", Compression::Gzip, 100, 1);
        sink.write(batch("", 0, 0..2)).unwrap();
        let pos = sink.commit().unwrap();
        let open = pos.open.unwrap();
        let bytes = std::fs::read(layout.open_dir().join(&open.file)).unwrap();
        assert_eq!(bytes.len() as u64, open.len);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), &mut text).unwrap();
        assert_eq!(text, "{\"id\":0}\n{\"id\":1}\n");
        sink.write(batch("", 1, 2..3)).unwrap();
        sink.finish().unwrap();
    }
}
