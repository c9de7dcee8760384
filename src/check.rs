//! `harvest check`: what a job will do, in words, with secrets redacted.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::error::Error;
use crate::fetch::Fetcher;
use crate::harvest::decode;
use crate::harvest::page::{self, fetch_page, PageContext};
use crate::paginate::Next;
use crate::plan::{Compression, Format, Mode, Plan};
use crate::progress::Progress;
use crate::request::describe_request;

/// The resolved plan, for people.
pub fn describe(plan: &Plan) -> String {
    let r = &plan.redactor;
    let mut out = String::new();
    let _ = writeln!(out, "job {} ({})", plan.name, plan.job_file.display());
    // Values from a file or another job's output are read now; a job's output may not be there yet.
    let unlisted = plan.partitions.open().err();
    let first = plan.partitions.iter().next().unwrap_or_default();
    let url = plan.url_for(&first).map(|u| r.url(&u)).unwrap_or_else(|e| e.to_string());
    let _ = writeln!(out, "  request: {} {url}", plan.request.method.as_str());
    for (k, v) in &plan.request.params {
        let shown = if crate::redact::is_sensitive_param(k) { crate::redact::MASK.into() } else { r.redact(v) };
        let _ = writeln!(out, "    param  {k} = {shown}");
    }
    for (k, v) in &plan.request.headers {
        let _ = writeln!(out, "    header {k}: {}", r.header(k, v));
    }
    if let Some(body) = &plan.request.body {
        let _ = writeln!(out, "    body   {}", r.redact(&body.to_string()));
    }
    let _ = writeln!(
        out,
        "    timeout {} (connect {}), responses over {} are an error",
        human(plan.request.timeout),
        human(plan.request.connect_timeout),
        crate::human::bytes(plan.request.max_body)
    );
    if let Some(e) = &unlisted {
        let _ = writeln!(out, "  partitions: not listed yet: {}", r.redact(&e.to_string()));
    } else if !plan.partitions.is_single() {
        let _ = writeln!(out, "  partitions: {} combinations, harvested side by side", plan.partitions.count());
        for p in plan.partitions.iter().take(5) {
            let _ = writeln!(out, "    {}", r.redact(&p.key));
        }
        if plan.partitions.count() > 5 {
            let _ = writeln!(out, "    ... and {} more", plan.partitions.count() - 5);
        }
    }
    let _ = writeln!(out, "  records: each node at {}", plan.records.path);
    match &plan.records.errors {
        Some(e) => {
            let _ = writeln!(out, "  errors: a non-empty array at {e} fails the page, even on HTTP 200");
        }
        None => {
            let _ = writeln!(out, "  errors: not checked");
        }
    }
    let _ = writeln!(out, "  pagination: {}", pagination(plan));
    if let Some(max) = plan.pagination.max_pages {
        let _ = writeln!(out, "    at most {max} pages per partition");
    }
    if let Some(max) = plan.pagination.max_records {
        let _ = writeln!(out, "    at most {max} records per partition");
    }
    let l = &plan.limits;
    let rate = match l.requests_per_second {
        Some(rps) => format!("at most {rps} requests/s (burst {})", l.burst),
        None => "no client-side rate limit".to_string(),
    };
    let _ = writeln!(
        out,
        "  limits: {rate}; at most {} request(s) in flight; server rate limits {} (waits up to {})",
        l.concurrency,
        if l.respect_server_limits { "respected" } else { "ignored" },
        human(l.max_wait)
    );
    let _ = writeln!(
        out,
        "  shards: these limits are the whole job's; run as N shards (--shard I/N), each takes 1/N of the rate, \
         the burst and the requests in flight; {}",
        match crate::harvest::pages_can_be_dealt(plan) {
            Ok(()) => "with fewer partitions than shards, pages are dealt out: page p to shard (p - 1) mod N".into(),
            Err(why) => format!("partitions go to shards by the hash of their key (pages are not dealt out: {why})"),
        }
    );
    let t = &plan.retry;
    let codes: Vec<String> = t.on_status.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "  retry: up to {} attempts, backoff {} to {} with jitter, on connect errors, timeouts, cut or invalid bodies and {}",
        t.max_attempts,
        human(t.initial_backoff),
        human(t.max_backoff),
        codes.join(", ")
    );
    let o = &plan.output;
    let ext = match (o.format, o.compression) {
        (Format::Ndjson, c) => format!("ndjson{}", c.extension()),
        (_, Compression::Zstd) => "parquet (zstd)".to_string(),
        (_, Compression::Snappy) => "parquet (snappy)".to_string(),
        (_, _) => "parquet (uncompressed)".to_string(),
    };
    let _ = writeln!(
        out,
        "  output: {}{}/part-<run>-<seq>.{ext}, {} rows per file; {}",
        if o.format == Format::Delta { "a Delta table, " } else { "" },
        plan.output_root().display(),
        o.rows_per_file,
        match (o.format, o.mode) {
            (Format::Delta, Mode::Replace) => "a completed run is one version replacing the table's rows",
            (Format::Delta, Mode::Append) => "a completed run is one version adding its rows",
            (_, Mode::Merge) => "a completed run is one version merging its rows by primary key",
            (_, Mode::Replace) => "a completed run replaces earlier runs' parts",
            (_, Mode::Append) => "earlier runs' parts are kept",
        }
    );
    if let Some(merge) = &o.merge {
        let deleted = match &merge.deleted {
            Some(path) => format!("; a record with {path} true deletes its row"),
            None => String::new(),
        };
        let wins = match &plan.incremental {
            Some(incremental) => format!("the higher {}", incremental.field),
            None => "the later record".to_string(),
        };
        let _ = writeln!(out, "  merge: one row per {}, {wins} wins{deleted}", merge.primary_key.join(" + "));
    }
    if o.format.writes_parquet() {
        let p = &o.parquet;
        let schema = match (&p.schema_file, p.reject_to_json) {
            (Some(file), false) => format!("declared in {}; a record that does not fit stops the run", file.display()),
            (Some(file), true) => format!("declared in {}; what does not fit goes to `_rejected`", file.display()),
            (None, _) => format!(
                "inferred from the first {} records ({}), widened into a new part when a record needs it",
                p.infer_sample,
                if p.infer_timestamps { "RFC 3339 strings as timestamps" } else { "strings kept as strings" }
            ),
        };
        let _ = writeln!(out, "  schema: {schema}; row groups of {} rows at most", p.row_group_size);
    }
    let _ = writeln!(out, "  checkpoints: at least every {}", human(o.checkpoint_interval));
    if plan.in_object_storage() {
        let store = &o.store;
        let _ = writeln!(
            out,
            "  object storage: credentials from the environment{}{}; parts uploaded whole, each checkpoint closes \
             one; a lease renewed every {}, taken over after {} without renewal; conditional writes required",
            store.endpoint.as_ref().map(|e| format!(", endpoint {}", plan.redactor.redact(e))).unwrap_or_default(),
            if store.allow_http { ", plain HTTP allowed" } else { "" },
            human(store.lease_ttl / 4),
            human(store.lease_ttl)
        );
    }
    if let Some(i) = &plan.incremental {
        let _ = writeln!(
            out,
            "  incremental: sends the greatest {} of the last complete run as {}{}{}",
            i.field.as_str(),
            i.param,
            i.lookback.map(|l| format!(", less {}", human(l))).unwrap_or_default(),
            i.start.as_ref().map(|s| format!("; {} before the first", plan.redactor.redact(s))).unwrap_or_default()
        );
    }
    let origins: Vec<String> = plan.allowed_origins.iter().map(|o| o.ascii_serialization()).collect();
    let _ = writeln!(out, "  auth: {}", plan.redactor.redact(&plan.auth.describe()));
    let _ = writeln!(out, "  credentials go only to: {}", origins.join(", "));
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

fn human(d: std::time::Duration) -> String {
    crate::human::duration(d)
}

fn pagination(plan: &Plan) -> String {
    plan.pagination.style.describe()
}

/// `check --probe`: the first page of each partition, its records counted, one shown, and
/// what the strategy would ask next.
pub async fn probe(plan: &Plan) -> Result<String, Error> {
    let fetcher = Fetcher::new(plan)?;
    let style = &plan.pagination.style;
    let mut out = String::from("probe:\n");
    let progress = Progress::off();
    let hints = AtomicU64::new(u64::MAX);
    let decoder = decode::for_job(plan);
    for partition in plan.partitions.iter() {
        let label = plan.redactor.redact(&partition.key).into_owned();
        let track = progress.track(partition.index, &Arc::from(label.as_str()), 0, 0);
        let cx = PageContext::standalone(plan, &fetcher, &decoder, &label, &partition, &track, &hints);
        let mut pager = style.start();
        let request = pager.first();
        let mut page = fetch_page(&cx, &request, 0).await.map_err(|f| f.error)?;
        let (next, _) = page::advance(&cx, &mut *pager, &mut page, 0)?;
        let name = if label.is_empty() { String::new() } else { format!(" [{label}]") };
        let _ = writeln!(out, "  first page{name}: {} records from {}", page.received, plan.redactor.url(page.url()));
        if let Some(sample) = page.lines.split(|b| *b == b'\n').next().filter(|l| !l.is_empty()) {
            let sample = plan.redactor.redact(&String::from_utf8_lossy(sample)).into_owned();
            let shown: String = sample.chars().take(400).collect();
            let more = if shown.len() < sample.len() { " ..." } else { "" };
            let _ = writeln!(out, "    sample: {shown}{more}");
        }
        let next = match next {
            Next::Request(r) => describe_request(plan, &r),
            Next::Done(reason) => format!("done: {reason}"),
        };
        let _ = writeln!(out, "    {next}");
    }
    if let Some(report) = fetcher.credentials_report() {
        let origins: Vec<String> = plan.allowed_origins.iter().map(|o| o.ascii_serialization()).collect();
        let _ = writeln!(out, "  auth: {report}; sent to {}", origins.join(", "));
    }
    Ok(out)
}
