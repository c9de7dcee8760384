//! Pagination strategies: small state machines, one file each, no HTTP inside.
//!
//! A strategy answers three questions: what is the first request, given this response what
//! is the next request (or why do we stop), and, for offset and page, which pages could be
//! fetched independently. It sees a response as status, headers, URL and a parsed body, so
//! each one is unit-tested without a server. Its state is plain serde data, so a checkpoint
//! can store it and a resume rebuild it; its configuration (compiled paths, parameter names)
//! lives in the [`PaginationPlan`] and is passed in on every call.
//!
//! Each strategy's file also owns its job-file keys: a [`Spec`] struct with their defaults,
//! built into its configuration. Adding a kind touches its file, [`Style`], [`Paginator`]
//! and the list of kinds in `job/pagination.rs`.

pub mod cursor;
pub mod fact;
pub mod link_header;
pub mod next_url;
pub mod offset;
pub mod page_number;
mod stop;

pub use fact::Fact;
pub use stop::StopReason;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::keys::Spanned;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::error::{JobError, PageError};
use crate::jsonpath::Document;
pub use crate::keys::KeyReader;
use crate::redact::Redactor;

/// Where pagination parameters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamsIn {
    Query,
    /// In the JSON body; a name is a dotted path (`variables.after`).
    Body,
    Header,
}

/// The pagination section of a validated job.
#[derive(Debug, Clone)]
pub struct PaginationPlan {
    pub style: Style,
    pub max_pages: Option<u64>,
    pub max_records: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Style {
    Offset(offset::Config),
    Page(page_number::Config),
    Cursor(cursor::Config),
    NextUrl(next_url::Config),
    LinkHeader(link_header::Config),
    None,
}

impl Style {
    /// What the job's pagination does, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        match self {
            Style::Offset(c) => c.describe(),
            Style::Page(c) => c.describe(),
            Style::Cursor(c) => c.describe(),
            Style::NextUrl(c) => c.describe(),
            Style::LinkHeader(c) => c.describe(),
            Style::None => "none: one request per partition".into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Style::Offset(_) => "offset",
            Style::Page(_) => "page",
            Style::Cursor(_) => "cursor",
            Style::NextUrl(_) => "next_url",
            Style::LinkHeader(_) => "link_header",
            Style::None => "none",
        }
    }
}

impl Style {
    /// True when the strategy puts parameters in a JSON body (which needs a POST).
    pub fn sends_in_body(&self) -> bool {
        match self {
            Style::Offset(c) => c.params_in == ParamsIn::Body,
            Style::Page(c) => c.params_in == ParamsIn::Body,
            Style::Cursor(c) => c.params_in == ParamsIn::Body || c.cursor_in == ParamsIn::Body,
            Style::NextUrl(_) | Style::LinkHeader(_) | Style::None => false,
        }
    }
}

impl ParamsIn {
    /// Where, in words.
    pub fn place(self) -> &'static str {
        match self {
            ParamsIn::Query => "in the query",
            ParamsIn::Body => "in the JSON body",
            ParamsIn::Header => "as a header",
        }
    }

    /// As the job file writes it.
    pub fn name(self) -> &'static str {
        match self {
            ParamsIn::Query => "query",
            ParamsIn::Body => "body",
            ParamsIn::Header => "header",
        }
    }
}

/// A pagination kind's keys as the job file writes them (`deny_unknown_fields`, values
/// `Spanned`), and how they become its configuration with their defaults. `page_size`,
/// `max_pages` and `max_records` are shared by every kind and read once by the job's reader.
pub trait Spec: DeserializeOwned {
    fn build(self, page_size: Option<u64>, keys: &dyn KeyReader) -> Result<Style, JobError>;
}

/// The longest cursor or next link followed: past it a server is broken or hostile (a
/// checkpoint and every request would carry it), and the partition stops with an error.
pub const MAX_NEXT_BYTES: usize = 64 * 1024;

/// Refuse a cursor or link past [`MAX_NEXT_BYTES`].
pub fn within_limit(what: &str, value: &str) -> Result<(), PageError> {
    match value.len() > MAX_NEXT_BYTES {
        true => Err(PageError::Pagination(format!(
            "the {what} is {} bytes long, more than the {} KiB harvest follows",
            value.len(),
            MAX_NEXT_BYTES / 1024
        ))),
        false => Ok(()),
    }
}

/// Where parameters go: one of `allowed`, by name, or `default`.
pub fn place(
    keys: &dyn KeyReader,
    value: &Option<Spanned<String>>,
    key: &str,
    allowed: &[ParamsIn],
    default: ParamsIn,
) -> Result<ParamsIn, JobError> {
    let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
    Ok(keys.choice(value, key, &names)?.map_or(default, |i| allowed[i]))
}

/// A page-size parameter for the kinds that send one only when asked to: `limit_param`,
/// defaulting to `limit`, when the job gives it or a page size.
pub fn optional_limit(
    keys: &dyn KeyReader,
    limit_param: &Option<Spanned<String>>,
    page_size: Option<u64>,
) -> Result<Option<String>, JobError> {
    match (limit_param, page_size) {
        (None, None) => Ok(None),
        (given, _) => keys.text_or(given, "limit").map(Some),
    }
}

/// `kind = "none"`: one request per partition, no keys of its own.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SingleSpec {}

impl Spec for SingleSpec {
    fn build(self, _page_size: Option<u64>, _keys: &dyn KeyReader) -> Result<Style, JobError> {
        Ok(Style::None)
    }
}

/// What a strategy asks of the next request, on top of the job's own request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageRequest {
    /// A URL the server gave (next link): requested as is, instead of the job's URL and params.
    pub url: Option<Url>,
    pub query: Vec<(String, String)>,
    /// Dotted paths into the JSON body and the values to put there.
    pub body: Vec<(String, Value)>,
    pub headers: Vec<(String, String)>,
}

impl PageRequest {
    /// Put one pagination parameter where the job wants it.
    pub fn set(&mut self, place: ParamsIn, name: &str, value: Value) {
        match place {
            ParamsIn::Query => self.query.push((name.to_string(), value_text(&value))),
            ParamsIn::Body => self.body.push((name.to_string(), value)),
            ParamsIn::Header => self.headers.push((name.to_string(), value_text(&value))),
        }
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A response as a strategy sees it.
pub struct PageResponse<'a> {
    pub status: u16,
    pub headers: &'a HeaderMap,
    /// The URL that answered (after redirects): relative links resolve against it.
    pub url: &'a Url,
    pub doc: &'a Document<'a>,
    /// How many records the page held.
    pub records: u64,
    /// The job's secrets: what a strategy remembers of a response never holds one.
    pub secrets: &'a Redactor,
}

impl PageResponse<'_> {
    /// The first value of a response header, if present and not blank.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// What offset and page pagination read from a response: counts only, so that pages fetched
/// out of order can be judged in order later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub status: u16,
    pub records: u64,
    pub total: Option<u64>,
    pub total_pages: Option<u64>,
}

/// What comes after a page.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Request(PageRequest),
    Done(StopReason),
}

/// Pages that can be fetched independently of each other: `start`, `start + step`, ... up to
/// `end` (exclusive, in the strategy's own unit: an offset or a page number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub start: u64,
    pub step: u64,
    pub end: Option<u64>,
}

/// The state of one partition's pagination, whatever the strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Paginator {
    Offset(offset::Offset),
    Page(page_number::Page),
    Cursor(cursor::Cursor),
    NextUrl(next_url::NextUrl),
    LinkHeader(link_header::LinkHeader),
    None { done: bool },
}

impl Paginator {
    pub fn new(style: &Style) -> Self {
        match style {
            Style::Offset(c) => Paginator::Offset(offset::Offset::new(c)),
            Style::Page(c) => Paginator::Page(page_number::Page::new(c)),
            Style::Cursor(_) => Paginator::Cursor(cursor::Cursor::default()),
            Style::NextUrl(_) => Paginator::NextUrl(next_url::NextUrl::default()),
            Style::LinkHeader(_) => Paginator::LinkHeader(link_header::LinkHeader::default()),
            Style::None => Paginator::None { done: false },
        }
    }

    /// The first request of the partition.
    pub fn first(&self, style: &Style) -> PageRequest {
        match (self, style) {
            (Paginator::Offset(s), Style::Offset(c)) => s.request(c),
            (Paginator::Page(s), Style::Page(c)) => s.request(c),
            (Paginator::Cursor(s), Style::Cursor(c)) => s.request(c),
            (Paginator::NextUrl(_), Style::NextUrl(c)) => first_with_limit(c.limit_param.as_deref(), c.page_size),
            (Paginator::LinkHeader(_), Style::LinkHeader(c)) => first_with_limit(c.limit_param.as_deref(), c.page_size),
            _ => PageRequest::default(),
        }
    }

    /// Digest a response; returns the next request or why the partition is done.
    pub fn next(&mut self, style: &Style, response: &PageResponse) -> Result<Next, PageError> {
        match (self, style) {
            (Paginator::Offset(s), Style::Offset(c)) => Ok(s.next(c, response)?),
            (Paginator::Page(s), Style::Page(c)) => Ok(s.next(c, response)?),
            (Paginator::Cursor(s), Style::Cursor(c)) => s.next(c, response),
            (Paginator::NextUrl(s), Style::NextUrl(c)) => s.next(c, response),
            (Paginator::LinkHeader(s), Style::LinkHeader(_)) => s.next(response),
            (Paginator::None { done }, _) => {
                *done = true;
                Ok(Next::Done(StopReason::SinglePage))
            }
            (state, style) => unreachable!("pagination state {state:?} does not match the job's {}", style.kind()),
        }
    }

    /// True when a 404, 400 or 422 on the next page would mean the end rather than a failure:
    /// after a short page, or after the first page when no total is known.
    pub fn end_possible(&self, style: &Style) -> bool {
        match (self, style) {
            (Paginator::Offset(s), Style::Offset(c)) => s.end_possible(c),
            (Paginator::Page(s), Style::Page(c)) => s.end_possible(c),
            _ => false,
        }
    }

    /// The records the server announced for the partition, once a response said so.
    pub fn expected_records(&self, style: &Style) -> Option<u64> {
        match (self, style) {
            (Paginator::Offset(s), Style::Offset(_)) => s.total,
            (Paginator::Page(s), Style::Page(_)) => s.total.or_else(|| Some(s.total_pages? * s.served?)),
            _ => None,
        }
    }

    /// Offset and page: the pages that could be fetched independently from here on, in the
    /// strategy's unit (an offset or a page number).
    pub fn independent(&self, style: &Style) -> Option<PageRange> {
        match (self, style) {
            (Paginator::Offset(s), Style::Offset(c)) => Some(s.range(c)),
            (Paginator::Page(s), Style::Page(c)) => Some(s.range(c)),
            _ => None,
        }
    }

    /// Offset and page: the request for the page at `position` (from [`Self::independent`]).
    pub fn request_at(style: &Style, position: u64) -> Option<PageRequest> {
        match style {
            Style::Offset(c) => Some(offset::Offset::request_at(c, position)),
            Style::Page(c) => Some(page_number::Page::request_at(c, position)),
            _ => None,
        }
    }

    /// Offset and page: what the strategy reads from a response.
    pub fn facts(style: &Style, response: &PageResponse) -> Result<Option<Facts>, PageError> {
        match style {
            Style::Offset(c) => offset::Offset::facts(c, response).map(Some),
            Style::Page(c) => page_number::Page::facts(c, response).map(Some),
            _ => Ok(None),
        }
    }

    /// Offset and page: move past the page at [`Self::independent`]'s start, in order.
    pub fn advance(&mut self, style: &Style, facts: &Facts) -> Next {
        match (self, style) {
            (Paginator::Offset(s), Style::Offset(c)) => s.advance(c, facts),
            (Paginator::Page(s), Style::Page(c)) => s.advance(c, facts),
            (state, style) => unreachable!("{state:?} has no independent pages ({})", style.kind()),
        }
    }

    /// The cursors and URLs remembered since the last call, hashed (see [`Seen`]).
    pub fn take_seen(&mut self) -> Vec<u64> {
        match self {
            Paginator::Cursor(s) => s.seen.take_fresh(),
            Paginator::NextUrl(s) => s.seen.take_fresh(),
            Paginator::LinkHeader(s) => s.seen.take_fresh(),
            _ => Vec::new(),
        }
    }

    /// Remember again what a checkpoint kept of [`Paginator::take_seen`].
    pub fn restore_seen(&mut self, hashes: &[u64]) {
        match self {
            Paginator::Cursor(s) => s.seen.restore(hashes),
            Paginator::NextUrl(s) => s.seen.restore(hashes),
            Paginator::LinkHeader(s) => s.seen.restore(hashes),
            _ => {}
        }
    }

    /// The name of the parameter that sets the page size, for error messages.
    pub fn size_param(style: &Style) -> Option<(&str, u64)> {
        match style {
            Style::Offset(c) => Some((c.limit_param.as_str(), c.page_size)),
            Style::Page(c) => c.size_param.as_deref().zip(c.page_size),
            Style::Cursor(c) => c.limit_param.as_deref().zip(c.page_size),
            Style::NextUrl(c) => c.limit_param.as_deref().zip(c.page_size),
            Style::LinkHeader(c) => c.limit_param.as_deref().zip(c.page_size),
            Style::None => None,
        }
    }
}

fn first_with_limit(limit_param: Option<&str>, page_size: Option<u64>) -> PageRequest {
    let mut request = PageRequest::default();
    if let (Some(name), Some(size)) = (limit_param, page_size) {
        request.set(ParamsIn::Query, name, Value::from(size));
    }
    request
}

/// Cursors and URLs seen in one partition, remembered as 64-bit hashes (8 bytes a page), so
/// a server that links back to a page it served ends the harvest with an error, not a loop.
/// A checkpoint keeps them apart from the rest of the state (the pages written hand theirs to
/// the sink), so that saving the state costs the same on page ten and page a million.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    hashes: HashSet<u64>,
    /// Inserted since the last [`Seen::take_fresh`].
    fresh: Vec<u64>,
}

impl Seen {
    /// Remember `value`; false if it was seen before. What is hashed is the value with each
    /// secret sealed (see [`Redactor::seal`]): a checkpoint keeps these hashes, and they must
    /// hold no trace of a secret, nor change when a key that servers copy into their next
    /// links is rotated between a crash and its resume.
    pub fn insert(&mut self, value: &str, secrets: &Redactor) -> bool {
        // SipHash with fixed keys: the same value hashes the same after a resume.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        secrets.seal(value).hash(&mut hasher);
        let hash = hasher.finish();
        let new = self.hashes.insert(hash);
        if new {
            self.fresh.push(hash);
        }
        new
    }

    fn take_fresh(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.fresh)
    }

    fn restore(&mut self, hashes: &[u64]) {
        self.hashes.extend(hashes);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Run `f` with a response made of a JSON body, headers and a URL.
    pub fn with_response<T>(
        body: &str,
        headers: &[(&str, &str)],
        url: &str,
        records: u64,
        f: impl FnOnce(&PageResponse) -> T,
    ) -> T {
        let doc = Document::parse(body.as_bytes()).unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let url = Url::parse(url).unwrap();
        let secrets = Redactor::default();
        let response = PageResponse { status: 200, headers: &map, url: &url, doc: &doc, records, secrets: &secrets };
        f(&response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_reason_is_named_as_the_manifest_writes_it() {
        for reason in StopReason::EVERY {
            assert_eq!(serde_json::to_value(&reason).unwrap()["reason"], reason.name());
        }
    }
}
