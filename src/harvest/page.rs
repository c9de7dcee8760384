//! One page fetched and decoded: the request sent through the fetcher (limits, retries,
//! redirects), the body turned into records and pagination facts by the job's
//! [`Decoder`](super::decode), and each record given its parent's fields. What is sent is
//! built by [`crate::request`]; the partition's pagination moves past the page later, in
//! order ([`advance`]), and the page goes to the sink.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::header::HeaderMap;

use super::decode::{Decoder, Undecodable};
use crate::detect;
use crate::error::{Error, FetchErrorKind, Location, PageError};
use crate::fetch::{FetchFailure, Fetched, Fetcher, Reject};
use crate::jsonpath::{Document, ParseError, PathError};
use crate::paginate::{Next, PageRequest, Reading, Strategy};
use crate::partition::Partition;
use crate::plan::Plan;
use crate::progress::Track;
use crate::request::outgoing;

/// What fetching one page of one partition needs.
pub(crate) struct PageContext<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) fetcher: &'a Fetcher,
    pub(crate) decoder: &'a dyn Decoder,
    /// The partition's label, redacted, for messages.
    pub(crate) label: &'a str,
    /// Its values for placeholders (the incremental mark among them).
    pub(crate) partition: &'a Partition,
    /// The incremental mark as a query parameter, when no placeholder takes it.
    pub(crate) since: Option<&'a (String, String)>,
    /// The partition's line in the progress table.
    pub(crate) track: &'a Track,
    /// How many more first pages may be read for what they suggest (see
    /// [`crate::detect::first_page_hint`]); a run reads a few, not one per partition.
    pub(crate) hints: &'a AtomicU64,
}

impl<'a> PageContext<'a> {
    /// A partition's pages fetched one by one outside a run (`check --probe`, `init`): no
    /// writer, no incremental mark.
    pub(crate) fn standalone(
        plan: &'a Plan,
        fetcher: &'a Fetcher,
        decoder: &'a dyn Decoder,
        label: &'a str,
        partition: &'a Partition,
        track: &'a Track,
        hints: &'a AtomicU64,
    ) -> Self {
        PageContext { plan, fetcher, decoder, label, partition, since: None, track, hints }
    }
}

/// A page fetched and cut into records.
pub(crate) struct PageOut {
    /// Records, one compact JSON line each.
    pub(crate) lines: Vec<u8>,
    pub(crate) received: u64,
    /// What the pagination read of the response.
    pub(crate) reading: Reading,
    pub(crate) method: crate::plan::Method,
    /// A first page's headers and body, kept to say what they suggest if the partition stops
    /// after it ([`advance`]).
    pub(crate) first: Option<Box<(HeaderMap, Bytes)>>,
}

impl PageOut {
    /// The URL that answered (not redacted: show it only through the redactor).
    pub(crate) fn url(&self) -> &url::Url {
        &self.reading.url
    }
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

/// Fetch one page (the `page`-th of its partition, from 0) and decode it.
pub(crate) async fn fetch_page(
    cx: &PageContext<'_>,
    request: &PageRequest,
    page: u64,
) -> Result<Box<PageOut>, PageFailure> {
    let (plan, fetcher) = (cx.plan, cx.fetcher);
    let location = Location { partition: cx.label.to_string(), page };
    let outgoing =
        outgoing(plan, cx.partition, request, cx.since).map_err(|error| PageFailure { status: None, error })?;
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
        let decoded = cx.decoder.decode(fetched).map_err(|e| match e {
            Undecodable::Malformed { reason, cut_short } => Reject::NotJson { reason, cut_short },
            Undecodable::Page(source) => page_error(source),
        })?;
        let mut lines = decoded.lines;
        if !cx.partition.parent.is_empty() {
            lines =
                with_parent(&lines, &cx.partition.parent).map_err(|e| page_error(PageError::Parent(e.to_string())))?;
        }
        let first = (page == 0).then(|| Box::new((fetched.headers.clone(), fetched.body.clone())));
        let method = outgoing.method;
        Ok(Box::new(PageOut { lines, received: decoded.records, reading: decoded.reading, method, first }))
    };
    fetcher.fetch_with(&outgoing, Some(cx.track), judge).await.map_err(|failure| match failure {
        FetchFailure::Rejected(failure) => failure,
        FetchFailure::Fetch(e) => {
            let status = match e.kind {
                FetchErrorKind::Status { status, .. } => Some(status),
                _ => None,
            };
            let hint = size_hint(plan, &e.kind);
            PageFailure { status, error: Error::Fetch { source: e, location: location.clone(), hint, kept: None } }
        }
        FetchFailure::Interrupted => PageFailure { status: None, error: Error::interrupted() },
    })
}

/// Move a partition's pagination past its `page`-th page, in order: the next request, or why
/// it is done; and, when it stops after its first page while the response suggests more, what
/// that suggests and the likely fix.
pub(crate) fn advance(
    cx: &PageContext<'_>,
    pager: &mut dyn Strategy,
    out: &mut PageOut,
    page: u64,
) -> Result<(Next, Option<String>), Error> {
    let plan = cx.plan;
    let next = pager.advance(&out.reading, &plan.redactor).map_err(|source| Error::Page {
        method: out.method.as_str().to_string(),
        url: cx.fetcher.redactor().url(out.url()),
        source,
        location: Location { partition: cx.label.to_string(), page },
    })?;
    let (Next::Done(stop), Some(first)) = (&next, out.first.take()) else { return Ok((next, None)) };
    // An incremental sync with nothing new is no surprise; and a run reads a few first pages.
    if (out.received == 0 && plan.incremental.is_some())
        || cx.hints.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
    {
        return Ok((next, None));
    }
    let (headers, body) = &*first;
    let (style, path) = (&plan.pagination.style, plan.records.path.to_string());
    let hint = detect::first_page_hint(style, &path, out.received, stop, headers, body)
        .map(|hint| plan.redactor.redact(&hint).into_owned());
    Ok((next, hint))
}

/// Each record with `"_parent":{members}` appended, the rest of its bytes as they were. A
/// record that already has `_parent`, or is not an object, cannot take it.
fn with_parent(lines: &[u8], members: &str) -> Result<Vec<u8>, Unparented> {
    static PARENT: std::sync::OnceLock<crate::jsonpath::JsonPath> = std::sync::OnceLock::new();
    let parent = PARENT.get_or_init(|| crate::jsonpath::JsonPath::parse("$._parent").expect("a valid path"));
    let mut out = Vec::with_capacity(lines.len() + (members.len() + 14) * memchr::memchr_iter(b'\n', lines).count());
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if line.first() != Some(&b'{') || line.last() != Some(&b'}') {
            return Err(Unparented::NotAnObject);
        }
        let doc = Document::parse(line).map_err(Unparented::NotJson)?;
        if parent.first(&doc)?.is_some() {
            return Err(Unparented::HasOne);
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

/// Why `include` cannot add `_parent` to a page's records.
#[derive(Debug, thiserror::Error)]
enum Unparented {
    #[error("include adds _parent to each record, and a record here is not a JSON object")]
    NotAnObject,
    #[error(
        "a record already has a _parent field, which include would add: rename it in the job \
         (include's names go inside _parent) or drop include"
    )]
    HasOne,
    #[error("{0}")]
    NotJson(ParseError),
    #[error("{0}")]
    Path(#[from] PathError),
}

/// A 400 or 422 on an ordinary page of a sized strategy is most often a page size above the
/// server's maximum: say which parameter asked for how much.
pub(crate) fn size_hint(plan: &Plan, kind: &FetchErrorKind) -> Option<String> {
    let FetchErrorKind::Status { status: 400 | 422, .. } = kind else { return None };
    let (param, size) = plan.pagination.style.size_param()?;
    Some(format!("if the server limits page sizes, lower pagination.page_size: this request asked {param}={size}"))
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
        let error = with_parent(b"{\"id\":1,\"_parent\":null}\n", "\"x\":1").unwrap_err().to_string();
        assert!(error.contains("already has a _parent field"), "{error}");
        assert!(with_parent(b"[1]\n", "\"x\":1").unwrap_err().to_string().contains("not a JSON object"));
    }
}
