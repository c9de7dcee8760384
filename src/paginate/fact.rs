//! Where a pagination fact is read: a total, a page count, a has-more flag, the next cursor or
//! the next link. Many APIs put them in the body (`$.total`); as many put them in headers:
//! `X-Total-Count` (json-server, Express and Rails APIs), a JSON `X-Pagination` header
//! (flask-smorest, ASP.NET), `Content-Range: items 0-99/5000` (PostgREST, react-admin
//! backends), `X-Total`, `X-Total-Pages` and `X-Next-Page` (GitLab), Salesforce's
//! `Sforce-Locator`. A fact is read the same way whichever strategy asks, and a missing one is
//! missing wherever it was looked for.

use std::fmt;
use std::ops::Range;

use crate::error::{JobError, PageError};
use crate::jsonpath::{Document, JsonPath, Kind, Node};
use crate::keys::{KeyReader, Spanned};

use super::PageResponse;

/// Where a fact is read.
#[derive(Debug, Clone)]
pub enum Fact {
    /// A JSONPath into the body: `total = "$.total"`.
    Body(JsonPath),
    /// A response header's value: `total = { header = "X-Total-Count" }`. A count read from
    /// `Content-Range` is its complete length, as RFC 9110 writes it.
    Header(String),
    /// A JSONPath into a header whose value is JSON:
    /// `total = { header = "X-Pagination", path = "$.total" }`.
    HeaderJson { header: String, path: JsonPath },
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::Body(path) => write!(f, "{path}"),
            Fact::Header(name) => write!(f, "the {name} header"),
            Fact::HeaderJson { header, path } => write!(f, "{path} in the {header} header"),
        }
    }
}

/// What was found where a fact is read: nothing, a header's text, or a JSON node.
enum Located<'d> {
    Missing,
    Text(String),
    Node(Node<'d>),
}

impl Fact {
    /// The fact as text: `None` when missing, null or empty (and, from a header, the text
    /// `null`: Salesforce's last `Sforce-Locator`).
    pub fn text(&self, response: &PageResponse) -> Result<Option<String>, PageError> {
        self.with(response, |found| {
            Ok(match found {
                Located::Missing => None,
                Located::Text(text) => Some(text).filter(|t| t != "null"),
                Located::Node(node) => node.as_text().filter(|t| !t.is_empty()),
            })
        })
    }

    /// A count: a number, or a string of digits; from `Content-Range`, the complete length
    /// (`items 0-99/5000`: 5000; `*/5000`: 5000; `0-99/*`: none).
    pub fn count(&self, response: &PageResponse) -> Result<Option<u64>, PageError> {
        if let Fact::Header(name) = self {
            if name.eq_ignore_ascii_case("content-range") {
                return match response.header(name) {
                    Some(value) => content_range_total(value).map_err(|why| {
                        PageError::Pagination(format!(
                            "the {name} header {value:?} is not a range RFC 9110 knows: {why}"
                        ))
                    }),
                    None => Ok(None),
                };
            }
        }
        let Some(text) = self.text(response)? else { return Ok(None) };
        let count = text.parse::<u64>().or_else(|_| text.parse::<f64>().map(|f| f.max(0.0) as u64));
        match count {
            Ok(count) => Ok(Some(count)),
            Err(_) => Err(PageError::Pagination(format!("{self} should be a count, but the response has {text:?}"))),
        }
    }

    /// A has-more flag: `true`/`false`, `"true"`/`"false"`, `1`/`0`, yes/no; `None` when absent.
    pub fn flag(&self, response: &PageResponse) -> Result<Option<bool>, PageError> {
        self.with(response, |found| {
            let (text, shown) = match found {
                Located::Missing => return Ok(None),
                Located::Node(node) if node.kind() == Kind::Null => return Ok(None),
                Located::Node(node) => (node.as_text(), node.to_compact_string()),
                Located::Text(text) => (Some(text.clone()), format!("{text:?}")),
            };
            match text.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("true" | "1" | "yes") => Ok(Some(true)),
                Some("false" | "0" | "no" | "") => Ok(Some(false)),
                _ => Err(PageError::Pagination(format!("{self} should be a boolean, but the response has {shown}"))),
            }
        })
    }

    fn with<T>(
        &self,
        response: &PageResponse,
        read: impl FnOnce(Located) -> Result<T, PageError>,
    ) -> Result<T, PageError> {
        match self {
            Fact::Body(path) => match path.first(response.doc).map_err(|why| PageError::Pagination(why.to_string()))? {
                Some(node) => read(Located::Node(node)),
                None => read(Located::Missing),
            },
            Fact::Header(name) => match response.header(name) {
                Some(value) => read(Located::Text(value.to_string())),
                None => read(Located::Missing),
            },
            Fact::HeaderJson { header, path } => {
                let Some(value) = response.header(header) else { return read(Located::Missing) };
                let doc = Document::parse(value.as_bytes()).map_err(|e| {
                    PageError::Pagination(format!("the {header} header is not JSON ({e}): {}", excerpt(value)))
                })?;
                match path.first(&doc).map_err(|why| PageError::Pagination(why.to_string()))? {
                    Some(node) => read(Located::Node(node)),
                    None => read(Located::Missing),
                }
            }
        }
    }

    /// A fact's key if the job gives it (see [`Fact::read`]).
    pub fn optional(
        keys: &dyn KeyReader,
        value: &Option<Spanned<toml::Value>>,
        key: &str,
    ) -> Result<Option<Fact>, JobError> {
        match value {
            Some(v) => Fact::read(keys, v, key),
            None => Ok(None),
        }
    }

    /// Read a fact's key as the job file writes it: a JSONPath, `{ header = "X" }` or
    /// `{ header = "X", path = "$.total" }`. A blank path means none.
    pub fn read(keys: &dyn KeyReader, value: &Spanned<toml::Value>, key: &str) -> Result<Option<Fact>, JobError> {
        let span = value.span();
        let text = |text: &str| Spanned::new(span.clone(), text.to_string());
        let shape = || {
            format!("{key} must be a JSONPath (\"$.total\"), {{ header = \"X-Total-Count\" }} or {{ header = \"X-Pagination\", path = \"$.total\" }}")
        };
        match value.get_ref() {
            toml::Value::String(path) if path.trim().is_empty() => Ok(None),
            toml::Value::String(path) => Ok(Some(Fact::Body(keys.path(&text(path))?))),
            toml::Value::Table(table) => {
                if let Some(other) = table.keys().find(|k| !matches!(k.as_str(), "header" | "path")) {
                    return Err(keys.error(span, format!("unknown key `{other}` in {key}: {}", shape())));
                }
                let header = match table.get("header") {
                    Some(toml::Value::String(name)) => header_name(keys, span.clone(), key, name)?,
                    _ => return Err(keys.error(span, shape())),
                };
                match table.get("path") {
                    None => Ok(Some(Fact::Header(header))),
                    Some(toml::Value::String(path)) => {
                        Ok(Some(Fact::HeaderJson { header, path: keys.path(&text(path))? }))
                    }
                    Some(_) => Err(keys.error(span, format!("{key}.path must be a JSONPath such as \"$.total\""))),
                }
            }
            _ => Err(keys.error(span, shape())),
        }
    }
}

fn header_name(keys: &dyn KeyReader, span: Range<usize>, key: &str, name: &str) -> Result<String, JobError> {
    match reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()) {
        Ok(_) => Ok(name.trim().to_string()),
        Err(_) => Err(keys.error(span, format!("{key}.header {name:?} is not a header name"))),
    }
}

fn excerpt(text: &str) -> String {
    match text.chars().count() > 80 {
        true => format!("{}...", text.chars().take(77).collect::<String>()),
        false => text.to_string(),
    }
}

/// The complete length in a `Content-Range` value (RFC 9110, 14.4): `items 0-99/5000` and
/// `bytes */5000` give 5000; an unknown length (`0-99/*`) gives none. PostgREST writes it
/// without a unit (`0-99/5000`), which is taken too.
fn content_range_total(value: &str) -> Result<Option<u64>, BadRange> {
    let range = value.trim().rsplit_once(' ').map_or(value.trim(), |(_, range)| range);
    let (span, complete) = range.split_once('/').ok_or(BadRange::NoLength)?;
    let span_ok = span == "*"
        || span.split_once('-').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
    if !span_ok {
        return Err(BadRange::Span(span.to_string()));
    }
    match complete {
        "*" => Ok(None),
        digits => digits.parse::<u64>().map(Some).map_err(|_| BadRange::Length(digits.to_string())),
    }
}

/// What is wrong with a `Content-Range` value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BadRange {
    #[error("no `/` before the complete length")]
    NoLength,
    #[error("{0:?} is not first-last or *")]
    Span(String),
    #[error("{0:?} is not a length or *")]
    Length(String),
}

#[cfg(test)]
mod tests {
    use super::super::test_support::with_response;
    use super::*;

    #[test]
    fn content_range_is_read_as_rfc_9110_writes_it() {
        assert_eq!(content_range_total("items 0-99/5000"), Ok(Some(5000)));
        assert_eq!(content_range_total("items */5000"), Ok(Some(5000)));
        assert_eq!(content_range_total("0-24/3573458"), Ok(Some(3573458)));
        assert_eq!(content_range_total("items 0-99/*"), Ok(None));
        assert!(content_range_total("items 0-99/abc").is_err());
        assert!(content_range_total("items 0-99").is_err());
        assert!(content_range_total("items a-b/10").is_err());
    }

    fn fact(text: &str) -> Fact {
        match text.split_once(' ') {
            Some((header, path)) => Fact::HeaderJson { header: header.into(), path: JsonPath::parse(path).unwrap() },
            None if text.starts_with('$') => Fact::Body(JsonPath::parse(text).unwrap()),
            None => Fact::Header(text.into()),
        }
    }

    #[test]
    fn counts_flags_and_text_from_the_body_a_header_or_json_in_a_header() {
        let headers = [
            ("X-Total-Count", "95"),
            ("X-Pagination", r#"{"total": 95, "total_pages": 10, "more": true}"#),
            ("Content-Range", "items 0-9/95"),
            ("X-Has-More", "false"),
            ("Sforce-Locator", "null"),
            ("X-Next-Cursor", "c2"),
        ];
        with_response(r#"{"total": "95", "next": null}"#, &headers, "http://h/x", 10, |r| {
            for where_ in ["$.total", "X-Total-Count", "X-Pagination $.total", "Content-Range"] {
                assert_eq!(fact(where_).count(r).unwrap(), Some(95), "{where_}");
            }
            assert_eq!(fact("X-Pagination $.total_pages").count(r).unwrap(), Some(10));
            assert_eq!(fact("X-Missing").count(r).unwrap(), None, "an absent header is a missing fact");
            assert_eq!(fact("X-Pagination $.nothing").count(r).unwrap(), None);
            assert_eq!(fact("X-Pagination $.more").flag(r).unwrap(), Some(true));
            assert_eq!(fact("X-Has-More").flag(r).unwrap(), Some(false));
            assert_eq!(fact("X-Next-Cursor").text(r).unwrap().as_deref(), Some("c2"));
            assert_eq!(fact("Sforce-Locator").text(r).unwrap(), None, "the text null is no cursor");
            assert_eq!(fact("$.next").text(r).unwrap(), None);
        });
    }

    #[test]
    fn a_malformed_header_is_an_error_naming_it() {
        let headers = [("Content-Range", "items 0-99/abc"), ("X-Pagination", "{total: 5"), ("X-Total-Count", "many")];
        with_response("{}", &headers, "http://h/x", 10, |r| {
            let range = fact("Content-Range").count(r).unwrap_err().to_string();
            assert!(range.contains("Content-Range header \"items 0-99/abc\""), "{range}");
            let json = fact("X-Pagination $.total").count(r).unwrap_err().to_string();
            assert!(json.contains("the X-Pagination header is not JSON"), "{json}");
            let count = fact("X-Total-Count").count(r).unwrap_err().to_string();
            assert!(count.contains("the X-Total-Count header should be a count"), "{count}");
        });
    }
}
