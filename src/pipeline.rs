//! The harvest, top to bottom: partitions → pages → fetch → records → sink.
//!
//! Each partition is its own pagination stream, and partitions run side by side. For every
//! page the strategy says what to ask, the fetcher asks it (one semaphore bounds the requests
//! in flight for the whole job, one token bucket their rate), the records are cut out of the
//! body as raw bytes, the strategy reads the response to decide what comes next, and the page
//! goes to the sink, which runs on its own thread behind a bounded queue: a slow disk slows the
//! fetching, nothing queues without limit.
//!
//! Offset and page pagination also fetch ahead within a partition: a window of pages is in
//! flight at once, each fetched and parsed on its own task, and the results are taken in
//! order (the window is the reorder buffer), so records reach the sink in API order. A page
//! that comes back short re-plans the rest from where it ended, so a capped page size never
//! leaves a gap. A run that completes publishes its last part, writes its manifest, and in
//! replace mode then removes earlier runs' parts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, Checkpoint, Fingerprint};
use crate::error::{Error, FetchErrorKind, Location, PageError};
use crate::fetch::{FetchFailure, Fetched, Fetcher, Outgoing, Reject};
use crate::incremental::{self, State};
use crate::jsonpath::{Document, Kind, RecordsError};
use crate::output::{fsync_dir, write_atomic, Layout, Manifest, PartitionReport};
use crate::paginate::{Facts, Next, PageRequest, PageResponse, Paginator, StopReason};
use crate::plan::{fill, fill_json, Encoding, Format, Mode, Partition, Plan};
use crate::redact::Redactor;
use crate::sink::ndjson::NdjsonSink;
use crate::sink::parquet::ParquetSink;
use crate::sink::{Frontier, PageBatch, Position, Prepare, Prepared, Sink};

/// Pages the writer may have queued before the fetchers wait.
const WRITER_QUEUE: usize = 16;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print a progress line every few seconds.
    pub progress: bool,
    pub cancel: CancellationToken,
    /// Discard an unfinished run instead of resuming it.
    pub fresh: bool,
}

/// What a completed run wrote.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run: String,
    pub root: PathBuf,
    pub manifest: PathBuf,
    pub parts: Vec<PathBuf>,
    pub records: u64,
    pub pages: u64,
    pub requests: u64,
    pub seconds: f64,
    pub partitions: Vec<PartitionReport>,
}

/// What every partition's harvest shares.
struct Shared {
    plan: Arc<Plan>,
    fetcher: Arc<Fetcher>,
    labels: Vec<String>,
    tx: mpsc::Sender<PageBatch>,
    /// The sink's per-page work, done by the fetching tasks.
    prepare: Option<Arc<dyn Prepare>>,
    progress: Progress,
    /// Where each partition starts: a resumed run's checkpoint frontier, or the beginning.
    start: Vec<Frontier>,
    /// The plan's partitions, with the incremental mark among their values for placeholders.
    partitions: Vec<Partition>,
    /// The incremental mark as a query parameter, per partition, when no placeholder takes it.
    since: Vec<Option<(String, String)>>,
}

/// Where a partition goes on after a page, as a checkpoint keeps it.
#[derive(Serialize)]
struct ResumeOut<'a> {
    pager: &'a Paginator,
    next: Option<&'a PageRequest>,
    done: Option<&'a StopReason>,
}

#[derive(Deserialize)]
struct Resume {
    pager: Paginator,
    next: Option<PageRequest>,
    done: Option<StopReason>,
}

/// The writer thread's checkpoints: at least every `interval`, at a page boundary.
struct Checkpointer {
    layout: Layout,
    saved: Checkpoint,
    interval: Duration,
    last: Instant,
    /// Sealed out of every checkpoint written.
    secrets: Redactor,
}

impl Checkpointer {
    fn save(&mut self, position: Position) -> Result<(), Error> {
        self.saved.position = position;
        self.saved.written_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        checkpoint::save(&self.layout, &self.saved, &self.secrets)?;
        self.last = Instant::now();
        Ok(())
    }
}

/// Harvest every partition of the plan.
pub async fn run(plan: Arc<Plan>, options: RunOptions) -> Result<RunSummary, Error> {
    let root = plan.output_root();
    let layout = Layout::create(root.clone()).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let lock = layout.lock().map_err(|e| Error::io("taking the job lock", e))?;
    let _lock = match lock {
        Ok(lock) => lock,
        Err(holder) => {
            return Err(Error::Locked { name: plan.name.clone(), lock: layout.harvest_dir().join("lock"), holder })
        }
    };
    let fingerprint = Fingerprint::of(&plan);
    if options.fresh {
        discard_unfinished(&layout)?;
    }
    let mut resumed = checkpoint::load(&layout, &plan.job_file, &plan.redactor)?;
    if resumed.as_ref().is_some_and(|saved| layout.manifest(&saved.run).exists()) {
        // That run completed (its manifest is durable) and died before tidying up.
        checkpoint::remove(&layout)?;
        resumed = None;
    }
    if let Some(saved) = &resumed {
        let changes = saved.fingerprint.changes(&fingerprint);
        if !changes.is_empty() {
            return Err(Error::Checkpoint(format!(
                "the job changed since its run {} stopped unfinished ({} differ{}); \
                 `harvest run {} --fresh` discards that run and starts over",
                saved.run,
                changes.join(", "),
                if changes.len() == 1 { "s" } else { "" },
                plan.job_file.display()
            )));
        }
        tidy_for_resume(&layout, saved)?;
    } else {
        // A run that died before its first checkpoint left nothing to go on from.
        discard_unfinished(&layout)?;
        if plan.output.mode == Mode::Replace {
            finish_replacing(&layout)?;
        }
    }
    let (run, started_at) = match &resumed {
        Some(saved) => (saved.run.clone(), saved.started_at.clone()),
        None => (
            layout.new_run_id().map_err(|e| Error::io(format!("reading {}", root.display()), e))?,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    };
    let started = Instant::now();
    let fetcher = Arc::new(Fetcher::new(&plan)?.with_cancel(options.cancel.clone()));
    let labels: Vec<String> = plan.partitions.iter().map(|p| plan.redactor.redact(&p.label()).into_owned()).collect();
    tracing::info!(
        "harvesting job {} (run {run}, {} partition{}) into {}",
        plan.name,
        labels.len(),
        if labels.len() == 1 { "" } else { "s" },
        root.display()
    );

    let output = &plan.output;
    let start = match &resumed {
        Some(saved) => {
            tracing::info!(
                "resuming run {run} from its checkpoint of {}: {}",
                saved.written_at,
                describe(&saved.position, &labels)
            );
            let mut start = saved.position.frontier.clone();
            start.resize(labels.len(), Frontier::default());
            start
        }
        None => vec![Frontier::default(); labels.len()],
    };
    let position = resumed.as_ref().map(|saved| saved.position.clone()).unwrap_or_default();
    // Incremental: what each partition sends as its mark (a resume sends what its run sent).
    let sent: Vec<Option<String>> = match (&plan.incremental, &resumed) {
        (None, _) => vec![None; labels.len()],
        (Some(_), Some(saved)) => {
            let mut sent = saved.sent.clone();
            sent.resize(labels.len(), None);
            sent
        }
        (Some(incremental), None) => {
            let state = State::load(&layout, &plan.redactor)?;
            labels
                .iter()
                .map(|label| incremental::to_send(incremental, state.marks.get(label).map(String::as_str)))
                .collect()
        }
    };
    let (partitions, since) = with_marks(&plan, &sent);
    let sink: Box<dyn Sink> = match output.format {
        Format::Ndjson => Box::new(NdjsonSink::resume(
            layout.clone(),
            &run,
            output.compression,
            output.rows_per_file,
            labels.clone(),
            &position,
        )?),
        Format::Parquet => Box::new(ParquetSink::resume(
            layout.clone(),
            &run,
            output.parquet.clone(),
            output.compression,
            output.rows_per_file,
            labels.clone(),
            &position,
        )),
    };
    let mut checkpointer = Checkpointer {
        layout: layout.clone(),
        saved: Checkpoint {
            version: checkpoint::VERSION,
            job: plan.name.clone(),
            run: run.clone(),
            started_at: started_at.clone(),
            written_at: String::new(),
            fingerprint,
            sent: if plan.incremental.is_some() { sent.clone() } else { Vec::new() },
            position: Position::default(),
        },
        interval: output.checkpoint_interval,
        last: Instant::now(),
        secrets: plan.redactor.clone(),
    };
    // From here on a crash always finds a checkpoint, and so what this run wrote.
    checkpointer.save(position)?;
    let prepare = sink.preparer();
    let (tx, rx) = mpsc::channel::<PageBatch>(WRITER_QUEUE);
    let writer = std::thread::Builder::new()
        .name("harvest-writer".into())
        .spawn(move || write_pages(sink, rx, checkpointer))
        .map_err(|e| Error::io("starting the writer thread", e))?;

    let shared = Arc::new(Shared {
        plan: plan.clone(),
        fetcher: fetcher.clone(),
        labels,
        tx,
        prepare,
        progress: Progress::new(options.progress),
        start,
        partitions,
        since,
    });
    let (reports, failure) = harvest_partitions(&shared, &options.cancel).await;
    drop(shared);
    let (sink, checkpointer, written) = writer.join().map_err(|_| Error::Other("the writer thread panicked".into()))?;

    // A failing writer closes the queue, which the fetching side then reports: its own error
    // is the one that says what happened.
    if let Some(error) = written.err().or(failure) {
        // Keep what was written durable for the resume; publish nothing more.
        let position = settle(sink, checkpointer, false).await?;
        return Err(with_saved(error, &plan, &position, &layout));
    }
    // Every page is durable and checkpointed: a crash from here to the manifest asks nothing
    // again.
    let position = settle(sink, checkpointer, true).await?;

    if let Some(incremental) = &plan.incremental {
        save_marks(&layout, &plan.redactor, incremental, &reports, &position)?;
    }
    let stats = fetcher.stats();
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let pages: u64 = reports.iter().map(|r| r.pages).sum();
    let manifest = Manifest {
        version: 1,
        job: plan.name.clone(),
        run: run.clone(),
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seconds: started.elapsed().as_secs_f64(),
        format: plan.output.format,
        compression: plan.output.compression,
        mode: plan.output.mode,
        records,
        pages,
        parts: position.parts.clone(),
        partitions: reports.clone(),
        http: stats.clone(),
    };
    let manifest_path = layout.manifest(&run);
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    write_atomic(&manifest_path, &json, "manifest-write")
        .map_err(|e| Error::io(format!("writing {}", manifest_path.display()), e))?;
    crate::output::failpoint("after-manifest");
    checkpoint::remove(&layout)?;
    if plan.output.mode == Mode::Replace {
        let removed = layout.remove_other_runs(&run).map_err(|e| Error::io("removing the parts of earlier runs", e))?;
        if removed > 0 {
            tracing::info!("removed {removed} part file(s) of earlier runs (mode = \"replace\")");
        }
    }
    Ok(RunSummary {
        run,
        parts: position.parts.iter().map(|p| root.join(&p.file)).collect(),
        root,
        manifest: manifest_path,
        records,
        pages,
        requests: stats.requests,
        seconds: manifest.seconds,
        partitions: reports,
    })
}

/// Make what the sink was given durable (with `finish`, the open part closed and published
/// too) and checkpoint it, off the async threads.
async fn settle(mut sink: Box<dyn Sink>, mut checkpointer: Checkpointer, finish: bool) -> Result<Position, Error> {
    tokio::task::spawn_blocking(move || {
        let position = if finish { sink.finish()? } else { sink.commit()? };
        checkpointer.save(position.clone())?;
        Ok(position)
    })
    .await
    .map_err(|e| Error::Other(format!("the writer failed: {e}")))?
}

/// Run the partitions side by side, at most `concurrency` at once. The first failure stops
/// the others (they drain what they have in flight); its error is the one reported.
async fn harvest_partitions(shared: &Arc<Shared>, cancel: &CancellationToken) -> (Vec<PartitionReport>, Option<Error>) {
    let plan = &shared.plan;
    let partitions = plan.partitions.len();
    let active = plan.limits.concurrency.min(partitions).max(1);
    // Pages fetched ahead per partition. The requests in flight are bounded by the fetcher's
    // semaphore; the window is twice a partition's share of it, so that a page waiting for an
    // earlier one to arrive does not leave its slot idle (a queued task takes the freed
    // permit at once), and the pages held for reordering stay about 2 x `concurrency`. A
    // share of one stays strictly one page at a time: no request past the end that a
    // sequential harvest would not make.
    let share = (plan.limits.concurrency / active).max(1);
    let window = if share == 1 { 1 } else { 2 * share };
    let stop = cancel.child_token();
    let mut tasks = futures::stream::iter(0..partitions)
        .map(|index| {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move { Harvest { shared: &shared, index, window }.run(&stop).await })
        })
        .buffer_unordered(active);
    let mut reports: Vec<Option<PartitionReport>> = vec![None; partitions];
    let mut failure: Option<Error> = None;
    while let Some(joined) = tasks.next().await {
        let result = joined.unwrap_or_else(|e| Err(Error::Other(format!("a partition's task failed: {e}"))));
        match result {
            Ok((index, report)) => reports[index] = Some(report),
            Err(error) => {
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
    }
    (reports.into_iter().flatten().collect(), failure)
}

/// The writer thread: pages in, durable bytes out, and a checkpoint at least every interval.
fn write_pages(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<PageBatch>,
    mut checkpointer: Checkpointer,
) -> (Box<dyn Sink>, Checkpointer, Result<(), Error>) {
    while let Some(batch) = rx.blocking_recv() {
        let mut written = sink.write(batch);
        if written.is_ok() && checkpointer.last.elapsed() >= checkpointer.interval {
            written = sink.commit().and_then(|position| checkpointer.save(position));
        }
        if let Err(e) = written {
            return (sink, checkpointer, Err(e));
        }
    }
    (sink, checkpointer, Ok(()))
}

/// The partitions with the incremental mark each sends: among their values, for a `{param}`
/// placeholder, or as a query parameter when the job has no such placeholder.
fn with_marks(plan: &Plan, sent: &[Option<String>]) -> (Vec<Partition>, Vec<Option<(String, String)>>) {
    let mut partitions = plan.partitions.clone();
    let Some(incremental) = &plan.incremental else {
        return (partitions, vec![None; sent.len()]);
    };
    let placeholder = format!("{{{}}}", incremental.param);
    let request = &plan.request;
    let placed = request.url.contains(&placeholder)
        || request.params.iter().any(|(_, v)| v.contains(&placeholder))
        || request.body.as_ref().is_some_and(|b| b.to_string().contains(&placeholder));
    let since = partitions
        .iter_mut()
        .zip(sent)
        .map(|(partition, sent)| {
            let value = sent.clone()?;
            partition.values.push((incremental.param.clone(), value.clone()));
            (!placed).then(|| (incremental.param.clone(), value))
        })
        .collect();
    (partitions, since)
}

/// Raise `state.json`'s marks to what the run wrote, for the partitions that ended by the
/// API's own end condition.
fn save_marks(
    layout: &Layout,
    secrets: &Redactor,
    incremental: &crate::plan::IncrementalPlan,
    reports: &[PartitionReport],
    position: &Position,
) -> Result<(), Error> {
    let mut state = State::load(layout, secrets)?;
    for (report, frontier) in reports.iter().zip(&position.frontier) {
        let cut_short = matches!(report.stop, StopReason::MaxPages { .. } | StopReason::MaxRecords { .. });
        match (&frontier.mark, cut_short) {
            (Some(mark), false) => state.raise(&report.partition, mark),
            (Some(_), true) => tracing::warn!(
                "partition{} was cut short ({}): its mark for {} stays where it was",
                partition_suffix(&report.partition),
                report.stop,
                incremental.field.as_str()
            ),
            (None, _) => {}
        }
    }
    state.save(layout, secrets)
}

/// Each partition's place in a checkpoint, for the log.
fn describe(position: &Position, labels: &[String]) -> String {
    let places: Vec<String> = labels
        .iter()
        .zip(&position.frontier)
        .map(|(label, f)| {
            let name = if label.is_empty() { String::new() } else { format!("partition {label} ") };
            format!("{name}from page {} ({} records written)", f.pages + 1, f.records)
        })
        .collect();
    match places.is_empty() {
        true => "from the start".into(),
        false => places.join(", "),
    }
}

/// Before a resume: whatever the crashed process wrote past its checkpoint goes. The open part
/// is cut back to its checkpointed length (moved back first if it was already published);
/// other temporary parts, and parts of the run that the checkpoint does not list, are removed.
fn tidy_for_resume(layout: &Layout, saved: &Checkpoint) -> Result<(), Error> {
    let io = |what: &str, e| Error::io(format!("{what} before resuming"), e);
    let open = saved.position.open.as_ref();
    if let Some(open) = open {
        let (temp, published) = (layout.open_dir().join(&open.file), layout.root.join(&open.file));
        if !temp.exists() && published.exists() {
            std::fs::rename(&published, &temp).map_err(|e| io("taking back the open part", e))?;
        }
        let file = std::fs::OpenOptions::new().write(true).open(&temp).map_err(|e| io("opening the open part", e))?;
        file.set_len(open.len).map_err(|e| io("truncating the open part", e))?;
        file.sync_all().map_err(|e| io("syncing the open part", e))?;
    }
    let prefix = format!("part-{}-", saved.run);
    let listed =
        |name: &str| saved.position.parts.iter().any(|p| p.file == name) || open.is_some_and(|o| o.file == name);
    for (dir, keep_listed) in [(layout.open_dir(), false), (layout.root.clone(), true)] {
        for entry in std::fs::read_dir(&dir).map_err(|e| io("listing the output", e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stray = match keep_listed {
                // In the dataset folder: this run's parts the checkpoint does not list.
                true => name.starts_with(&prefix) && !listed(&name),
                // Temporary parts: all but the open one.
                false => open.is_none_or(|o| o.file != name),
            };
            if stray && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                tracing::debug!("removing {} (written after the checkpoint)", entry.path().display());
                std::fs::remove_file(entry.path()).map_err(|e| io("removing a stray part", e))?;
            }
        }
        fsync_dir(&dir).map_err(|e| io("syncing the output", e))?;
    }
    Ok(())
}

/// Remove the checkpoint and every part of a run that has no manifest: an unfinished run
/// (`--fresh`), or one that died before its first checkpoint.
fn discard_unfinished(layout: &Layout) -> Result<(), Error> {
    let io = |e| Error::io("discarding the unfinished run", e);
    checkpoint::remove(layout)?;
    for dir in [layout.open_dir(), layout.root.clone()] {
        for entry in std::fs::read_dir(&dir).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(run) = name.strip_prefix("part-").and_then(|rest| rest.split('-').next()) else { continue };
            if !layout.manifest(run).exists() && entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                tracing::info!("removing {} (its run never completed)", entry.path().display());
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        fsync_dir(&dir).map_err(io)?;
    }
    Ok(())
}

/// Replace mode: a run that completed but died before removing the parts it replaces; its
/// manifest is durable, so the removal is finished now.
fn finish_replacing(layout: &Layout) -> Result<(), Error> {
    let newest = std::fs::read_dir(layout.runs_dir())
        .map_err(|e| Error::io("listing the run manifests", e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .max();
    if let Some(newest) = newest {
        let removed = layout.remove_other_runs(&newest).map_err(|e| Error::io("removing replaced parts", e))?;
        if removed > 0 {
            tracing::info!("removed {removed} part file(s) that run {newest} replaced");
        }
    }
    Ok(())
}

fn with_saved(error: Error, plan: &Plan, position: &Position, layout: &Layout) -> Error {
    let records: u64 = position.frontier.iter().map(|f| f.records).sum();
    let saved = format!(
        "{records} record(s) written so far are kept under {} with a checkpoint; `harvest run {}` resumes from there",
        layout.root.display(),
        plan.job_file.display()
    );
    match error {
        Error::Fetch { source, location, saved: hint } => {
            Error::Fetch { source, location, saved: if hint.is_empty() { saved } else { format!("{hint}; {saved}") } }
        }
        Error::Interrupted { .. } => Error::Interrupted { saved },
        other => other,
    }
}

/// One partition's harvest.
struct Harvest<'a> {
    shared: &'a Arc<Shared>,
    index: usize,
    /// Pages fetched ahead (offset and page pagination).
    window: usize,
}

/// A partition's progress, in order.
#[derive(Debug, Default)]
struct Tally {
    pages: u64,
    records: u64,
}

impl Harvest<'_> {
    fn plan(&self) -> &Plan {
        &self.shared.plan
    }

    fn label(&self) -> &str {
        &self.shared.labels[self.index]
    }

    async fn run(&self, cancel: &CancellationToken) -> Result<(usize, PartitionReport), Error> {
        let style = &self.plan().pagination.style;
        let start = &self.shared.start[self.index];
        let (mut pager, mut request, mut tally) = match &start.resume {
            None => {
                let pager = Paginator::new(style);
                let request = pager.first(style);
                (pager, request, Tally::default())
            }
            Some(saved) => {
                let resume: Resume = serde_json::from_value(saved.clone()).map_err(|e| {
                    Error::Checkpoint(format!(
                        "the checkpoint's state of partition{} cannot be read ({e}); run with --fresh to start over",
                        partition_suffix(self.label())
                    ))
                })?;
                let tally = Tally { pages: start.pages, records: start.records };
                if let Some(stop) = resume.done {
                    return Ok((self.index, self.report(&tally, stop)));
                }
                let mut pager = resume.pager;
                pager.restore_seen(&start.seen);
                let request = resume.next.unwrap_or_else(|| pager.first(style));
                (pager, request, tally)
            }
        };
        let stop = loop {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted { saved: String::new() });
            }
            // Once the strategy knows which pages are independent, fetch ahead.
            if tally.pages > 0 && self.window > 1 && pager.independent(style).is_some() {
                break self.run_ahead(&mut pager, &mut tally, cancel).await?;
            }
            let out = match fetch_page(self.shared, self.index, &request, tally.pages, Some(&mut pager)).await {
                Ok(out) => out,
                Err(failure) => match failure.end_status() {
                    Some(status) if pager.end_possible(style) => break StopReason::EndConfirmed { status },
                    _ => return Err(failure.error),
                },
            };
            let next = out.next.clone().expect("a sequential fetch says what comes next");
            if let Some(stop) = self.accept(*out, &next, &mut tally, &mut pager).await? {
                break stop;
            }
            if let Next::Request(r) = next {
                request = r;
            }
        };
        Ok((self.index, self.report(&tally, stop)))
    }

    fn report(&self, tally: &Tally, stop: StopReason) -> PartitionReport {
        tracing::info!(
            "partition{} done: {} records in {} pages; {stop}",
            partition_suffix(self.label()),
            tally.records,
            tally.pages
        );
        PartitionReport { partition: self.label().to_string(), records: tally.records, pages: tally.pages, stop }
    }

    /// Offset and page pagination: keep `window` pages in flight, take them in order.
    async fn run_ahead(
        &self,
        pager: &mut Paginator,
        tally: &mut Tally,
        cancel: &CancellationToken,
    ) -> Result<StopReason, Error> {
        let style = &self.plan().pagination.style;
        let mut range = pager.independent(style).expect("checked by the caller");
        let mut next_position = range.start;
        let mut inflight: VecDeque<(u64, PageTask)> = VecDeque::new();
        let abort = |inflight: &mut VecDeque<(u64, JoinHandle<_>)>| {
            for (_, task) in inflight.drain(..) {
                task.abort();
            }
        };
        let max_pages = self.plan().pagination.max_pages.unwrap_or(u64::MAX);
        loop {
            // Interrupted: ask nothing more, but take the pages already in flight, in order.
            if cancel.is_cancelled() && inflight.is_empty() {
                return Err(Error::Interrupted { saved: String::new() });
            }
            while !cancel.is_cancelled()
                && inflight.len() < self.window
                && range.end.is_none_or(|end| next_position < end)
                && tally.pages + (inflight.len() as u64) < max_pages
            {
                let request = Paginator::request_at(style, next_position).expect("an independent strategy");
                let (shared, index, page) = (self.shared.clone(), self.index, tally.pages + inflight.len() as u64);
                let task = tokio::spawn(async move { fetch_page(&shared, index, &request, page, None).await });
                inflight.push_back((next_position, task));
                next_position += range.step;
            }
            let Some((_, task)) = inflight.pop_front() else {
                // Nothing left to ask: the announced end, or max_pages.
                return Ok(match range.end {
                    Some(end) if next_position >= end => StopReason::TotalReached { total: end },
                    _ => StopReason::MaxPages { pages: tally.pages },
                });
            };
            let out = match task.await.map_err(|e| Error::Other(format!("a page task failed: {e}")))? {
                Ok(out) => out,
                Err(failure) => {
                    abort(&mut inflight);
                    return match failure.end_status() {
                        Some(status) if pager.end_possible(style) => Ok(StopReason::EndConfirmed { status }),
                        _ => Err(failure.error),
                    };
                }
            };
            let facts = out.facts.expect("a page fetched ahead carries its facts");
            let next = pager.advance(style, &facts);
            if let Some(stop) = self.accept(*out, &next, tally, pager).await? {
                abort(&mut inflight);
                return Ok(stop);
            }
            // A short page moves the rest: re-plan from where it ended.
            let now = pager.independent(style).expect("an independent strategy");
            let front = inflight.front().map_or(next_position, |(position, _)| *position);
            if now.step != range.step || front != now.start {
                abort(&mut inflight);
                next_position = now.start;
            }
            range = now;
        }
    }

    /// Take a page in order: send its records to the sink, with where the partition goes on
    /// from (`pager` has read the page), count it, and say whether the partition is done.
    async fn accept(
        &self,
        out: PageOut,
        next: &Next,
        tally: &mut Tally,
        pager: &mut Paginator,
    ) -> Result<Option<StopReason>, Error> {
        let pagination = &self.plan().pagination;
        let mut lines = out.lines;
        let mut count = out.received;
        let mut prepared = out.prepared;
        let mut mark = out.mark;
        if let Some(max) = pagination.max_records {
            let keep = out.received.min(max.saturating_sub(tally.records));
            if keep < count {
                lines.truncate(crate::sink::nth_line_end(&lines, keep));
                count = keep;
                // They were made of the whole page.
                prepared = None;
                mark = self.plan().incremental.as_ref().and_then(|i| incremental::page_mark(&i.field, &lines));
            }
        }
        let (records, pages) = (tally.records + count, tally.pages + 1);
        let stop = match next {
            Next::Done(reason) => Some(reason.clone()),
            Next::Request(_) if pagination.max_records.is_some_and(|max| records >= max) => {
                Some(StopReason::MaxRecords { records })
            }
            Next::Request(_) if pagination.max_pages.is_some_and(|max| pages >= max) => {
                Some(StopReason::MaxPages { pages })
            }
            Next::Request(_) => None,
        };
        let request = match next {
            Next::Request(r) => Some(r),
            Next::Done(_) => None,
        };
        let resume = ResumeOut { pager, next: request, done: stop.as_ref() };
        let resume = serde_json::to_value(&resume).expect("pagination state serializes");
        let batch = PageBatch {
            partition: self.index,
            page: tally.pages,
            lines,
            count,
            prepared,
            resume: Some(resume),
            seen: pager.take_seen(),
            mark,
        };
        if self.shared.tx.send(batch).await.is_err() {
            return Err(Error::Other("the writer stopped".into()));
        }
        tally.records = records;
        tally.pages = pages;
        self.shared.progress.tick(count);
        Ok(stop)
    }
}

/// A page fetched and cut into records.
struct PageOut {
    /// Records, one compact JSON line each.
    lines: Vec<u8>,
    received: u64,
    /// The sink's work on the lines, done here rather than in the writer.
    prepared: Option<Prepared>,
    /// What the strategy made of the page, when it was fetched in sequence.
    next: Option<Next>,
    /// What offset and page strategies read, when it was fetched ahead.
    facts: Option<Facts>,
    /// The URL that answered (not redacted: show it only through the redactor).
    url: url::Url,
    /// Incremental syncs: the greatest mark on the page.
    mark: Option<String>,
}

/// A page being fetched ahead, on its own task.
type PageTask = JoinHandle<Result<Box<PageOut>, PageFailure>>;

/// A page that could not be had, and its status if the server answered.
struct PageFailure {
    status: Option<u16>,
    error: Error,
}

impl PageFailure {
    /// The status of a 404, 400 or 422: past the end, if the end was possible.
    fn end_status(&self) -> Option<u16> {
        self.status.filter(|s| matches!(s, 400 | 404 | 422))
    }
}

/// Fetch one page and cut it into records. With `pager`, the strategy digests the response
/// (sequential strategies); without, only the facts offset and page strategies need are kept.
async fn fetch_page(
    shared: &Shared,
    index: usize,
    request: &PageRequest,
    page: u64,
    pager: Option<&mut Paginator>,
) -> Result<Box<PageOut>, PageFailure> {
    let plan = &shared.plan;
    let fetcher = &shared.fetcher;
    let label = &shared.labels[index];
    let style = &plan.pagination.style;
    let location = Location { partition: label.clone(), page };
    let outgoing = outgoing(plan, &shared.partitions[index], request, shared.since[index].as_ref())
        .map_err(|error| PageFailure { status: None, error })?;
    let mut pager = pager;
    let judge = |fetched: &Fetched| -> Result<Box<PageOut>, Reject<PageFailure>> {
        let page_error = |source: PageError| {
            Reject::Fail(PageFailure {
                status: Some(fetched.status),
                error: Error::Page {
                    method: outgoing.method.as_str().to_string(),
                    url: fetcher.redactor().url(&fetched.url),
                    source,
                    location: location.clone(),
                },
            })
        };
        let doc = Document::parse(&fetched.body)
            .map_err(|e| Reject::NotJson { reason: e.message, cut_short: e.cut_short })?;
        check_errors(plan, &doc, fetched.status).map_err(page_error)?;
        let mut lines = Vec::with_capacity(fetched.body.len());
        let received = plan.records.path.write_records(&doc, &mut lines).map_err(|e| {
            page_error(match e {
                RecordsError::NotAnArray { at, found } => {
                    PageError::NotAnArray { path: plan.records.path.to_string(), at, found }
                }
                RecordsError::Invalid(message) => PageError::Pagination(message),
            })
        })?;
        // An incremental sync with nothing new is no surprise.
        if page == 0 && received == 0 && plan.incremental.is_none() {
            tracing::warn!(
                "the first page{} has no records at records.path {} ({})",
                partition_suffix(label),
                plan.records.path,
                fetcher.redactor().url(&fetched.url)
            );
        }
        let response = PageResponse {
            status: fetched.status,
            headers: &fetched.headers,
            url: &fetched.url,
            doc: &doc,
            records: received,
            secrets: &plan.redactor,
        };
        let (next, facts) = match pager.as_deref_mut() {
            Some(pager) => (Some(pager.next(style, &response).map_err(page_error)?), None),
            None => (None, Paginator::facts(style, &response).map_err(page_error)?),
        };
        Ok(Box::new(PageOut { lines, received, prepared: None, next, facts, url: fetched.url.clone(), mark: None }))
    };
    let mut out = fetcher.fetch_with(&outgoing, judge).await.map_err(|failure| match failure {
        FetchFailure::Rejected(failure) => failure,
        FetchFailure::Fetch(e) => {
            let status = match e.kind {
                FetchErrorKind::Status { status, .. } => Some(status),
                _ => None,
            };
            let hint = size_hint(plan, &e.kind);
            PageFailure { status, error: Error::Fetch { source: e, location: location.clone(), saved: hint } }
        }
        FetchFailure::Interrupted => PageFailure { status: None, error: Error::Interrupted { saved: String::new() } },
    })?;
    // After the request's slot is given back: this is the writer's work, done side by side.
    if let Some(prepare) = &shared.prepare {
        out.prepared = prepare.prepare(&out.lines, out.received);
    }
    if let Some(incremental) = &plan.incremental {
        out.mark = incremental::page_mark(&incremental.field, &out.lines);
    }
    Ok(out)
}

/// The job's request for one partition, with the strategy's parameters applied.
/// `since`: the incremental mark as a query parameter, when no placeholder takes it.
fn outgoing(
    plan: &Plan,
    partition: &Partition,
    request: &PageRequest,
    since: Option<&(String, String)>,
) -> Result<Outgoing, Error> {
    let url = match &request.url {
        Some(url) => url.clone(),
        None => {
            let mut url = plan.url_for(partition).map_err(Error::Other)?;
            let params: Vec<(&str, String)> = plan
                .request
                .params
                .iter()
                .filter(|(k, _)| !request.query.iter().any(|(name, _)| name == k))
                .map(|(k, v)| (k.as_str(), fill(v, partition, Encoding::Raw)))
                .chain(since.map(|(k, v)| (k.as_str(), v.clone())))
                .chain(request.query.iter().map(|(k, v)| (k.as_str(), v.clone())))
                .collect();
            if !params.is_empty() {
                url.query_pairs_mut().extend_pairs(params);
            }
            url
        }
    };
    let mut headers: Vec<(String, String)> = plan
        .request
        .headers
        .iter()
        .filter(|(k, _)| !request.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), fill(v, partition, Encoding::Raw)))
        .collect();
    headers.extend(request.headers.iter().cloned());
    let mut body = plan.request.body.as_ref().map(|b| fill_json(b, partition));
    if !request.body.is_empty() {
        let body = body.get_or_insert_with(|| Value::Object(Default::default()));
        for (path, value) in &request.body {
            set_dotted(body, path, value.clone());
        }
    }
    Ok(Outgoing { method: plan.request.method, url, headers, body })
}

/// A non-empty array at `records.errors` fails the page, whatever the status.
fn check_errors(plan: &Plan, doc: &Document, status: u16) -> Result<(), PageError> {
    let Some(path) = &plan.records.errors else { return Ok(()) };
    let Some(node) = path.first(doc).map_err(PageError::Pagination)? else { return Ok(()) };
    if node.kind() != Kind::Array {
        return Ok(());
    }
    let Value::Array(errors) = node.to_value() else { return Ok(()) };
    if errors.is_empty() {
        return Ok(());
    }
    let messages: Vec<String> = errors
        .iter()
        .take(5)
        .map(|e| match e.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => e.to_string(),
        })
        .collect();
    let mut messages = plan.redactor.redact(&messages.join("; ")).into_owned();
    if errors.len() > 5 {
        messages.push_str(&format!(" (and {} more)", errors.len() - 5));
    }
    Err(PageError::ApiErrors { path: path.to_string(), status, messages })
}

/// A 400 or 422 on an ordinary page of a sized strategy is most often a page size above the
/// server's maximum: say which parameter asked for how much.
fn size_hint(plan: &Plan, kind: &FetchErrorKind) -> String {
    let FetchErrorKind::Status { status: 400 | 422, .. } = kind else { return String::new() };
    let Some((param, size)) = Paginator::size_param(&plan.pagination.style) else { return String::new() };
    format!("if the server limits page sizes, lower pagination.page_size: this request asked {param}={size}")
}

/// The first page of one partition, for `harvest check --probe`.
#[derive(Debug)]
pub struct Probe {
    pub partition: String,
    pub url: String,
    pub records: u64,
    pub sample: Option<String>,
    pub next: String,
}

/// Fetch the first page of every partition and say what came back.
pub async fn probe(plan: &Plan) -> Result<Vec<Probe>, Error> {
    let (tx, _rx) = mpsc::channel(1);
    let shared = Shared {
        plan: Arc::new(plan.clone()),
        fetcher: Arc::new(Fetcher::new(plan)?),
        labels: plan.partitions.iter().map(|p| plan.redactor.redact(&p.label()).into_owned()).collect(),
        tx,
        prepare: None,
        progress: Progress::new(false),
        start: vec![Frontier::default(); plan.partitions.len()],
        partitions: plan.partitions.clone(),
        since: vec![None; plan.partitions.len()],
    };
    let mut probes = Vec::new();
    for (index, label) in shared.labels.iter().enumerate() {
        let style = &plan.pagination.style;
        let mut pager = Paginator::new(style);
        let request = pager.first(style);
        let out = fetch_page(&shared, index, &request, 0, Some(&mut pager)).await.map_err(|f| f.error)?;
        probes.push(Probe {
            partition: label.clone(),
            url: plan.redactor.url(&out.url),
            records: out.received,
            sample: out
                .lines
                .split(|b| *b == b'\n')
                .next()
                .filter(|l| !l.is_empty())
                .map(|l| String::from_utf8_lossy(l).into_owned()),
            next: match out.next {
                Some(Next::Request(r)) => describe_request(plan, &r),
                Some(Next::Done(reason)) => format!("done: {reason}"),
                None => String::new(),
            },
        });
    }
    Ok(probes)
}

/// The next request of a partition in words, secrets masked.
pub(crate) fn describe_request(plan: &Plan, request: &PageRequest) -> String {
    let r = &plan.redactor;
    if let Some(url) = &request.url {
        return format!("next page: {}", r.url(url));
    }
    let mut parts: Vec<String> = request.query.iter().map(|(k, v)| format!("{k}={}", r.redact(v))).collect();
    parts.extend(request.body.iter().map(|(k, v)| format!("body {k}={}", r.redact(&v.to_string()))));
    parts.extend(request.headers.iter().map(|(k, v)| format!("header {k}: {}", r.header(k, v))));
    format!("next page: {}", parts.join(", "))
}

/// Set `a.b.c` in a JSON object, creating objects on the way.
fn set_dotted(target: &mut Value, path: &str, value: Value) {
    let mut node = target;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("made an object above");
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return;
        }
        node = map.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
}

fn partition_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" of partition {label}")
    }
}

/// Plain progress lines until a later version draws bars.
struct Progress {
    enabled: bool,
    records: AtomicU64,
    pages: AtomicU64,
    last: Mutex<Instant>,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress { enabled, records: AtomicU64::new(0), pages: AtomicU64::new(0), last: Mutex::new(Instant::now()) }
    }

    fn tick(&self, records: u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_create_objects() {
        let mut body = serde_json::json!({"query": "{ x }", "variables": {"first": 10}});
        set_dotted(&mut body, "variables.after", Value::from("c1"));
        set_dotted(&mut body, "page.number", Value::from(2));
        assert_eq!(
            body,
            serde_json::json!({"query": "{ x }", "variables": {"first": 10, "after": "c1"}, "page": {"number": 2}})
        );
    }
}
