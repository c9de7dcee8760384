//! Pagination strategies: small state machines, one file each, no HTTP inside.
//!
//! A strategy answers three questions: what is the first request, given this response what
//! is the next request (or why do we stop), and, for offset and page, which pages could be
//! fetched independently. It reads a response (status, headers, URL and a parsed body) into a
//! [`Reading`] where the page is decoded, and moves on from that reading later, in order, so
//! each one is unit-tested without a server. A [`Strategy`] holds its configuration (compiled
//! paths, parameter names: a [`Style`], shared by every partition) and one partition's state,
//! plain serde data that a checkpoint stores and a resume rebuilds.
//!
//! Each strategy's file also owns its job-file keys: a [`Spec`] struct with their defaults,
//! built into its configuration. Adding a kind touches its file, [`Style`] and the list of
//! kinds in `job/pagination.rs`.

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
use std::sync::Arc;

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
    Offset(Arc<offset::Config>),
    Page(Arc<page_number::Config>),
    Cursor(Arc<cursor::Config>),
    NextUrl(Arc<next_url::Config>),
    LinkHeader(Arc<link_header::Config>),
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

/// What a strategy reads of one response: all it needs to move on, owned. A page is read
/// where it is decoded (once, on the task that fetched it, inside the retry loop, so a
/// malformed next cursor fails the page there); the pagination moves on later, in order,
/// outside it ([`Strategy::advance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub status: u16,
    /// How many records the page held.
    pub records: u64,
    /// The URL that answered (after redirects): relative links resolve against it.
    pub url: Url,
    /// Offset and page: the record total and the page count the response announced.
    pub total: Option<u64>,
    pub total_pages: Option<u64>,
    /// Cursor: what `has_more` said.
    pub has_more: Option<bool>,
    /// Cursor: the next cursor; next URL and Link header: the next link as the response wrote it.
    pub next: Option<String>,
}

impl Reading {
    /// The status, the records and the URL; nothing read yet.
    pub fn of(response: &PageResponse) -> Self {
        Reading {
            status: response.status,
            records: response.records,
            url: response.url.clone(),
            total: None,
            total_pages: None,
            has_more: None,
            next: None,
        }
    }
}

/// What comes after a page.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Request(PageRequest),
    Done(StopReason),
}

/// Pages that can be fetched independently of each other: `start`, `start + step`, ... up to
/// `end` (exclusive, in the strategy's unit: an offset or a page number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub start: u64,
    pub step: u64,
    pub end: Option<u64>,
}

/// One partition's pagination: a strategy's configuration and where the partition stands in
/// it. Made by [`Style::start`] or, from a checkpoint, [`Style::resume`].
pub trait Strategy: std::fmt::Debug + Send + Sync {
    /// The request for the page the partition stands at (its first, on a fresh start).
    fn first(&self) -> PageRequest;

    /// Move past a page, in order: the next request, or why the partition is done.
    fn advance(&mut self, reading: &Reading, secrets: &Redactor) -> Result<Next, PageError>;

    /// True when a 404, 400 or 422 on the next page would mean the end rather than a failure:
    /// after a short page, or after the first page when no total is known.
    fn end_possible(&self) -> bool {
        false
    }

    /// The records the server announced for the partition, once a response said so.
    fn expected_records(&self) -> Option<u64> {
        None
    }

    /// Offset and page: the pages that could be fetched independently from here on, in the
    /// strategy's unit (their requests: [`Style::request_at`]).
    fn independent(&self) -> Option<PageRange> {
        None
    }

    /// The cursors and URLs it has followed, for the strategies that follow them.
    fn seen(&mut self) -> Option<&mut Seen> {
        None
    }

    /// Where the partition stands, as a checkpoint keeps it (`{"kind": ..., ...}`).
    fn save(&self) -> Value;

    /// The cursors and URLs remembered since the last call, hashed (see [`Seen`]).
    fn take_seen(&mut self) -> Vec<u64> {
        self.seen().map(Seen::take_fresh).unwrap_or_default()
    }

    /// Remember again what a checkpoint kept of [`Strategy::take_seen`].
    fn restore_seen(&mut self, hashes: &[u64]) {
        if let Some(seen) = self.seen() {
            seen.restore(hashes);
        }
    }
}

/// A strategy's configuration with one partition's state of it: what each strategy's file
/// implements [`Strategy`] for.
#[derive(Debug)]
pub struct Walk<C, S> {
    pub config: Arc<C>,
    pub state: S,
}

impl<C, S: Serialize> Walk<C, S> {
    /// The state as a checkpoint keeps it, its kind first.
    fn saved(&self, kind: &str) -> Value {
        let mut saved = serde_json::Map::new();
        saved.insert("kind".into(), Value::from(kind));
        if let Value::Object(fields) = serde_json::to_value(&self.state).expect("a pagination state serializes") {
            saved.extend(fields);
        }
        Value::Object(saved)
    }
}

/// Offset and page numbers: a state moved on by counts alone, whose pages can be asked for
/// on their own once it knows the step. One [`Strategy`] impl serves both.
pub trait Numbered: Serialize + std::fmt::Debug + Send + Sync {
    type Config: std::fmt::Debug + Send + Sync;
    /// The kind, as a checkpoint names it.
    const KIND: &'static str;

    /// The request for the page the state stands at.
    fn request(&self, config: &Self::Config) -> PageRequest;

    /// Move past a page, judged by what was read of it, in order.
    fn advance(&mut self, config: &Self::Config, reading: &Reading) -> Next;

    /// A 404, 400 or 422 on the next page would be past the end.
    fn end_possible(&self, config: &Self::Config) -> bool;

    /// The pages from here on, in the state's unit.
    fn range(&self, config: &Self::Config) -> PageRange;

    /// The records the server announced, once it said so.
    fn expected(&self) -> Option<u64>;
}

impl<S: Numbered> Strategy for Walk<S::Config, S> {
    fn first(&self) -> PageRequest {
        self.state.request(&self.config)
    }

    fn advance(&mut self, reading: &Reading, _secrets: &Redactor) -> Result<Next, PageError> {
        Ok(self.state.advance(&self.config, reading))
    }

    fn end_possible(&self) -> bool {
        self.state.end_possible(&self.config)
    }

    fn expected_records(&self) -> Option<u64> {
        self.state.expected()
    }

    fn independent(&self) -> Option<PageRange> {
        Some(self.state.range(&self.config))
    }

    fn save(&self) -> Value {
        self.saved(S::KIND)
    }
}

/// `kind = "none"`: one request, then done.
#[derive(Debug, Serialize, Deserialize)]
pub struct Single {
    done: bool,
}

impl Strategy for Single {
    fn first(&self) -> PageRequest {
        PageRequest::default()
    }

    fn advance(&mut self, _reading: &Reading, _secrets: &Redactor) -> Result<Next, PageError> {
        self.done = true;
        Ok(Next::Done(StopReason::SinglePage))
    }

    fn save(&self) -> Value {
        serde_json::json!({ "kind": "none", "done": self.done })
    }
}

/// Why a checkpoint's pagination state cannot be taken up.
#[derive(Debug, thiserror::Error)]
pub enum Unresumable {
    #[error("it was saved by {saved:?} pagination and the job's is {job:?}")]
    OtherKind { saved: String, job: &'static str },
    #[error("{0}")]
    State(serde_json::Error),
}

impl Style {
    /// A partition's pagination from its first page.
    pub fn start(&self) -> Box<dyn Strategy> {
        match self {
            Style::Offset(c) => Box::new(Walk { state: offset::Offset::new(c), config: c.clone() }),
            Style::Page(c) => Box::new(Walk { state: page_number::Page::new(c), config: c.clone() }),
            Style::Cursor(c) => Box::new(Walk { state: cursor::Cursor::default(), config: c.clone() }),
            Style::NextUrl(c) => Box::new(Walk { state: next_url::NextUrl::default(), config: c.clone() }),
            Style::LinkHeader(c) => Box::new(Walk { state: link_header::LinkHeader::default(), config: c.clone() }),
            Style::None => Box::new(Single { done: false }),
        }
    }

    /// A partition's pagination where a checkpoint ([`Strategy::save`]) left it.
    pub fn resume(&self, saved: &Value) -> Result<Box<dyn Strategy>, Unresumable> {
        let kind = saved.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != self.kind() {
            return Err(Unresumable::OtherKind { saved: kind.to_string(), job: self.kind() });
        }
        fn state<S: DeserializeOwned>(saved: &Value) -> Result<S, Unresumable> {
            S::deserialize(saved).map_err(Unresumable::State)
        }
        Ok(match self {
            Style::Offset(c) => Box::new(Walk { state: state::<offset::Offset>(saved)?, config: c.clone() }),
            Style::Page(c) => Box::new(Walk { state: state::<page_number::Page>(saved)?, config: c.clone() }),
            Style::Cursor(c) => Box::new(Walk { state: state::<cursor::Cursor>(saved)?, config: c.clone() }),
            Style::NextUrl(c) => Box::new(Walk { state: state::<next_url::NextUrl>(saved)?, config: c.clone() }),
            Style::LinkHeader(c) => {
                Box::new(Walk { state: state::<link_header::LinkHeader>(saved)?, config: c.clone() })
            }
            Style::None => Box::new(state::<Single>(saved)?),
        })
    }

    /// What the strategy reads of a response (see [`Reading`]).
    pub fn read(&self, response: &PageResponse) -> Result<Reading, PageError> {
        match self {
            Style::Offset(c) => offset::Offset::read(c, response),
            Style::Page(c) => page_number::Page::read(c, response),
            Style::Cursor(c) => cursor::Cursor::read(c, response),
            Style::NextUrl(c) => next_url::NextUrl::read(c, response),
            Style::LinkHeader(_) => Ok(link_header::LinkHeader::read(response)),
            Style::None => Ok(Reading::of(response)),
        }
    }

    /// Offset and page: the request for the page at `position` (see [`Strategy::independent`]).
    pub fn request_at(&self, position: u64) -> Option<PageRequest> {
        match self {
            Style::Offset(c) => Some(offset::Offset::request_at(c, position)),
            Style::Page(c) => Some(page_number::Page::request_at(c, position)),
            _ => None,
        }
    }

    /// The name of the parameter that sets the page size, for error messages.
    pub fn size_param(&self) -> Option<(&str, u64)> {
        match self {
            Style::Offset(c) => Some((c.limit_param.as_str(), c.page_size)),
            Style::Page(c) => c.size_param.as_deref().zip(c.page_size),
            Style::Cursor(c) => c.limit_param.as_deref().zip(c.page_size),
            Style::NextUrl(c) => c.limit_param.as_deref().zip(c.page_size),
            Style::LinkHeader(c) => c.limit_param.as_deref().zip(c.page_size),
            Style::None => None,
        }
    }
}

/// The first request of a strategy that sends only a page size, if the job sets one.
pub(crate) fn first_with_limit(limit_param: Option<&str>, page_size: Option<u64>) -> PageRequest {
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
