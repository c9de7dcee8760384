//! A run's lifecycle: take the job's lock; resume the unfinished run from its checkpoint
//! (cutting away what a crash wrote past it) or start fresh; open the sink on its writer
//! thread, which checkpoints at least every interval once the data is durable; run the
//! [`crate::harvest`]; then, on completion, a last checkpoint, the incremental marks, the
//! manifest, and in replace mode the removal of earlier runs' parts. A run that fails or is
//! interrupted keeps what it wrote, with a checkpoint the next run goes on from.

mod start;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Position;
use crate::checkpoint::{self, Checkpoint, Fingerprint};
use crate::error::{Error, Kept};
use crate::fetch::{FetchStats, Fetcher};
use crate::harvest::Deal;
use crate::harvest::{harvest_partitions, Shared};
use crate::incremental::{Marks, Sent};
use crate::manifest::{self, Manifest};
use crate::output::{HeldBy, Layout, Lock};
use crate::partition::PartitionReport;
use crate::plan::{Format, Mode, Plan};
use crate::progress::{Before, Display, Progress};
use crate::redact::Redactor;
use crate::report::{Facts, Outcome, Report};
use crate::sink::{Item, Sink};

/// In object storage, how far a resumed run's part numbers jump past the checkpoint's.
const RESUME_GAP: u32 = 1000;

/// Pages the writer may have queued before the fetchers wait.
const WRITER_QUEUE: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// How progress is shown while the run goes on.
    pub progress: Display,
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
    /// A shard whose share of the run was already complete: nothing was done.
    pub already_complete: bool,
}

/// What a run did, in the line `harvest run` prints.
impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let manifest = self.manifest.display();
        if self.already_complete {
            let run = &self.run;
            return write!(
                f,
                "nothing to do: this shard of run {run} is complete ({} records); manifest: {manifest}",
                self.records
            );
        }
        let parts = self.parts.len();
        write!(
            f,
            "harvested {} records ({} pages, {} requests) in {:.1}s into {} ({parts} part file{}); manifest: {manifest}",
            self.records,
            self.pages,
            self.requests,
            self.seconds,
            self.root.display(),
            if parts == 1 { "" } else { "s" },
        )
    }
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
    run_reported(plan, options).await.0
}

/// Harvest every partition of the plan, and report on the run whether it completed or not
/// (no report when it never started: a lock held by another run, a checkpoint refused); the
/// `[notify]` webhook hears of it before this returns.
pub async fn run_reported(plan: Arc<Plan>, options: RunOptions) -> (Result<RunSummary, Error>, Option<Report>) {
    let mut report = None;
    let result = execute(plan.clone(), options, &mut report).await;
    if let (Some(notify), Some(report)) = (&plan.notify, &report) {
        crate::notify::send(notify, report, &plan.redactor).await;
    }
    (result, report)
}

async fn execute(plan: Arc<Plan>, options: RunOptions, report: &mut Option<Report>) -> Result<RunSummary, Error> {
    let layout = Layout::for_plan(&plan)?;
    let result = execute_in(plan, options, report, &layout).await;
    if let Err(Error::LeaseLost(_)) = &result {
        layout.discard_unsaved();
    }
    if !layout.store.is_local() {
        // The staging folder of this process's parts: each was uploaded or is not wanted.
        let _ = std::fs::remove_dir_all(&layout.root);
    }
    result
}

async fn execute_in(
    plan: Arc<Plan>,
    mut options: RunOptions,
    report: &mut Option<Report>,
    layout: &Layout,
) -> Result<RunSummary, Error> {
    let (_lock, lease_lost) = hold(&plan, layout, &mut options)?;
    if plan.output.format == Format::Delta {
        // A run that died between its manifest and its commit is committed first (or, with
        // --fresh, discarded); a table harvest cannot write to is refused before any request.
        if options.fresh {
            crate::table::discard_uncommitted(&plan, layout).await?;
        }
        crate::table::commit(&plan, layout).await?;
        crate::table::check_writable(&plan, layout).await?;
    }
    // The shards of a run share its name, given by the first of them to start.
    let claimed = match plan.shard.as_ref().and_then(|s| Some((s.run_id.as_deref()?, s.shard.count))) {
        Some((id, count)) => Some(crate::output::claim_run(layout, id, count)?),
        None => None,
    };
    if let Some(run) = claimed.as_deref() {
        if layout.exists(&layout.manifest(run)).map_err(|e| Error::io("reading the manifests", e))? {
            return already_complete(&plan, layout, run).await;
        }
    }
    let begun = begin(&plan, layout, options.fresh, claimed)?;
    let deal = Deal::of(&plan);
    let partitions = match deal {
        Some(deal) => plan.partitions.iter().filter(|p| deal.takes(&p.key)).count() as u64,
        None => plan.partitions.count(),
    };
    if let Some(deal) = deal {
        tracing::info!("{}", deal.describe(&plan));
    }
    let position = &begun.checkpoint.position;
    let before = Before { records: position.records(), pages: position.pages(), ended: position.done.count() };
    let progress = Progress::new(options.progress, &plan.name, partitions, before);
    let fetcher = Arc::new(Fetcher::new(&plan)?.with_cancel(options.cancel.clone()).with_progress(progress.clone()));
    let (run, root) = (begun.checkpoint.run.clone(), PathBuf::from(layout.display("")));
    let s = if partitions == 1 { "" } else { "s" };
    tracing::info!("harvesting job {} (run {run}, {partitions} partition{s}) into {}", plan.name, root.display());
    if begun.resumed {
        tracing::info!("resuming run {run} from its checkpoint of {}: {}", begun.written_at, describe(position));
    }
    let ran = Ran {
        plan: &plan,
        run: &run,
        started_at: &begun.checkpoint.started_at,
        started: Instant::now(),
        partitions,
        root,
    };
    let (sink, checkpointer, failure) =
        harvest(&plan, layout, begun.checkpoint.clone(), &fetcher, &progress, deal, &options.cancel).await?;
    let stats = fetcher.stats();
    match failure {
        Some(error) => {
            // Keep what was written durable for the resume; publish nothing more.
            let position = settle(sink, checkpointer, false).await?;
            let lost = lease_lost.as_ref().is_some_and(|lost| lost.is_cancelled());
            Err(ran.failed(error, lost, layout, &position, &stats, report))
        }
        None => {
            // Every page is durable and checkpointed: a crash from here to the manifest asks
            // nothing again.
            let position = settle(sink, checkpointer, true).await?;
            ran.completed(layout, &position, &stats, report).await
        }
    }
}

/// A run that has harvested, for its report and its manifest.
struct Ran<'a> {
    plan: &'a Plan,
    run: &'a str,
    started_at: &'a str,
    started: Instant,
    partitions: u64,
    /// The output folder, as the user names it.
    root: PathBuf,
}

impl Ran<'_> {
    fn facts<'a>(
        &'a self,
        outcome: Outcome,
        error: Option<&Error>,
        http: &'a FetchStats,
        manifest: Option<PathBuf>,
    ) -> Facts<'a> {
        let plan = self.plan;
        Facts {
            job: &plan.name,
            run: self.run,
            outcome,
            error: error.map(|e| plan.redactor.redact(&e.to_string()).into_owned()),
            started_at: self.started_at,
            seconds: self.started.elapsed().as_secs_f64(),
            partitions: self.partitions,
            http,
            output: self.root.clone(),
            manifest,
            asked_as: plan.partitions.listed_placeholders().first().cloned().unwrap_or_else(|| "value".into()),
        }
    }

    /// The error a run that failed or was interrupted ends with, saying what it kept (or
    /// that its lease was lost, when that is why it stopped), and its report.
    fn failed(
        &self,
        error: Error,
        lease_lost: bool,
        layout: &Layout,
        position: &Position,
        http: &FetchStats,
        report: &mut Option<Report>,
    ) -> Error {
        let kept =
            Kept { records: position.records(), folder: layout.display(""), job_file: self.plan.job_file.clone() };
        let error = match lease_lost {
            true => crate::output::lease_lost(layout, "the run was stopped"),
            false => error.keeping(kept),
        };
        let outcome = match error {
            Error::Interrupted { .. } => Outcome::Interrupted,
            _ => Outcome::Failed,
        };
        *report = Some(Report::new(self.facts(outcome, Some(&error), http, None), position));
        error
    }

    /// A run every page of which is durable and checkpointed: its report, its manifest (the
    /// run is complete once that is written) and its summary.
    async fn completed(
        &self,
        layout: &Layout,
        position: &Position,
        http: &FetchStats,
        report: &mut Option<Report>,
    ) -> Result<RunSummary, Error> {
        let (plan, run, root) = (self.plan, self.run, &self.root);
        let manifest_at = PathBuf::from(layout.display(&layout.manifest(run)));
        let report = report.insert(Report::new(self.facts(Outcome::Complete, None, http, Some(manifest_at)), position));
        if let Some(missing) = &report.missing {
            // Not a failure: the server has nothing for them.
            tracing::warn!("{}", missing.words());
        }
        let manifest = Manifest::of(plan, run, report, position, http);
        let manifest_path = complete(plan, layout, &manifest, position).await?;
        Ok(RunSummary {
            run: run.to_string(),
            parts: position.parts.iter().map(|p| root.join(&p.file)).collect(),
            root: root.clone(),
            manifest: manifest_path,
            records: manifest.records,
            pages: manifest.pages,
            requests: manifest.http.requests,
            seconds: manifest.seconds,
            partitions: manifest.partitions,
            already_complete: false,
        })
    }
}

/// Take the job's lock (its lease, in object storage). A worker whose lease is taken over
/// stops as an interrupted one does, and says why: the token cancelled then.
fn hold(plan: &Plan, layout: &Layout, options: &mut RunOptions) -> Result<(Lock, Option<CancellationToken>), Error> {
    let lock = match layout.lock(plan.output.store.lease_ttl)? {
        Ok(lock) => lock,
        Err(HeldBy(holder)) => {
            return Err(Error::Locked { name: plan.name.clone(), lock: layout.display(&layout.lock_rel()), holder })
        }
    };
    let lease_lost = lock.lost();
    if let Some(lost) = lease_lost.clone() {
        let cancel = options.cancel.child_token();
        options.cancel = cancel.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            cancel.cancel();
        });
    }
    Ok((lock, lease_lost))
}

/// Where a run begins: its first checkpoint (the unfinished run's, or a new run's).
struct Begun {
    checkpoint: Checkpoint,
    /// Whether it resumes an unfinished run, and when that run's checkpoint was written.
    resumed: bool,
    written_at: String,
}

/// Resume the unfinished run from its checkpoint, or name a new run (`claimed`, for a shard
/// of a sharded run).
fn begin(plan: &Plan, layout: &Layout, fresh: bool, claimed: Option<String>) -> Result<Begun, Error> {
    // Read the files and outputs the partitions' values come from (their fingerprints too).
    plan.partitions.open()?;
    let fingerprint = Fingerprint::of(plan);
    let resumed = start::resume_or_start(plan, layout, &fingerprint, fresh, claimed.as_deref())?;
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (run, started_at) = match (&resumed, claimed) {
        (Some(saved), _) => (saved.run.clone(), saved.started_at.clone()),
        (None, Some(run)) => (run, now()),
        (None, None) => {
            let run = layout.new_run_id().map_err(|e| Error::io(format!("reading {}", layout.display("")), e))?;
            (run, now())
        }
    };
    let mut position = resumed.as_ref().map(|saved| saved.position.clone()).unwrap_or_default();
    if resumed.is_some() && !layout.store.is_local() {
        // The worker that wrote the checkpoint may be alive (stopped, cut off) and upload a part
        // it had under way; this worker's parts are numbered far past any such one.
        position.next_seq += RESUME_GAP;
    }
    let sent = marks_to_send(plan, layout, resumed.as_ref())?;
    let checkpoint = Checkpoint {
        version: checkpoint::VERSION,
        job: plan.name.clone(),
        run,
        started_at,
        written_at: String::new(),
        fingerprint,
        shard: layout.shard,
        sent,
        position,
    };
    let written_at = resumed.as_ref().map(|saved| saved.written_at.clone()).unwrap_or_default();
    Ok(Begun { checkpoint, resumed: resumed.is_some(), written_at })
}

/// Open the sink on its writer thread (a checkpoint first: from then on a crash always finds
/// one, and so what this run wrote), harvest every partition into it, and hand back the sink,
/// its checkpointer and the first failure, if any (the writer's own before the harvest's: a
/// failing writer closes the queue, which the fetching side then reports).
async fn harvest(
    plan: &Arc<Plan>,
    layout: &Layout,
    begun: Checkpoint,
    fetcher: &Arc<Fetcher>,
    progress: &Arc<Progress>,
    deal: Option<Deal>,
    cancel: &CancellationToken,
) -> Result<(Box<dyn Sink>, Checkpointer, Option<Error>), Error> {
    let position = begun.position.clone();
    let sink = crate::sink::open(layout, &begun.run, &plan.output, &position)?;
    let (active, done, sent) = (position.active.clone(), position.done.clone(), begun.sent.clone());
    let mut checkpointer = Checkpointer {
        layout: layout.clone(),
        saved: begun,
        interval: plan.output.checkpoint_interval,
        last: Instant::now(),
        secrets: plan.redactor.clone(),
    };
    checkpointer.save(position)?;
    let prepare = sink.preparer();
    let (tx, rx) = mpsc::channel::<Item>(WRITER_QUEUE);
    let writer = std::thread::Builder::new()
        .name("harvest-writer".into())
        .spawn(move || write_pages(sink, rx, checkpointer))
        .map_err(|e| Error::io("starting the writer thread", e))?;
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        fetcher: fetcher.clone(),
        decoder: Arc::new(crate::harvest::decode::for_job(plan)),
        tx,
        prepare,
        progress: progress.clone(),
        active,
        done,
        marks: sent.unwrap_or_default(),
        hints: AtomicU64::new(crate::harvest::HINTS),
        deal,
    });
    let showing = progress.show();
    let failure = harvest_partitions(&shared, cancel).await;
    drop(shared);
    drop(showing);
    let (sink, checkpointer, written) =
        writer.join().map_err(|_| Error::Task { task: "the writer thread", cause: "it panicked".into() })?;
    Ok((sink, checkpointer, written.err().or(failure)))
}

/// A shard whose manifest for this run exists has nothing to do: its share is complete. If
/// the run is complete too, replace mode's removal of earlier runs' parts is finished (the
/// shard may have died before it).
async fn already_complete(plan: &Plan, layout: &Layout, run: &str) -> Result<RunSummary, Error> {
    let rel = layout.manifest(run);
    let path = layout.display(&rel);
    let manifest = manifest::read(layout, &rel)?;
    tracing::info!("{} of run {run} is already complete ({path}): nothing to do", shard_words(layout));
    finish_run(plan, layout, run).await?;
    Ok(RunSummary {
        run: run.to_string(),
        parts: manifest.parts.iter().map(|p| PathBuf::from(layout.display(&p.file))).collect(),
        root: PathBuf::from(layout.display("")),
        manifest: PathBuf::from(path),
        records: manifest.records,
        pages: manifest.pages,
        requests: 0,
        seconds: 0.0,
        partitions: Vec::new(),
        already_complete: true,
    })
}

/// `shard 2 of 7`, or `the run`.
fn shard_words(layout: &Layout) -> String {
    match layout.shard {
        Some(shard) => format!("shard {} of {}", shard.index, shard.count),
        None => "the run".into(),
    }
}

/// Once `run` is complete (for a sharded run, every shard's manifest written, whichever shard
/// is last): a Delta table gets it as one version; in replace mode the parts of earlier runs
/// are removed (a table's stay, for time travel, until `vacuum`).
async fn finish_run(plan: &Plan, layout: &Layout, run: &str) -> Result<(), Error> {
    if let Some(shard) = layout.shard {
        let left = crate::output::unfinished(layout, run, shard.count)?;
        if !left.is_empty() {
            let left: Vec<String> = left.iter().map(u32::to_string).collect();
            tracing::info!("run {run}: waiting for shard(s) {} of {} to complete", left.join(", "), shard.count);
            return Ok(());
        }
        tracing::info!("run {run} is complete: all {} shards' manifests are written", shard.count);
    }
    if plan.output.format == Format::Delta {
        crate::output::failpoint("before-commit");
        let committed = crate::table::commit(plan, layout).await?;
        crate::output::failpoint("after-commit");
        if let (Some(every), Some(crate::table::Committed::Now { .. })) = (plan.output.optimize_every, committed) {
            optimize_every(layout, every).await?;
        }
    } else if plan.output.mode == Mode::Replace {
        let removed = layout.remove_other_runs(run).map_err(|e| Error::io("removing the parts of earlier runs", e))?;
        if removed > 0 {
            tracing::info!("removed {removed} part file(s) of earlier runs (mode = \"replace\")");
        }
    }
    Ok(())
}

/// `optimize_every = N`: after every N-th complete run, the table's small files are compacted
/// (in a version of their own). The run is complete whatever comes of it: a failure is a warning.
async fn optimize_every(layout: &Layout, every: u64) -> Result<(), Error> {
    let runs = crate::output::complete_runs(layout).map_err(|e| Error::io("listing the run manifests", e))?.len();
    if (runs as u64).is_multiple_of(every) {
        match crate::table::optimize_at(layout).await {
            Ok(said) => tracing::info!("optimize_every = {every}: {said}"),
            Err(e) => tracing::warn!("optimize_every = {every}: the table was not compacted: {e}"),
        }
    }
    Ok(())
}

/// Incremental syncs: the marks the partitions send (a resume sends what its run sent).
fn marks_to_send(plan: &Plan, layout: &Layout, resumed: Option<&Checkpoint>) -> Result<Option<Sent>, Error> {
    let Some(incremental) = &plan.incremental else { return Ok(None) };
    Ok(Some(match resumed.and_then(|saved| saved.sent.clone()) {
        Some(sent) => sent,
        None => Sent::from_state(incremental, &Marks::load(layout, &plan.redactor)?),
    }))
}

/// Every page is durable: raise the incremental marks, write the manifest, remove the
/// checkpoint, then commit the run to its Delta table or, in replace mode, remove the parts of
/// earlier runs. Each step is durable before the next, so a crash anywhere is finished by the
/// next run. A Delta run's marks are in its manifest, saved once its table holds it (see
/// `table::commit`). Returns the manifest's path.
async fn complete(plan: &Plan, layout: &Layout, manifest: &Manifest, position: &Position) -> Result<PathBuf, Error> {
    if plan.incremental.is_some() && plan.output.format != Format::Delta {
        // The partitions that ended by the API's own end; one cut short keeps its mark.
        let mut state = Marks::load(layout, &plan.redactor)?;
        for (key, mark) in &position.done.marks {
            state.raise(key, mark);
        }
        state.save(layout, &plan.redactor)?;
    }
    let rel = layout.manifest(&manifest.run);
    manifest::write(layout, &rel, manifest, &plan.redactor)?;
    crate::output::failpoint("after-manifest");
    checkpoint::remove(layout)?;
    finish_run(plan, layout, &manifest.run).await?;
    Ok(PathBuf::from(layout.display(&rel)))
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
    .map_err(|e| Error::Task { task: "the writer", cause: e.to_string() })?
}

/// The writer thread: pages in, durable bytes out, and a checkpoint at least every interval.
fn write_pages(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Item>,
    mut checkpointer: Checkpointer,
) -> (Box<dyn Sink>, Checkpointer, Result<(), Error>) {
    while let Some(item) = rx.blocking_recv() {
        let mut written = match item {
            Item::Page(batch) => sink.write(batch),
            Item::End { index, report } => {
                sink.end(index, report);
                Ok(())
            }
        };
        if written.is_ok() && checkpointer.last.elapsed() >= checkpointer.interval {
            written = sink.commit().and_then(|position| checkpointer.save(position));
        }
        if let Err(e) = written {
            return (sink, checkpointer, Err(e));
        }
    }
    (sink, checkpointer, Ok(()))
}

/// Where a checkpoint stands, for the log.
fn describe(position: &Position) -> String {
    const SHOWN: usize = 5;
    let mut places: Vec<String> = Vec::new();
    let done = position.done.count();
    if done > 0 {
        places.push(format!("{done} partition{} done", if done == 1 { "" } else { "s" }));
    }
    for (key, f) in position.active.iter().take(SHOWN) {
        let name = if key.is_empty() { String::new() } else { format!("partition {key} ") };
        places.push(format!("{name}from page {} ({} records written)", f.pages + 1, f.records));
    }
    if position.active.len() > SHOWN {
        places.push(format!("{} more under way", position.active.len() - SHOWN));
    }
    match places.is_empty() {
        true => "from the start".into(),
        false => places.join(", "),
    }
}
