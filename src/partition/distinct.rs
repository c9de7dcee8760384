//! Exact de-duplication of a stream of values in bounded memory: which of them are the first
//! occurrence of their value.
//!
//! The values are taken in chunks of at most [`CHUNK_BYTES`]; each chunk is sorted by
//! (value, place) and, once there is more than one, written to an unnamed temporary file (gone
//! when closed, even after a kill). The sorted runs are then merged: the first of each group of
//! equal values is the one that came first, and its place is marked in a bitmap. What stays in
//! memory is one chunk and one bit per value, so a million values cost a few hundred KiB
//! beyond the chunk, and no value is ever dropped by a probabilistic filter's mistake.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};

/// Bytes of values (and their bookkeeping) sorted in memory before a run goes to disk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Runs merged at once; more are merged in rounds.
const FAN_IN: usize = 64;

/// Which places in the stream hold the first occurrence of their value.
#[derive(Debug, Clone, Default)]
pub struct Firsts {
    bits: Vec<u64>,
    /// Values seen in all, and how many were first occurrences.
    pub seen: u64,
    pub kept: u64,
}

impl Firsts {
    pub fn is_first(&self, place: u64) -> bool {
        self.bits.get((place / 64) as usize).is_some_and(|word| word & (1 << (place % 64)) != 0)
    }

    fn mark(&mut self, place: u64) {
        let word = (place / 64) as usize;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (place % 64);
        self.kept += 1;
    }
}

/// One chunk of values with their places, sorted before it is merged or written.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    /// (start in `bytes`, length, place in the stream).
    entries: Vec<(u32, u32, u64)>,
}

impl Chunk {
    fn size(&self) -> usize {
        self.bytes.len() + self.entries.len() * std::mem::size_of::<(u32, u32, u64)>()
    }

    fn push(&mut self, value: &[u8], place: u64) {
        self.entries.push((self.bytes.len() as u32, value.len() as u32, place));
        self.bytes.extend_from_slice(value);
    }

    fn value(&self, entry: &(u32, u32, u64)) -> &[u8] {
        &self.bytes[entry.0 as usize..(entry.0 + entry.1) as usize]
    }

    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.value(a).cmp(self.value(b)).then(a.2.cmp(&b.2)));
        self.entries = entries;
    }

    /// Write the sorted chunk as a run: each value as its length, its bytes and its place.
    fn spill(&mut self) -> io::Result<std::fs::File> {
        self.sort();
        let mut out = BufWriter::new(tempfile::tempfile()?);
        for entry in &self.entries {
            write_entry(&mut out, self.value(entry), entry.2)?;
        }
        self.bytes.clear();
        self.entries.clear();
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(file)
    }
}

fn write_entry(out: &mut impl Write, value: &[u8], place: u64) -> io::Result<()> {
    out.write_all(&(value.len() as u32).to_le_bytes())?;
    out.write_all(value)?;
    out.write_all(&place.to_le_bytes())
}

/// A sorted run being read back.
struct SortedRun {
    reader: BufReader<std::fs::File>,
}

impl SortedRun {
    fn next(&mut self) -> io::Result<Option<(Vec<u8>, u64)>> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut value = vec![0u8; u32::from_le_bytes(len) as usize];
        self.reader.read_exact(&mut value)?;
        let mut place = [0u8; 8];
        self.reader.read_exact(&mut place)?;
        Ok(Some((value, u64::from_le_bytes(place))))
    }
}

/// Mark the first occurrence of each value `values` gives, in order. A value that `values`
/// fails to give ends it with that error.
pub fn firsts<E: From<io::Error>>(values: impl Iterator<Item = Result<Vec<u8>, E>>) -> Result<Firsts, E> {
    firsts_within(values, CHUNK_BYTES)
}

fn firsts_within<E: From<io::Error>>(
    values: impl Iterator<Item = Result<Vec<u8>, E>>,
    chunk_bytes: usize,
) -> Result<Firsts, E> {
    let mut chunk = Chunk::default();
    let mut runs: Vec<std::fs::File> = Vec::new();
    let mut seen = 0u64;
    for value in values {
        let value = value?;
        if chunk.size() + value.len() > chunk_bytes && !chunk.entries.is_empty() {
            runs.push(chunk.spill()?);
        }
        chunk.push(&value, seen);
        seen += 1;
    }
    let mut firsts = Firsts { bits: vec![0; seen.div_ceil(64) as usize], seen, kept: 0 };
    if runs.is_empty() {
        // All in memory: sorted, the first of each group of equal values is the earliest.
        chunk.sort();
        let mut last: Option<&[u8]> = None;
        for entry in &chunk.entries {
            let value = chunk.value(entry);
            if last != Some(value) {
                firsts.mark(entry.2);
            }
            last = Some(value);
        }
        return Ok(firsts);
    }
    if !chunk.entries.is_empty() {
        runs.push(chunk.spill()?);
    }
    drop(chunk);
    // Merge in rounds until few enough remain to merge at once.
    while runs.len() > FAN_IN {
        let mut merged = Vec::new();
        for group in runs.chunks_mut(FAN_IN) {
            let group: Vec<std::fs::File> = group.iter_mut().map(|f| f.try_clone()).collect::<io::Result<_>>()?;
            let mut out = BufWriter::new(tempfile::tempfile()?);
            merge(group, |value, place| write_entry(&mut out, value, place))?;
            let mut file = out.into_inner().map_err(|e| e.into_error())?;
            file.rewind()?;
            merged.push(file);
        }
        runs = merged;
    }
    let mut last: Option<Vec<u8>> = None;
    merge(runs, |value, place| {
        if last.as_deref() != Some(value) {
            firsts.mark(place);
            last = Some(value.to_vec());
        }
        Ok(())
    })?;
    Ok(firsts)
}

/// Merge sorted runs into one sorted sequence, handing each (value, place) to `each`.
fn merge(runs: Vec<std::fs::File>, mut each: impl FnMut(&[u8], u64) -> io::Result<()>) -> io::Result<()> {
    let mut runs: Vec<SortedRun> = runs.into_iter().map(|file| SortedRun { reader: BufReader::new(file) }).collect();
    let mut heap = BinaryHeap::new();
    for (i, run) in runs.iter_mut().enumerate() {
        if let Some((value, place)) = run.next()? {
            heap.push(Reverse((value, place, i)));
        }
    }
    while let Some(Reverse((value, place, i))) = heap.pop() {
        each(&value, place)?;
        if let Some((value, place)) = runs[i].next()? {
            heap.push(Reverse((value, place, i)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn expected(values: &[Vec<u8>]) -> Vec<bool> {
        let mut seen = std::collections::HashSet::new();
        values.iter().map(|v| seen.insert(v.clone())).collect()
    }

    fn marked(values: &[Vec<u8>]) -> Vec<bool> {
        let firsts = firsts_within(values.iter().map(|v| Ok::<_, io::Error>(v.clone())), 64).unwrap();
        (0..values.len() as u64).map(|i| firsts.is_first(i)).collect()
    }

    #[test]
    fn past_the_chunk_the_runs_on_disk_give_the_same_answer() {
        // About 6 chunks of 16-byte values with many repeats far apart.
        let values: Vec<Vec<u8>> = (0..300_000u64).map(|i| format!("{:016}", (i * 7919) % 120_001).into()).collect();
        let want = expected(&values);
        // One chunk in memory, a few runs, and more runs than are merged at once.
        for chunk in [1 << 30, CHUNK_BYTES, 16 << 10] {
            let firsts = firsts_within(values.iter().map(|v| Ok::<_, io::Error>(v.clone())), chunk).unwrap();
            assert_eq!((firsts.seen, firsts.kept), (300_000, 120_001));
            assert!((0..values.len()).all(|i| firsts.is_first(i as u64) == want[i]), "chunks of {chunk} bytes");
        }
    }

    proptest! {
        #[test]
        fn the_first_of_each_value_is_kept_and_only_it(values in proptest::collection::vec(
            proptest::collection::vec(0u8..4, 0..3), 0..200)) {
            prop_assert_eq!(marked(&values), expected(&values));
        }
    }
}
