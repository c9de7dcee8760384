//! Progress while a run goes on. The pipeline and the fetcher report into [`Progress`]: a few
//! counters and a small table of the partitions under way, each update an atomic add or one
//! uncontended lock. A drawing thread reads it and shows it: live bars ([`bars`]) when stderr
//! is a terminal, a plain log line every 10 s when it is not ([`Display`]). The fetching side
//! never waits for the terminal, and log lines go through the bars ([`log`]) so that neither
//! tears the other.

pub mod bars;
pub mod log;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::human;
use crate::paginate::StopReason;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Display {
    /// Live bars on stderr (a terminal, or forced with `--progress always`).
    Bars { forced: bool },
    /// A log line every [`LINE_EVERY`].
    Lines,
    #[default]
    Off,
}

/// How often a plain progress line is logged.
pub const LINE_EVERY: Duration = Duration::from_secs(10);
/// How often bars are redrawn.
const DRAW_EVERY: Duration = Duration::from_millis(100);
/// How long a partition that ended stays on screen, with its stop reason.
const LINGER: Duration = Duration::from_millis(1500);
/// Partition lines drawn at most; the rest are counted on one line.
pub const SHOWN: usize = 5;

/// What the run has done so far, and each partition under way.
pub struct Progress {
    display: Display,
    /// What the whole job is called on a partition line when it has no partitions.
    job: String,
    started: Instant,
    /// This process's records, pages and record bytes.
    records: AtomicU64,
    pages: AtomicU64,
    bytes: AtomicU64,
    /// What a resumed run had written before this process.
    before: Before,
    partitions: u64,
    ended: AtomicU64,
    slots: Mutex<BTreeMap<u64, Arc<Mutex<Slot>>>>,
    /// A server-requested pause of the whole job: until when, and why.
    pause: Mutex<Option<(Instant, String)>>,
}

/// A resumed run's totals from its checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Before {
    pub records: u64,
    pub pages: u64,
    pub ended: u64,
}

/// One partition under way.
#[derive(Debug, Clone)]
pub struct Slot {
    pub label: Arc<str>,
    pub pages: u64,
    pub records: u64,
    /// The records the server announced for it, once known.
    pub expected: Option<u64>,
    pub state: Activity,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    Fetching,
    /// Waiting for the job's own rate limit (the token bucket).
    Waiting {
        cause: String,
        until: Instant,
    },
    Retrying {
        cause: String,
        until: Instant,
        attempt: u32,
        of: u32,
    },
    Done {
        stop: &'static str,
        at: Instant,
    },
}

/// A moment's view of the run, as drawn.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub records: u64,
    pub pages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Records per second in this process.
    pub rate: f64,
    /// Records the job will have when done, when every partition still to finish announced
    /// its total.
    pub expected: Option<u64>,
    pub eta: Option<Duration>,
    pub partitions: u64,
    pub ended: u64,
    pub under_way: u64,
    /// The first [`SHOWN`] partitions under way (or just ended), with how each is doing.
    pub shown: Vec<(Slot, String)>,
    /// Partitions under way beyond those shown.
    pub more: usize,
}

impl Progress {
    pub fn new(display: Display, job: &str, partitions: u64, before: Before) -> Arc<Self> {
        Arc::new(Progress {
            display,
            job: job.to_string(),
            started: Instant::now(),
            records: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            before,
            partitions,
            ended: AtomicU64::new(0),
            slots: Mutex::new(BTreeMap::new()),
            pause: Mutex::new(None),
        })
    }

    /// Progress kept but never shown: for library callers and `check`.
    pub fn off() -> Arc<Self> {
        Progress::new(Display::Off, "", 1, Before::default())
    }

    /// A partition starts (or goes on from a checkpoint) with `pages` and `records` written.
    pub fn track(self: &Arc<Self>, index: u64, label: &Arc<str>, pages: u64, records: u64) -> Track {
        let label = if label.is_empty() { Arc::from(self.job.as_str()) } else { label.clone() };
        let slot = Arc::new(Mutex::new(Slot { label, pages, records, expected: None, state: Activity::Fetching }));
        self.slots.lock().expect("progress lock").insert(index, slot.clone());
        Track { progress: self.clone(), index, slot }
    }

    /// The server asked the whole job to wait until `until`.
    pub fn paused(&self, until: Instant, cause: &str) {
        *self.pause.lock().expect("progress lock") = Some((until, cause.to_string()));
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let elapsed = self.started.elapsed();
        let new_records = self.records.load(Ordering::Relaxed);
        let records = self.before.records + new_records;
        let ended = self.before.ended + self.ended.load(Ordering::Relaxed);
        let rate = new_records as f64 / elapsed.as_secs_f64().max(1e-3);
        let pause = self.pause.lock().expect("progress lock").clone().filter(|(until, _)| *until > now);
        let slots: Vec<Slot> = {
            let mut slots = self.slots.lock().expect("progress lock");
            // Ended partitions stay a moment so their stop reason can be read.
            slots.retain(|_, slot| {
                !matches!(slot.lock().expect("progress lock").state, Activity::Done { at, .. } if now - at > LINGER)
            });
            slots.values().map(|slot| slot.lock().expect("progress lock").clone()).collect()
        };
        let under_way: Vec<&Slot> = slots.iter().filter(|s| !matches!(s.state, Activity::Done { .. })).collect();
        // Known when nothing is left to start and each partition under way has a total.
        let expected = match ended + under_way.len() as u64 >= self.partitions {
            true => under_way.iter().map(|s| s.expected.map(|e| e.saturating_sub(s.records))).sum::<Option<u64>>(),
            false => None,
        };
        let eta = expected.filter(|_| rate > 0.0).map(|left| Duration::from_secs_f64(left as f64 / rate));
        let shown = slots
            .iter()
            .take(SHOWN)
            .map(|slot| {
                let state = describe(slot, pause.as_ref(), now);
                (slot.clone(), state)
            })
            .collect();
        Snapshot {
            records,
            pages: self.before.pages + self.pages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            elapsed,
            rate,
            expected: expected.map(|left| records + left),
            eta,
            partitions: self.partitions,
            ended,
            under_way: under_way.len() as u64,
            more: slots.len().saturating_sub(SHOWN),
            shown,
        }
    }

    /// Show progress until the returned guard is dropped.
    pub fn show(self: &Arc<Self>) -> Showing {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = match self.display {
            Display::Off => None,
            Display::Lines => {
                let (progress, stop) = (self.clone(), stop.clone());
                Some(std::thread::spawn(move || every(&stop, LINE_EVERY, || progress.log_line())))
            }
            Display::Bars { forced } => {
                let (progress, stop) = (self.clone(), stop.clone());
                Some(std::thread::spawn(move || {
                    let mut bars = bars::Bars::start(forced);
                    every(&stop, DRAW_EVERY, || bars.draw(&progress.snapshot()));
                    bars.finish();
                }))
            }
        };
        Showing { stop, thread }
    }

    fn log_line(&self) {
        tracing::info!("progress: {}", line(&self.snapshot()));
    }
}

/// The summary line: records, pages, rate, bytes, elapsed, ETA, partitions.
pub fn line(s: &Snapshot) -> String {
    let mut text = format!(
        "{}, {}, {} records/s, {} of records, {} elapsed",
        human::plural(s.records, "record", "records"),
        human::plural(s.pages, "page", "pages"),
        human::rate(s.rate),
        human::bytes(s.bytes),
        human::duration(s.elapsed)
    );
    if let Some(eta) = s.eta {
        text.push_str(&format!(", about {} left", human::duration(eta)));
    }
    if s.partitions > 1 {
        text.push_str(&format!(
            "; partitions: {} of {} done, {} under way",
            human::count(s.ended),
            human::count(s.partitions),
            human::count(s.under_way)
        ));
    }
    text
}

/// A pause's cause as the header that asked for it: `retry_after` is `Retry-After`.
pub fn cause_words(cause: &str) -> &str {
    match cause {
        "retry_after" => "Retry-After",
        "x_ratelimit" => "X-RateLimit-Remaining",
        "ratelimit" => "RateLimit",
        other => other,
    }
}

/// What a partition is doing, in words.
fn describe(slot: &Slot, pause: Option<&(Instant, String)>, now: Instant) -> String {
    match &slot.state {
        Activity::Done { stop, .. } => format!("done: {stop}"),
        Activity::Retrying { cause, until, attempt, of } => {
            let left = until.saturating_duration_since(now);
            format!("retrying after {cause} (attempt {attempt} of {of}) in {}", human::duration(left))
        }
        Activity::Waiting { cause, until } => {
            format!("waiting: {cause}, {} left", human::duration(until.saturating_duration_since(now)))
        }
        Activity::Fetching => match pause {
            Some((until, cause)) => format!(
                "waiting: the server asked to slow down ({}), {} left",
                cause_words(cause),
                human::duration(until.saturating_duration_since(now))
            ),
            None => format!("fetching page {}", slot.pages + 1),
        },
    }
}

/// Run `f` every `interval` until stopped.
fn every(stop: &(Mutex<bool>, Condvar), interval: Duration, mut f: impl FnMut()) {
    let (stopped, wake) = stop;
    let mut guard = stopped.lock().expect("progress lock");
    loop {
        let (next, timeout) = wake.wait_timeout(guard, interval).expect("progress lock");
        guard = next;
        if *guard {
            return;
        }
        if timeout.timed_out() {
            f();
        }
    }
}

/// Progress is shown while this lives; dropping it stops the drawing and clears the bars.
pub struct Showing {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Showing {
    fn drop(&mut self) {
        *self.stop.0.lock().expect("progress lock") = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One partition's line in the progress table.
pub struct Track {
    progress: Arc<Progress>,
    index: u64,
    slot: Arc<Mutex<Slot>>,
}

impl Track {
    /// A page was taken in order: the partition's totals now, and what it announced.
    pub fn page(&self, records: u64, bytes: u64, totals: (u64, u64), expected: Option<u64>) {
        let p = &self.progress;
        p.records.fetch_add(records, Ordering::Relaxed);
        p.pages.fetch_add(1, Ordering::Relaxed);
        p.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut slot = self.slot.lock().expect("progress lock");
        (slot.pages, slot.records) = totals;
        slot.expected = expected.or(slot.expected);
    }

    /// A request failed and is tried again after `delay`.
    pub fn retrying(&self, cause: &str, delay: Duration, attempt: u32, of: u32) {
        let until = Instant::now() + delay;
        self.slot.lock().expect("progress lock").state =
            Activity::Retrying { cause: cause.replace('_', " "), until, attempt, of };
    }

    /// A request waits `wait` for the job's own rate limit (`cause`).
    pub fn waiting(&self, cause: &str, wait: Duration) {
        let until = Instant::now() + wait;
        self.slot.lock().expect("progress lock").state = Activity::Waiting { cause: cause.to_string(), until };
    }

    /// A request goes out (again).
    pub fn sending(&self) {
        let mut slot = self.slot.lock().expect("progress lock");
        if slot.state != Activity::Fetching {
            slot.state = Activity::Fetching;
        }
    }

    pub fn done(&self, stop: &StopReason) {
        self.progress.ended.fetch_add(1, Ordering::Relaxed);
        self.slot.lock().expect("progress lock").state = Activity::Done { stop: stop.words(), at: Instant::now() };
        if !matches!(self.progress.display, Display::Bars { .. }) {
            self.progress.slots.lock().expect("progress lock").remove(&self.index);
        }
    }
}

impl Drop for Track {
    /// A partition that stopped without ending (a failure, an interrupt) leaves the table.
    fn drop(&mut self) {
        let done = matches!(self.slot.lock().expect("progress lock").state, Activity::Done { .. });
        if !done {
            self.progress.slots.lock().expect("progress lock").remove(&self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_known_once_every_partition_left_announced_its_total() {
        let progress = Progress::new(Display::Off, "job", 2, Before::default());
        let (a, b) = (progress.track(0, &Arc::from("a"), 0, 0), progress.track(1, &Arc::from("b"), 0, 0));
        a.page(100, 1000, (1, 100), Some(300));
        assert_eq!(progress.snapshot().expected, None, "b has announced nothing");
        b.page(50, 500, (1, 50), Some(50));
        b.done(&StopReason::TotalReached { total: 50 });
        let s = progress.snapshot();
        assert_eq!((s.records, s.pages, s.bytes, s.ended), (150, 2, 1500, 1));
        assert_eq!(s.expected, Some(350));
        assert!(s.eta.is_some());
    }

    #[test]
    fn partitions_beyond_those_shown_are_counted() {
        let progress = Progress::new(Display::Bars { forced: false }, "job", 8, Before::default());
        let tracks: Vec<Track> = (0..8).map(|i| progress.track(i, &Arc::from(format!("p{i}")), 0, 0)).collect();
        tracks[1].retrying("status_503", Duration::from_secs(2), 2, 5);
        progress.paused(Instant::now() + Duration::from_secs(3), "retry_after");
        let s = progress.snapshot();
        assert_eq!((s.shown.len(), s.more), (SHOWN, 8 - SHOWN));
        assert!(s.shown[0].1.starts_with("waiting: the server asked to slow down (Retry-After)"), "{}", s.shown[0].1);
        assert!(s.shown[1].1.starts_with("retrying after status 503 (attempt 2 of 5)"), "{}", s.shown[1].1);
        drop(tracks);
        assert_eq!(progress.snapshot().shown.len(), 0, "partitions that stopped leave the table");
    }
}
