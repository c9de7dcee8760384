//! The harvest, top to bottom: partitions → pages → fetch → records → sink.
//!
//! Each partition is its own pagination stream. For every page the strategy says what to
//! ask, the fetcher asks it (limiter, retries, origin rules), the records are cut out of the
//! body as raw bytes, the strategy reads the response to decide what comes next, and the
//! page goes to the sink, which runs on its own thread behind a bounded queue: a slow disk
//! slows the fetching, nothing queues without limit. A run that completes publishes its
//! last part, writes its manifest, and in replace mode then removes earlier runs' parts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, FetchErrorKind, Location, PageError};
use crate::fetch::{Fetcher, Outgoing};
use crate::jsonpath::{Document, Kind, RecordsError};
use crate::output::{write_atomic, Layout, Manifest, PartitionReport};
use crate::paginate::{Next, PageRequest, PageResponse, Paginator, StopReason};
use crate::plan::{fill, fill_json, Encoding, Mode, Partition, Plan};
use crate::sink::ndjson::NdjsonSink;
use crate::sink::{PageBatch, Position, Sink};

/// Pages the writer may have queued before the fetchers wait.
const WRITER_QUEUE: usize = 16;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print a progress line every few seconds.
    pub progress: bool,
    pub cancel: CancellationToken,
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

/// Harvest every partition of the plan.
pub async fn run(plan: Arc<Plan>, options: RunOptions) -> Result<RunSummary, Error> {
    let root = plan.output_root();
    let layout = Layout::create(root.clone()).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
    let lock = layout.lock().map_err(|e| Error::io("taking the job lock", e))?;
    let Some(_lock) = lock else {
        return Err(Error::Locked { name: plan.name.clone(), lock: layout.harvest_dir().join("lock") });
    };
    let run = layout.new_run_id().map_err(|e| Error::io(format!("reading {}", root.display()), e))?;
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let fetcher = Fetcher::new(&plan)?;
    let labels: Vec<String> = plan.partitions.iter().map(|p| plan.redactor.redact(&p.label()).into_owned()).collect();
    tracing::info!(
        "harvesting job {} (run {run}, {} partition{}) into {}",
        plan.name,
        labels.len(),
        if labels.len() == 1 { "" } else { "s" },
        root.display()
    );

    let sink =
        NdjsonSink::new(layout.clone(), &run, plan.output.compression, plan.output.rows_per_file, labels.clone(), 1);
    let (tx, rx) = mpsc::channel::<PageBatch>(WRITER_QUEUE);
    let writer = std::thread::Builder::new()
        .name("harvest-writer".into())
        .spawn(move || write_pages(Box::new(sink), rx))
        .map_err(|e| Error::io("starting the writer thread", e))?;

    let mut progress = Progress::new(options.progress);
    let mut reports = Vec::new();
    let mut failure = None;
    for (index, partition) in plan.partitions.iter().enumerate() {
        let harvest = Harvest { plan: &plan, fetcher: &fetcher, index, partition, label: &labels[index], tx: &tx };
        match harvest.run(&options.cancel, &mut progress).await {
            Ok(report) => reports.push(report),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let (mut sink, written) = writer.join().map_err(|_| Error::Other("the writer thread panicked".into()))?;

    if let Some(error) = failure.or(written.err()) {
        // Keep what was written durable for the resume; publish nothing more.
        let position = tokio::task::spawn_blocking(move || sink.commit())
            .await
            .map_err(|e| Error::Other(format!("the writer failed: {e}")))??;
        return Err(with_saved(error, &plan, &position, &layout));
    }
    let position = tokio::task::spawn_blocking(move || sink.finish())
        .await
        .map_err(|e| Error::Other(format!("the writer failed: {e}")))??;

    let stats = fetcher.stats();
    let records: u64 = reports.iter().map(|r| r.records).sum();
    let pages: u64 = reports.iter().map(|r| r.pages).sum();
    let manifest = Manifest {
        version: 1,
        job: plan.name.clone(),
        run: run.clone(),
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
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
    write_atomic(&manifest_path, &json).map_err(|e| Error::io(format!("writing {}", manifest_path.display()), e))?;
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

/// The writer thread: pages in, durable bytes out.
fn write_pages(mut sink: Box<dyn Sink>, mut rx: mpsc::Receiver<PageBatch>) -> (Box<dyn Sink>, Result<(), Error>) {
    while let Some(batch) = rx.blocking_recv() {
        if let Err(e) = sink.write(batch) {
            return (sink, Err(e));
        }
    }
    (sink, Ok(()))
}

fn with_saved(error: Error, plan: &Plan, position: &Position, layout: &Layout) -> Error {
    let records: u64 = position.frontier.iter().map(|f| f.records).sum();
    let saved = format!(
        "{records} record(s) written before the failure are kept under {}; `harvest run {}` runs the job again",
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
    plan: &'a Plan,
    fetcher: &'a Fetcher,
    index: usize,
    partition: &'a Partition,
    label: &'a str,
    tx: &'a mpsc::Sender<PageBatch>,
}

impl Harvest<'_> {
    async fn run(&self, cancel: &CancellationToken, progress: &mut Progress) -> Result<PartitionReport, Error> {
        let style = &self.plan.pagination.style;
        let mut pager = Paginator::new(style);
        let mut request = pager.first(style);
        let (mut page, mut records) = (0u64, 0u64);
        let stop = loop {
            if cancel.is_cancelled() {
                return Err(Error::Interrupted { saved: String::new() });
            }
            let remaining = self.plan.pagination.max_records.map(|max| max.saturating_sub(records));
            let fetched = match self.step(&mut pager, &request, page, remaining).await? {
                Step::Page(fetched) => *fetched,
                Step::End(reason) => break reason,
            };
            let count = fetched.kept;
            if self.tx.send(PageBatch { partition: self.index, page, lines: fetched.lines, count }).await.is_err() {
                return Err(Error::Other("the writer stopped".into()));
            }
            records += count;
            page += 1;
            progress.tick(self.label, page, records);
            match fetched.next {
                Next::Done(reason) => break reason,
                Next::Request(_) if self.plan.pagination.max_records.is_some_and(|max| records >= max) => {
                    break StopReason::MaxRecords { records };
                }
                Next::Request(_) if self.plan.pagination.max_pages.is_some_and(|max| page >= max) => {
                    break StopReason::MaxPages { pages: page };
                }
                Next::Request(r) => request = r,
            }
        };
        tracing::info!("partition{} done: {records} records in {page} pages; {stop}", partition_suffix(self.label));
        Ok(PartitionReport { partition: self.label.to_string(), records, pages: page, stop })
    }

    /// Fetch one page and digest it: its records (at most `keep`) as lines, and what comes
    /// next. An expected end (404, 400 or 422 after a short page) is `Step::End`.
    async fn step(
        &self,
        pager: &mut Paginator,
        request: &PageRequest,
        page: u64,
        keep: Option<u64>,
    ) -> Result<Step, Error> {
        let style = &self.plan.pagination.style;
        let location = Location { partition: self.label.to_string(), page };
        let outgoing = self.outgoing(request)?;
        let fetched = match self.fetcher.fetch(&outgoing).await {
            Ok(fetched) => fetched,
            Err(e) => match e.kind {
                FetchErrorKind::Status { status: status @ (400 | 404 | 422), .. } if pager.confirming_end() => {
                    return Ok(Step::End(StopReason::EndConfirmed { status }));
                }
                _ => {
                    let hint = self.size_hint(&e.kind);
                    return Err(Error::Fetch { source: e, location, saved: hint });
                }
            },
        };
        let page_error = |source: PageError| Error::Page {
            method: outgoing.method.as_str().to_string(),
            url: self.fetcher.redactor().url(&fetched.url),
            source,
            location: location.clone(),
        };
        let doc = Document::parse(&fetched.body).map_err(|e| page_error(PageError::Pagination(e)))?;
        self.check_errors(&doc, fetched.status).map_err(page_error)?;
        let nodes = self.plan.records.path.records(&doc).map_err(|e| {
            page_error(match e {
                RecordsError::NotAnArray { at, found } => {
                    PageError::NotAnArray { path: self.plan.records.path.to_string(), at, found }
                }
                RecordsError::Invalid(message) => PageError::Pagination(message),
            })
        })?;
        if page == 0 && nodes.is_empty() {
            tracing::warn!(
                "the first page{} has no records at records.path {} ({})",
                partition_suffix(self.label),
                self.plan.records.path,
                self.fetcher.redactor().url(&fetched.url)
            );
        }
        let received = nodes.len() as u64;
        let kept = keep.map_or(received, |keep| received.min(keep));
        let mut lines = Vec::with_capacity(fetched.body.len() + nodes.len());
        for node in &nodes[..kept as usize] {
            node.write_compact(&mut lines);
            lines.push(b'\n');
        }
        let response = PageResponse {
            status: fetched.status,
            headers: &fetched.headers,
            url: &fetched.url,
            doc: &doc,
            records: received,
        };
        let next = pager.next(style, &response).map_err(page_error)?;
        Ok(Step::Page(Box::new(PageOut {
            lines,
            kept,
            received,
            next,
            url: self.fetcher.redactor().url(&fetched.url),
        })))
    }

    /// The job's request for this partition, with the strategy's parameters applied.
    fn outgoing(&self, request: &PageRequest) -> Result<Outgoing, Error> {
        let plan = self.plan;
        let partition = self.partition;
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
    fn check_errors(&self, doc: &Document, status: u16) -> Result<(), PageError> {
        let Some(path) = &self.plan.records.errors else { return Ok(()) };
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
        let mut messages = self.fetcher.redactor().redact(&messages.join("; ")).into_owned();
        if errors.len() > 5 {
            messages.push_str(&format!(" (and {} more)", errors.len() - 5));
        }
        Err(PageError::ApiErrors { path: path.to_string(), status, messages })
    }

    /// A 400 or 422 on an ordinary page of a sized strategy is most often a page size above
    /// the server's maximum: say which parameter asked for how much.
    fn size_hint(&self, kind: &FetchErrorKind) -> String {
        let FetchErrorKind::Status { status: 400 | 422, .. } = kind else { return String::new() };
        let Some((param, size)) = Paginator::size_param(&self.plan.pagination.style) else { return String::new() };
        format!("if the server limits page sizes, lower pagination.page_size: this request asked {param}={size}")
    }
}

/// What fetching one page came to.
enum Step {
    Page(Box<PageOut>),
    End(StopReason),
}

struct PageOut {
    lines: Vec<u8>,
    kept: u64,
    received: u64,
    next: Next,
    /// The URL that answered, redacted.
    url: String,
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
    let fetcher = Fetcher::new(plan)?;
    let (tx, _rx) = mpsc::channel(1);
    let mut probes = Vec::new();
    for (index, partition) in plan.partitions.iter().enumerate() {
        let label = plan.redactor.redact(&partition.label()).into_owned();
        let harvest = Harvest { plan, fetcher: &fetcher, index, partition, label: &label, tx: &tx };
        let style = &plan.pagination.style;
        let mut pager = Paginator::new(style);
        let request = pager.first(style);
        let probe = match harvest.step(&mut pager, &request, 0, None).await? {
            Step::Page(out) => Probe {
                partition: label.clone(),
                url: out.url,
                records: out.received,
                sample: out
                    .lines
                    .split(|b| *b == b'\n')
                    .next()
                    .filter(|l| !l.is_empty())
                    .map(|l| String::from_utf8_lossy(l).into_owned()),
                next: match out.next {
                    Next::Done(reason) => format!("done: {reason}"),
                    Next::Request(r) => describe_request(plan, &r),
                },
            },
            Step::End(reason) => Probe {
                partition: label.clone(),
                url: String::new(),
                records: 0,
                sample: None,
                next: format!("done: {reason}"),
            },
        };
        probes.push(probe);
    }
    Ok(probes)
}

fn describe_request(plan: &Plan, request: &PageRequest) -> String {
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
    last: Instant,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress { enabled, last: Instant::now() }
    }

    fn tick(&mut self, label: &str, pages: u64, records: u64) {
        if self.enabled && self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            eprintln!("harvest: {records} records, {pages} pages{}", partition_suffix(label));
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
