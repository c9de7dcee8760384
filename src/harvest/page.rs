//! One page fetched and judged: the request sent through the fetcher (limits, retries,
//! redirects), the response checked (not JSON, GraphQL-style errors on a 200, an object where
//! records should be), the records cut out as compact lines, and the strategy's reading of the
//! response. What is sent is built by [`crate::request`]; what comes of the page goes to the
//! pipeline, which takes pages in order.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::detect;
use crate::error::{Error, FetchErrorKind, Location, PageError};
use crate::fetch::{FetchFailure, Fetched, Fetcher, Reject};
use crate::incremental;
use crate::jsonpath::{Document, Kind, RecordsError};
use crate::paginate::{Facts, Next, PageRequest, PageResponse, Paginator};
use crate::partition::Partition;
use crate::plan::Plan;
use crate::progress::Track;
use crate::request::outgoing;
use crate::sink::{Prepare, Prepared};

/// What fetching one page of one partition needs.
pub(crate) struct PageContext<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) fetcher: &'a Fetcher,
    /// The partition's label, redacted, for messages.
    pub(crate) label: &'a str,
    /// Its values for placeholders (the incremental mark among them).
    pub(crate) partition: &'a Partition,
    /// The incremental mark as a query parameter, when no placeholder takes it.
    pub(crate) since: Option<&'a (String, String)>,
    /// The sink's per-page work, done here rather than on the writer thread.
    pub(crate) prepare: Option<&'a dyn Prepare>,
    /// The partition's line in the progress table.
    pub(crate) track: &'a Track,
    /// How many more first pages may be read for what they suggest (see
    /// [`crate::detect::first_page_hint`]); a run reads a few, not one per partition.
    pub(crate) hints: Option<&'a AtomicU64>,
}

impl<'a> PageContext<'a> {
    /// A partition's pages fetched one by one outside a run (`check --probe`, `init`): no
    /// writer, no incremental mark.
    pub(crate) fn standalone(
        plan: &'a Plan,
        fetcher: &'a Fetcher,
        label: &'a str,
        partition: &'a Partition,
        track: &'a Track,
        hints: &'a AtomicU64,
    ) -> Self {
        PageContext { plan, fetcher, label, partition, since: None, prepare: None, track, hints: Some(hints) }
    }
}

/// A page fetched and cut into records.
pub(crate) struct PageOut {
    /// Records, one compact JSON line each.
    pub(crate) lines: Vec<u8>,
    pub(crate) received: u64,
    /// The sink's work on the lines, done here rather than in the writer.
    pub(crate) prepared: Option<Prepared>,
    /// What the strategy made of the page, when it was fetched in sequence.
    pub(crate) next: Option<Next>,
    /// What offset and page strategies read, when it was fetched ahead.
    pub(crate) facts: Option<Facts>,
    /// The URL that answered (not redacted: show it only through the redactor).
    pub(crate) url: url::Url,
    /// Incremental syncs: the greatest mark on the page.
    pub(crate) mark: Option<String>,
    /// A first page after which the partition stops, while the response suggests more: what
    /// it suggests and the likely fix.
    pub(crate) hint: Option<String>,
}

/// A page that could not be had, and its status if the server answered.
pub(crate) struct PageFailure {
    pub(crate) status: Option<u16>,
    pub(crate) error: Error,
}

impl PageFailure {
    /// The status of a 404, 400 or 422: past the end, if the end was possible.
    pub(crate) fn end_status(&self) -> Option<u16> {
        self.status.filter(|s| matches!(s, 400 | 404 | 422))
    }
}

/// Fetch one page and cut it into records. With `pager`, the strategy digests the response
/// (sequential strategies); without, only the facts offset and page strategies need are kept.
pub(crate) async fn fetch_page(
    cx: &PageContext<'_>,
    request: &PageRequest,
    page: u64,
    pager: Option<&mut Paginator>,
) -> Result<Box<PageOut>, PageFailure> {
    let (plan, fetcher, label) = (cx.plan, cx.fetcher, cx.label);
    let style = &plan.pagination.style;
    let location = Location { partition: label.to_string(), page };
    let outgoing =
        outgoing(plan, cx.partition, request, cx.since).map_err(|error| PageFailure { status: None, error })?;
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
        if !cx.partition.parent.is_empty() {
            lines = with_parent(&lines, &cx.partition.parent).map_err(|e| page_error(PageError::Parent(e)))?;
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
        let hint = match &next {
            // An incremental sync with nothing new is no surprise.
            Some(Next::Done(stop)) if page == 0 && !(received == 0 && plan.incremental.is_some()) => {
                let budget = cx.hints.is_some_and(|left| {
                    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
                });
                let path = plan.records.path.to_string();
                budget
                    .then(|| detect::first_page_hint(style, &path, received, stop, &fetched.headers, &fetched.body))
                    .flatten()
                    .map(|hint| plan.redactor.redact(&hint).into_owned())
            }
            _ => None,
        };
        let url = fetched.url.clone();
        Ok(Box::new(PageOut { lines, received, prepared: None, next, facts, url, mark: None, hint }))
    };
    let mut out = fetcher.fetch_with(&outgoing, Some(cx.track), judge).await.map_err(|failure| match failure {
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
    if let Some(prepare) = cx.prepare {
        out.prepared = prepare.prepare(&out.lines, out.received);
    }
    if let Some(incremental) = &plan.incremental {
        out.mark = incremental::page_mark(&incremental.field, &out.lines);
    }
    Ok(out)
}

/// Each record with `"_parent":{members}` appended, the rest of its bytes as they were. A
/// record that already has `_parent`, or is not an object, cannot take it.
fn with_parent(lines: &[u8], members: &str) -> Result<Vec<u8>, String> {
    static PARENT: std::sync::OnceLock<crate::jsonpath::JsonPath> = std::sync::OnceLock::new();
    let parent = PARENT.get_or_init(|| crate::jsonpath::JsonPath::parse("$._parent").expect("a valid path"));
    let mut out = Vec::with_capacity(lines.len() + (members.len() + 14) * memchr::memchr_iter(b'\n', lines).count());
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if line.first() != Some(&b'{') || line.last() != Some(&b'}') {
            return Err("include adds _parent to each record, and a record here is not a JSON object".into());
        }
        let doc = Document::parse(line).map_err(|e| e.message)?;
        if parent.first(&doc)?.is_some() {
            return Err("a record already has a _parent field, which include would add: rename it in the job \
                        (include's names go inside _parent) or drop include"
                .into());
        }
        out.extend_from_slice(&line[..line.len() - 1]);
        if line.len() > 2 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"_parent\":{");
        out.extend_from_slice(members.as_bytes());
        out.extend_from_slice(b"}}\n");
    }
    Ok(out)
}

/// A non-empty array at `records.errors` fails the page, whatever the status.
pub(crate) fn check_errors(plan: &Plan, doc: &Document, status: u16) -> Result<(), PageError> {
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
pub(crate) fn size_hint(plan: &Plan, kind: &FetchErrorKind) -> String {
    let FetchErrorKind::Status { status: 400 | 422, .. } = kind else { return String::new() };
    let Some((param, size)) = Paginator::size_param(&plan.pagination.style) else { return String::new() };
    format!("if the server limits page sizes, lower pagination.page_size: this request asked {param}={size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_fields_are_appended_to_each_record_and_a_record_of_its_own_parent_is_refused() {
        let lines = b"{\"id\":1,\"a\":{\"_parent\":2}}\n{}\n";
        let out = with_parent(lines, "\"repo_id\":7").unwrap();
        assert_eq!(
            out,
            b"{\"id\":1,\"a\":{\"_parent\":2},\"_parent\":{\"repo_id\":7}}\n{\"_parent\":{\"repo_id\":7}}\n"
        );
        let error = with_parent(b"{\"id\":1,\"_parent\":null}\n", "\"x\":1").unwrap_err();
        assert!(error.contains("already has a _parent field"), "{error}");
        assert!(with_parent(b"[1]\n", "\"x\":1").unwrap_err().contains("not a JSON object"));
    }
}
