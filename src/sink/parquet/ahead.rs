//! The Parquet work the fetching tasks do side by side, before a page reaches the writer: its
//! own schema inferred, its rows decoded into a record batch under the current schema (see
//! the parent module).

use std::sync::{Arc, RwLock};

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder, ReaderBuilder};
use arrow_schema::SchemaRef;

use crate::schema::{Rules, Ty};
use crate::sink::{Prepare, Prepared};

/// The schema the fetching tasks prepare pages under.
pub(super) struct Ahead {
    pub(super) rules: Rules,
    pub(super) declared: bool,
    pub(super) current: RwLock<Option<Arc<SchemaSnapshot>>>,
}

pub(super) struct SchemaSnapshot {
    /// Unique in the process: what a thread's cached decoder was built for.
    pub(super) id: u64,
    pub(super) version: u64,
    pub(super) ty: Ty,
    pub(super) arrow: SchemaRef,
    pub(super) rewrite: bool,
}

/// A page as the fetching side left it: its own schema, and its rows decoded if they fit the
/// current one.
pub(super) struct PreparedPage {
    pub(super) ty: Ty,
    pub(super) decoded: Option<(u64, RecordBatch)>,
}

impl Prepare for Ahead {
    fn prepare(&self, lines: &[u8], count: u64) -> Option<Prepared> {
        let snapshot = self.current.read().expect("schema lock").clone()?;
        let mut ty = Ty::record();
        match self.declared {
            true => {
                for line in super::lines(lines) {
                    if line.first() != Some(&b'{') || snapshot.ty.check(line, "$").is_err() {
                        return None;
                    }
                }
            }
            false => {
                ty.widen_page(lines, self.rules)?;
            }
        }
        if !self.declared && snapshot.ty.clone().merge_record(&ty) {
            return Some(Box::new(PreparedPage { ty, decoded: None }));
        }
        let mut rewritten = Vec::new();
        let lines = match snapshot.rewrite {
            false => lines,
            true => {
                for line in super::lines(lines) {
                    snapshot.ty.rewrite(line, &mut rewritten);
                    rewritten.push(b'\n');
                }
                &rewritten
            }
        };
        let decoded = decode(&snapshot, lines, count as usize);
        Some(Box::new(PreparedPage { ty, decoded: decoded.map(|batch| (snapshot.version, batch)) }))
    }
}

pub(super) static SNAPSHOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Rows a prepared page may hold.
const PAGE_ROWS: usize = 1 << 16;

thread_local! {
    /// Each fetching thread's decoder, kept from page to page while the schema stays: the
    /// snapshot it was built for, the rows it takes at a time, and the decoder.
    static DECODER: std::cell::RefCell<Option<(u64, usize, Decoder)>> = const { std::cell::RefCell::new(None) };
}

/// All of `lines` as one record batch, with this thread's decoder for the schema; `None`
/// when they do not decode as counted (the writer then decodes them itself, and says why).
fn decode(snapshot: &SchemaSnapshot, lines: &[u8], rows: usize) -> Option<RecordBatch> {
    if rows > PAGE_ROWS {
        return None;
    }
    DECODER.with(|cell| {
        let mut cell = cell.borrow_mut();
        // A decoder holds room for as many rows as it takes at a time: sized to the pages seen.
        if cell.as_ref().is_none_or(|(id, capacity, _)| *id != snapshot.id || *capacity < rows) {
            let capacity = rows.next_power_of_two().max(128);
            let decoder = ReaderBuilder::new(snapshot.arrow.clone())
                .with_batch_size(capacity)
                .with_strict_mode(true)
                .build_decoder()
                .ok()?;
            *cell = Some((snapshot.id, capacity, decoder));
        }
        let (_, _, decoder) = cell.as_mut().expect("set above");
        let decoded = match decoder.decode(lines) {
            Ok(used) if used == lines.len() => decoder.flush().ok().flatten(),
            _ => None,
        };
        if decoded.is_none() {
            // Whatever it holds now is not to be trusted with the next page.
            *cell = None;
        }
        decoded
    })
}
