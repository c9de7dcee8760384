//! The harvest, top to bottom: partitions → pages → fetch → records → sink.
//!
//! Each partition is its own pagination stream, and partitions run side by side. For every
//! page the strategy says what to ask, [`page`] fetches and judges it (one semaphore
//! bounds the requests in flight for the whole job, one token bucket their rate), and the page
//! goes in order to the sink's queue, with where the partition goes on from for a checkpoint.
//! The run around it (lock, resume, the writer thread, the manifest) is [`crate::run`].
//!
//! Offset and page pagination also fetch ahead within a partition: a window of pages is in
//! flight at once, each fetched and parsed on its own task, and the results are taken in
//! order (the window is the reorder buffer), so records reach the sink in API order. A page
//! that comes back short re-plans the rest from where it ended, so a capped page size never
//! leaves a gap.
//!
//! A shard of a sharded run harvests only its share ([`crate::shard::Deal`]): the partitions
//! whose keys hash to it, or, with fewer partitions than shards, every partition's pages that
//! are dealt to it (`dealt.rs`).

mod dealt;
pub(crate) mod decode;
pub mod page;
mod pages;
mod walk;

pub use dealt::{pages_can_be_dealt, Deal};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Finished, Frontier};
use crate::error::Error;
use crate::fetch::Fetcher;
use crate::human;
use crate::incremental::{self, Sent};
use crate::jsonpath::Document;
use crate::paginate::{PageRequest, StopReason};
use crate::partition::file::text_at;
use crate::partition::{Partition, PartitionReport};
use crate::plan::{partition_named, partition_suffix, Plan};
use crate::progress::{Progress, Track};
use crate::sink::{Item, PageBatch, Prepare, Prepared};
use dealt::Dealing;
use decode::Decoder;
use page::{fetch_page, PageContext, PageFailure, PageOut};
use pages::{Course, Pages};
use walk::Walked;

/// What every partition's harvest shares.
pub(crate) struct Shared {
    pub(crate) plan: Arc<Plan>,
    pub(crate) fetcher: Arc<Fetcher>,
    /// What the job's response bodies hold.
    pub(crate) decoder: Arc<dyn Decoder>,
    pub(crate) tx: mpsc::Sender<Item>,
    /// The sink's per-page work, done by the fetching tasks.
    pub(crate) prepare: Option<Arc<dyn Prepare>>,
    pub(crate) progress: Arc<Progress>,
    /// A resumed run's partitions under way, by key, where each goes on from.
    pub(crate) active: BTreeMap<String, Frontier>,
    /// A resumed run's partitions that ended: not harvested again.
    pub(crate) done: Finished,
    /// Incremental syncs: the mark each partition sends.
    pub(crate) marks: Sent,
    /// First pages still to be read for what they suggest when a partition stops after one.
    pub(crate) hints: AtomicU64,
    /// A shard's share of the run; `None` harvests everything.
    pub(crate) deal: Option<Deal>,
}

/// First pages a run reads for what they suggest: enough to catch a wrong next or records
/// path, which shows on every partition alike, without parsing every page twice in a job
/// of single-page partitions.
pub(crate) const HINTS: u64 = 100;

/// Partitions whose ends are logged one by one (at `info`); more are counted by progress.
const LOGGED: u64 = 100;

/// One partition as its harvest sees it.
struct Part {
    partition: Partition,
    /// Its key with secrets masked: what the log, the sink and the manifest call it.
    label: Arc<str>,
    /// The incremental mark as a query parameter, when no placeholder takes it.
    since: Option<(String, String)>,
    start: Frontier,
    /// Its line in the progress table.
    track: Track,
}

impl Shared {
    /// Everything a partition's harvest needs of it: its label, its mark, where it starts.
    fn part(&self, mut partition: Partition) -> Part {
        let label: Arc<str> = self.plan.redactor.redact(&partition.key).into();
        let start = self.active.get(&*label).cloned().unwrap_or_default();
        let mut since = None;
        if let (Some(incremental), Some(mark)) = (&self.plan.incremental, self.marks.get(&label)) {
            // Among the values for a `{param}` placeholder, else as a query parameter.
            partition.values.push((incremental.param.clone(), mark.to_string()));
            if !incremental.placeholder {
                since = Some((incremental.param.clone(), mark.to_string()));
            }
        }
        let track = self.progress.track(partition.index, &label, start.pages, start.records);
        Part { partition, label, since, start, track }
    }

    /// What fetching a page of `part` needs.
    fn page<'a>(&'a self, part: &'a Part) -> PageContext<'a> {
        PageContext {
            plan: &self.plan,
            fetcher: &self.fetcher,
            decoder: &*self.decoder,
            label: &part.label,
            partition: &part.partition,
            since: part.since.as_ref(),
            track: &part.track,
            hints: &self.hints,
        }
    }

    /// Fetch and decode a page of `part`. Where no `max_records` cut can change which of its
    /// records are kept, the sink's work on them is done here too, on the fetching task, side
    /// by side with the other pages, after the request's slot is given back.
    async fn fetch(&self, part: &Part, request: &PageRequest, page: u64) -> Result<Harvested, PageFailure> {
        let out = fetch_page(&self.page(part), request, page).await?;
        let work = self.plan.pagination.max_records.is_none().then(|| self.work(part, &out.lines, out.received));
        Ok(Harvested { out, work })
    }

    /// The sink's work on a page's records, the incremental mark they carry and the values
    /// they answer for `[partitions.check]`: done once, each record parsed once for both.
    fn work(&self, part: &Part, lines: &[u8], count: u64) -> Work {
        let prepared = self.prepare.as_ref().and_then(|prepare| prepare.prepare(lines, count));
        let field = self.plan.incremental.as_ref().map(|i| &i.field);
        let asked = &part.partition.asked;
        let check = self.plan.partitions.check.as_ref().filter(|_| !asked.is_empty());
        let (mut mark, mut answered) = (None, Vec::new());
        if field.is_none() && check.is_none() {
            return Work { prepared, mark, answered };
        }
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(record) = Document::parse(line) else { continue };
            if let Some(field) = field {
                mark = incremental::max(mark, incremental::mark_of(field, &record).as_deref());
            }
            if let Some(Ok(Some(value))) = check.map(|check| text_at(check, &record)) {
                if asked.contains(&value) {
                    answered.push(value);
                }
            }
        }
        Work { prepared, mark, answered }
    }
}

/// A page fetched for the harvest.
struct Harvested {
    out: Box<PageOut>,
    /// The work on its records, if it was done where it was fetched.
    work: Option<Work>,
}

/// The work on a page's records the writer would otherwise do.
struct Work {
    prepared: Option<Prepared>,
    /// Incremental syncs: the greatest mark on the page.
    mark: Option<String>,
    /// `[partitions.check]`: the values asked for that its records answer.
    answered: Vec<String>,
}

/// Run the partitions side by side, at most `concurrency` at once, taking them from the
/// plan one at a time and skipping those a resumed run had finished. The first failure stops
/// the others (they drain what they have in flight); its error is the one reported. Each
/// partition's end goes to the writer after its last page.
pub(crate) async fn harvest_partitions(shared: &Arc<Shared>, cancel: &CancellationToken) -> Option<Error> {
    let plan = &shared.plan;
    let deal = shared.deal;
    let active = (plan.limits.concurrency as u64).min(plan.partitions.count()).max(1) as usize;
    // Pages fetched ahead per partition. The requests in flight are bounded by the fetcher's
    // semaphore; the window is twice a partition's share of it, so that a page waiting for an
    // earlier one to arrive does not leave its slot idle (a queued task takes the freed
    // permit at once), and the pages held for reordering stay about 2 x `concurrency`. A
    // share of one stays strictly one page at a time: no request past the end that a
    // sequential harvest would not make.
    let share = (plan.limits.concurrency / active).max(1);
    let window = if share == 1 { 1 } else { 2 * share };
    let stop = cancel.child_token();
    let todo =
        plan.partitions.iter().filter(|p| !shared.done.contains(p.index) && deal.is_none_or(|d| d.takes(&p.key)));
    let mut tasks = futures::stream::iter(todo)
        .map(|partition| {
            let part = Arc::new(shared.part(partition));
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move { Harvest { shared: &shared, part, window }.run(&stop).await })
        })
        .buffer_unordered(active);
    let mut failure: Option<Error> = None;
    while let Some(joined) = tasks.next().await {
        let result = joined.unwrap_or_else(|e| Err(Error::Task { task: "a partition's task", cause: e.to_string() }));
        if let Err(error) = result {
            stop.cancel();
            // An interruption caused by another partition's failure is not the story.
            let keep = match (&failure, &error) {
                (None, _) => true,
                (Some(Error::Interrupted { .. }), e) => !matches!(e, Error::Interrupted { .. }),
                _ => false,
            };
            if keep {
                failure = Some(error);
            }
        }
    }
    // A source that could not be read to its end gave only some of the partitions.
    failure.or_else(|| plan.partitions.failure())
}

/// One partition's harvest.
struct Harvest<'a> {
    shared: &'a Arc<Shared>,
    part: Arc<Part>,
    /// Pages fetched ahead (offset and page pagination, and dealt pages).
    window: usize,
}

/// A partition's progress, in order.
#[derive(Debug, Default)]
struct Tally {
    pages: u64,
    records: u64,
    /// What its first page suggested, if it stopped after it.
    warning: Option<String>,
    /// `[partitions.check]`: the values its records answered, of those it asked for.
    found: BTreeSet<String>,
}

impl Harvest<'_> {
    fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    fn label(&self) -> &str {
        &self.part.label
    }

    /// The partition from where it stands to its end: its own pages as its strategy walks
    /// them, or this shard's share of them.
    async fn run(&self, cancel: &CancellationToken) -> Result<PartitionReport, Error> {
        let start = &self.part.start;
        let mut tally = Tally { pages: start.pages, records: start.records, ..Tally::default() };
        let stop = match self.shared.deal {
            Some(Deal::ByPage(shard)) => {
                let resume: Option<dealt::SavedDeal> =
                    start.resume.as_ref().map(|saved| self.saved(saved)).transpose()?;
                if let Some(stop) = resume.as_ref().and_then(|r| r.done.clone()) {
                    // It ended, but the checkpoint came before the writer heard so.
                    return self.end(&tally, stop).await;
                }
                let course = Dealing::new(self, shard, resume.map(|r| r.dealt));
                self.walk(course, &mut tally, cancel).await?
            }
            _ => {
                let resume: Option<walk::SavedWalk> =
                    start.resume.as_ref().map(|saved| self.saved(saved)).transpose()?;
                if let Some(resume) = &resume {
                    tally.found = resume.found.clone();
                    if let Some(stop) = resume.done.clone() {
                        return self.end(&tally, stop).await;
                    }
                }
                let course = Walked::new(self, resume, &tally)?;
                self.walk(course, &mut tally, cancel).await?
            }
        };
        self.end(&tally, stop).await
    }

    /// Take the partition's pages in order, as `course` has them asked for, to its end: the
    /// one place a page is taken, an interrupt heeded and an end found.
    async fn walk<C: Course>(
        &self,
        mut course: C,
        tally: &mut Tally,
        cancel: &CancellationToken,
    ) -> Result<StopReason, Error> {
        let mut pages = Pages::new(self, self.window);
        loop {
            // Interrupted: ask nothing more, but take the pages already in flight, in order.
            if cancel.is_cancelled() && pages.is_empty() {
                return Err(Error::interrupted());
            }
            if let Some(stop) = course.settled(tally) {
                return Ok(stop);
            }
            pages.fill(&mut course, tally, cancel);
            let Some((tag, fetched)) = pages.next().await? else { return Ok(course.exhausted(tally)) };
            let page = match fetched {
                Ok(page) => page,
                Err(failure) => {
                    pages.abort();
                    return course.failed(&tag, failure);
                }
            };
            if let Some(stop) = self.accept(&mut course, &tag, page, tally).await? {
                return Ok(stop);
            }
            course.replan(&mut pages, cancel)?;
        }
    }

    /// Where a checkpoint says the partition goes on from, in the form its harvest keeps it.
    fn saved<T: serde::de::DeserializeOwned>(&self, saved: &serde_json::Value) -> Result<T, Error> {
        serde_json::from_value(saved.clone()).map_err(|e| self.unreadable(&e))
    }

    fn unreadable(&self, why: &dyn std::fmt::Display) -> Error {
        Error::Checkpoint(format!(
            "the checkpoint's state of partition{} cannot be read ({why}); run with --fresh to start over",
            partition_suffix(self.label())
        ))
    }

    /// The partition has ended: say so, and tell the writer after its last page.
    async fn end(&self, tally: &Tally, stop: StopReason) -> Result<PartitionReport, Error> {
        let ended = format!(
            "{} ended: {} in {}; {stop}",
            partition_named(self.label()),
            human::plural(tally.records, "record", "records"),
            human::plural(tally.pages, "page", "pages")
        );
        // A line each while they are few; past that, progress counts them.
        match self.plan().partitions.count() <= LOGGED {
            true => tracing::info!("{ended}"),
            false => tracing::debug!("{ended}"),
        }
        if let (Some(incremental), true) = (&self.plan().incremental, stop.cut_short()) {
            tracing::warn!(
                "{} was cut short ({stop}): its mark for {} stays where it was",
                partition_named(self.label()),
                incremental.field.as_str()
            );
        }
        if let Some(warning) = &tally.warning {
            tracing::warn!(
                "{} stopped after its first page ({}): {warning}",
                partition_named(self.label()),
                stop.words()
            );
        }
        let asked = &self.part.partition.asked;
        let missing: Vec<String> = match (&stop, &self.plan().partitions.check) {
            (StopReason::NotFound, _) => asked.clone(),
            (_, Some(_)) => asked.iter().filter(|v| !tally.found.contains(*v)).cloned().collect(),
            (_, None) => Vec::new(),
        };
        if !missing.is_empty() {
            tracing::debug!(
                "{}: {} asked but not returned",
                partition_named(self.label()),
                human::plural(missing.len() as u64, "value", "values")
            );
        }
        self.part.track.done(&stop);
        let report = PartitionReport {
            partition: self.label().to_string(),
            records: tally.records,
            pages: tally.pages,
            stop,
            warning: tally.warning.clone(),
            missing,
        };
        let end = Item::End { index: self.part.partition.index, report: report.clone() };
        self.shared.tx.send(end).await.map_err(|_| Error::WriterStopped)?;
        Ok(report)
    }

    /// Take a page in order: move the course past it, keep what `max_records` leaves of its
    /// records, send them to the sink with where the partition goes on from, count them, and
    /// say whether the partition is done.
    async fn accept<C: Course>(
        &self,
        course: &mut C,
        tag: &C::Tag,
        page: Harvested,
        tally: &mut Tally,
    ) -> Result<Option<StopReason>, Error> {
        let Harvested { mut out, work } = page;
        let received = out.received;
        let count = match self.plan().pagination.max_records {
            Some(max) => received.min(max.saturating_sub(tally.records)),
            None => received,
        };
        let stop = course.take(self, tag, &mut out, count, tally)?;
        let mut lines = out.lines;
        if count < received {
            lines.truncate(crate::sink::nth_line_end(&lines, count));
        }
        // Done ahead where no cut could change the records kept, else here, after the cut.
        let Work { prepared, mark, answered } = work.unwrap_or_else(|| self.shared.work(&self.part, &lines, count));
        tally.found.extend(answered);
        let (resume, seen) = course.resume(stop.as_ref(), &tally.found);
        let bytes = lines.len() as u64;
        let partition = self.part.label.clone();
        let batch =
            PageBatch { partition, page: tally.pages, lines, count, prepared, resume: Some(resume), seen, mark };
        if self.shared.tx.send(Item::Page(batch)).await.is_err() {
            return Err(Error::WriterStopped);
        }
        tally.records += count;
        tally.pages += 1;
        self.part.track.page(count, bytes, (tally.pages, tally.records), course.expected());
        Ok(stop)
    }
}
