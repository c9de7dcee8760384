//! Progress while a run goes on: for now a plain line every few seconds on stderr, counted
//! across every partition (live bars come in a later version).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Plain progress lines until a later version draws bars.
pub(crate) struct Progress {
    enabled: bool,
    records: AtomicU64,
    pages: AtomicU64,
    last: Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new(enabled: bool) -> Self {
        Progress { enabled, records: AtomicU64::new(0), pages: AtomicU64::new(0), last: Mutex::new(Instant::now()) }
    }

    pub(crate) fn tick(&self, records: u64) {
        let records = self.records.fetch_add(records, Ordering::Relaxed) + records;
        let pages = self.pages.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().expect("progress lock");
        if last.elapsed() >= PROGRESS_EVERY {
            *last = Instant::now();
            eprintln!("harvest: {records} records, {pages} pages");
        }
    }
}
