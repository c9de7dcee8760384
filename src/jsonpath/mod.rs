//! JSONPath (RFC 9535) over response bodies, without rebuilding records.
//!
//! Every path is validated by `serde_json_path`. Paths made only of names, indexes and
//! wildcards (`$.data.items[*]`, `$[*]`, `$.meta['next-cursor']`, `$.data[-1].id`), which is
//! what nearly every job uses, are evaluated here over a borrowed [`RawValue`] parse: a record
//! is a slice of the response, written out with its whitespace removed, keys in their order and
//! numbers digit for digit. Other paths (filters, descendants, slices) are evaluated by the
//! crate over a `serde_json::Value`, and each node it finds is taken back from the raw response
//! by its location (a normalized path), so those records too are the server's own bytes.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::scan::{minify_into, split_array_into_lines};

mod raw;

use raw::{step, Members};

/// A compiled JSONPath.
#[derive(Clone)]
pub struct JsonPath {
    text: String,
    simple: Option<Vec<Segment>>,
    full: serde_json_path::JsonPath,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Name(String),
    Index(i64),
    Wildcard,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let full = serde_json_path::JsonPath::parse(text).map_err(|e| format!("invalid JSONPath {text:?}: {e}"))?;
        Ok(JsonPath { text: text.to_string(), simple: parse_simple(text), full })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The member names of a path made of names only (`$.meta.deleted` is `meta`, `deleted`):
    /// a field of a record, or of an object inside it.
    pub fn field_names(&self) -> Option<Vec<&str>> {
        let segments = self.simple.as_ref().filter(|s| !s.is_empty())?;
        segments
            .iter()
            .map(|segment| match segment {
                Segment::Name(name) => Some(name.as_str()),
                Segment::Index(_) | Segment::Wildcard => None,
            })
            .collect()
    }

    /// Evaluate the path; nodes come in document order.
    pub fn select<'d>(&self, doc: &'d Document<'_>) -> Result<Vec<Node<'d>>, PathError> {
        match &self.simple {
            Some(segments) => select_raw(doc, segments),
            None => {
                let value = doc.value()?;
                located_raw(doc, self.full.query_located(value))
            }
        }
    }

    /// The first node the path selects, if any.
    pub fn first<'d>(&self, doc: &'d Document<'_>) -> Result<Option<Node<'d>>, PathError> {
        Ok(self.select(doc)?.into_iter().next())
    }

    /// Write the records a page holds to `out`, one compact line each, and count them: the
    /// same records as [`Self::records`]. For the common `...[*]` over an array, the array's
    /// elements are split and compacted in one scan of its bytes (the parse that made the
    /// document has already validated them), without building a node per record.
    pub fn write_records(&self, doc: &Document<'_>, out: &mut Vec<u8>) -> Result<u64, RecordsError> {
        if let Some(Some((Segment::Wildcard, parents))) = self.simple.as_ref().map(|s| s.split_last()) {
            let mut count = 0;
            for node in select_raw(doc, parents).map_err(RecordsError::Invalid)? {
                match node.kind() {
                    Kind::Array => match node {
                        Node::Raw(raw) => count += split_array_into_lines(raw.get().as_bytes(), out),
                        Node::Value(_) => unreachable!("simple paths select raw nodes"),
                    },
                    Kind::Null => {}
                    found => return Err(RecordsError::NotAnArray { at: render(parents), found: found.name() }),
                }
            }
            return Ok(count);
        }
        let records = self.records(doc)?;
        for node in &records {
            node.write_compact(out);
            out.push(b'\n');
        }
        Ok(records.len() as u64)
    }

    /// The records a page holds: the nodes the path selects. The location before a final `[*]`
    /// must be an array (or missing or null: an empty page); a path that selects one array
    /// without a final wildcard selects its elements.
    pub fn records<'d>(&self, doc: &'d Document<'_>) -> Result<Vec<Node<'d>>, RecordsError> {
        if let Some(segments) = &self.simple {
            if let Some((Segment::Wildcard, parents)) = segments.split_last() {
                let mut records = Vec::new();
                for node in select_raw(doc, parents).map_err(RecordsError::Invalid)? {
                    match node.kind() {
                        Kind::Array => records.extend(node.elements().map_err(RecordsError::Invalid)?),
                        Kind::Null => {}
                        found => return Err(RecordsError::NotAnArray { at: render(parents), found: found.name() }),
                    }
                }
                return Ok(records);
            }
        }
        let nodes = self.select(doc).map_err(RecordsError::Invalid)?;
        match nodes.as_slice() {
            [node] if node.kind() == Kind::Array => node.elements().map_err(RecordsError::Invalid),
            [node] if node.kind() == Kind::Null => Ok(Vec::new()),
            _ => Ok(nodes),
        }
    }
}

#[derive(Debug)]
pub enum RecordsError {
    NotAnArray { at: String, found: &'static str },
    Invalid(PathError),
}

/// Why a path could not be followed in a document the parse accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PathError {
    /// A part of the document that is not the JSON it was taken for.
    #[error("{0}")]
    Json(Arc<serde_json::Error>),
    /// An element the full engine located, not in the raw document.
    #[error("no element {index} at {at}")]
    NoElement { index: usize, at: String },
}

impl From<serde_json::Error> for PathError {
    fn from(e: serde_json::Error) -> Self {
        PathError::Json(Arc::new(e))
    }
}

/// Why a body is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    /// It ended early (a cut body) rather than holding something else.
    pub cut_short: bool,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A parsed response body. Parsing reads the top level once, keeping each member (or
/// element) as a borrowed raw slice; paths start from there, so a page is scanned about
/// twice in all however many paths the job evaluates. A full `Value` is built only if a path
/// needs the full engine.
pub struct Document<'a> {
    text: &'a str,
    top: Top<'a>,
    root: OnceCell<Result<&'a RawValue, PathError>>,
    value: OnceCell<Result<Value, PathError>>,
}

enum Top<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    Array(Vec<&'a RawValue>),
    Scalar,
}

impl<'a> Document<'a> {
    /// Parse and validate a body (one pass).
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        // The SIMD check first; the standard library's only to describe a failure.
        let text = match simdutf8::basic::from_utf8(body) {
            Ok(text) => text,
            Err(_) => std::str::from_utf8(body).map_err(|e| ParseError {
                message: format!("not UTF-8: {e}"),
                // A multi-byte character cut at the very end: the body was cut short.
                cut_short: e.error_len().is_none(),
            })?,
        };
        let json = |e: serde_json::Error| ParseError { message: e.to_string(), cut_short: e.is_eof() };
        let top = match text.trim_start().as_bytes().first() {
            Some(b'{') => {
                let mut de = serde_json::Deserializer::from_str(text);
                let members = serde::Deserializer::deserialize_map(&mut de, Members).map_err(json)?;
                de.end().map_err(json)?;
                Top::Object(members)
            }
            Some(b'[') => Top::Array(serde_json::from_str(text).map_err(json)?),
            _ => {
                serde_json::from_str::<&RawValue>(text).map_err(json)?;
                Top::Scalar
            }
        };
        Ok(Document { text, top, root: OnceCell::new(), value: OnceCell::new() })
    }

    pub fn root(&self) -> Result<&'a RawValue, PathError> {
        self.root.get_or_init(|| Ok(serde_json::from_str(self.text)?)).clone()
    }

    /// The nodes one segment selects from the top level.
    fn top_step(&self, segment: &Segment) -> Vec<&'a RawValue> {
        match (&self.top, segment) {
            (Top::Object(members), Segment::Name(name)) => {
                members.iter().find(|(k, _)| k == name).map(|(_, v)| *v).into_iter().collect()
            }
            (Top::Object(members), Segment::Wildcard) => members.iter().map(|(_, v)| *v).collect(),
            (Top::Array(items), Segment::Wildcard) => items.clone(),
            (Top::Array(items), Segment::Index(index)) => {
                let at = if *index < 0 { items.len() as i64 + index } else { *index };
                usize::try_from(at).ok().and_then(|at| items.get(at)).copied().into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn value(&self) -> Result<&Value, PathError> {
        self.value.get_or_init(|| Ok(serde_json::from_str(self.text)?)).as_ref().map_err(Clone::clone)
    }
}

/// A node selected from a document.
#[derive(Debug, Clone, Copy)]
pub enum Node<'d> {
    Raw(&'d RawValue),
    Value(&'d Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

impl<'d> Node<'d> {
    pub fn kind(&self) -> Kind {
        match self {
            Node::Raw(raw) => raw_kind(raw),
            Node::Value(v) => match v {
                Value::Null => Kind::Null,
                Value::Bool(_) => Kind::Bool,
                Value::Number(_) => Kind::Number,
                Value::String(_) => Kind::String,
                Value::Array(_) => Kind::Array,
                Value::Object(_) => Kind::Object,
            },
        }
    }

    fn elements(&self) -> Result<Vec<Node<'d>>, PathError> {
        match self {
            Node::Raw(raw) => {
                let items: Vec<&'d RawValue> = serde_json::from_str(raw.get())?;
                Ok(items.into_iter().map(Node::Raw).collect())
            }
            Node::Value(Value::Array(items)) => Ok(items.iter().map(Node::Value).collect()),
            Node::Value(_) => Ok(Vec::new()),
        }
    }

    /// Append the node as compact JSON: the original bytes without insignificant whitespace.
    pub fn write_compact(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(raw) => minify_into(raw.get().as_bytes(), out),
            Node::Value(v) => serde_json::to_writer(out, v).expect("writing JSON to a Vec cannot fail"),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Node::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Node::Value(v) => (*v).clone(),
        }
    }

    /// A scalar as text: strings without quotes, numbers digit for digit; `None` for null,
    /// arrays and objects.
    pub fn as_text(&self) -> Option<String> {
        match self.to_value() {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Compact JSON text, for messages.
    pub fn to_compact_string(&self) -> String {
        let mut out = Vec::new();
        self.write_compact(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The nodes the full engine found, taken back from the raw document by their locations
/// (each a normalized path of names and indexes), so that a record a filter selects is the
/// server's own bytes, escapes and number forms included, as with simple paths. Matches
/// mostly share one array: its elements are split once and indexed.
fn located_raw<'d>(
    doc: &'d Document<'_>,
    located: serde_json_path::LocatedNodeList<'_>,
) -> Result<Vec<Node<'d>>, PathError> {
    use serde_json_path::PathElement;
    let mut out = Vec::new();
    let mut siblings: Option<(Vec<Segment>, Vec<&'d RawValue>)> = None;
    for node in located {
        let path: Vec<Segment> = node
            .location()
            .iter()
            .map(|element| match element {
                PathElement::Name(name) => Segment::Name(name.to_string()),
                PathElement::Index(index) => Segment::Index(*index as i64),
            })
            .collect();
        match path.split_last() {
            Some((Segment::Index(index), parent)) => {
                if siblings.as_ref().is_none_or(|(at, _)| at.as_slice() != parent) {
                    let items = match select_raw(doc, parent)?.into_iter().next() {
                        Some(Node::Raw(array)) => serde_json::from_str(array.get())?,
                        _ => Vec::new(),
                    };
                    siblings = Some((parent.to_vec(), items));
                }
                let items = &siblings.as_ref().expect("set above").1;
                let index = *index as usize;
                let at = || render(parent);
                let item = items.get(index).ok_or_else(|| PathError::NoElement { index, at: at() })?;
                out.push(Node::Raw(item));
            }
            _ => out.extend(select_raw(doc, &path)?),
        }
    }
    Ok(out)
}

/// Evaluate name, index and wildcard segments over raw slices.
fn select_raw<'d>(doc: &'d Document<'_>, segments: &[Segment]) -> Result<Vec<Node<'d>>, PathError> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(vec![Node::Raw(doc.root()?)]);
    };
    let mut nodes = doc.top_step(first);
    for segment in rest {
        let mut next = Vec::new();
        for node in nodes {
            step(node, segment, &mut next)?;
        }
        nodes = next;
    }
    Ok(nodes.into_iter().map(Node::Raw).collect())
}

fn raw_kind(raw: &RawValue) -> Kind {
    kind_of(raw.get().trim_start().as_bytes())
}

/// The kind of the valid JSON value that `text` starts with (no leading whitespace).
pub fn kind_of(text: &[u8]) -> Kind {
    match text.first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// Parse the subset of RFC 9535 evaluated over raw slices: `$`, then `.name`, `['name']`,
/// `["name"]`, `[n]`, `[*]` or `.*`. Anything else returns `None` and goes to the full engine.
fn parse_simple(text: &str) -> Option<Vec<Segment>> {
    let mut rest = text.strip_prefix('$')?;
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(".*") {
            segments.push(Segment::Wildcard);
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            if r.starts_with('.') {
                return None;
            }
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let name = &r[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_' || !c.is_ascii()) {
                return None;
            }
            segments.push(Segment::Name(name.to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            rest = &r[end + 1..];
            if inner == "*" {
                segments.push(Segment::Wildcard);
            } else if let Ok(i) = inner.parse::<i64>() {
                segments.push(Segment::Index(i));
            } else {
                let quote = inner.chars().next()?;
                if !(quote == '\'' || quote == '"') || inner.len() < 2 || !inner.ends_with(quote) {
                    return None;
                }
                let name = &inner[1..inner.len() - 1];
                if name.contains(['\\', '\'', '"']) {
                    return None;
                }
                segments.push(Segment::Name(name.to_string()));
            }
        } else {
            return None;
        }
    }
    Some(segments)
}

fn render(segments: &[Segment]) -> String {
    let mut out = String::from("$");
    for segment in segments {
        match segment {
            Segment::Name(n) => {
                out.push('.');
                out.push_str(n);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
            Segment::Wildcard => out.push_str("[*]"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &str, body: &str) -> Vec<String> {
        let doc = Document::parse(body.as_bytes()).unwrap();
        let path = JsonPath::parse(path).unwrap();
        path.records(&doc).unwrap().iter().map(Node::to_compact_string).collect()
    }

    #[test]
    fn raw_records_keep_bytes_and_drop_whitespace() {
        let body = r#"{ "total": 2, "items": [ {"b": 1, "a": "x y\"  z", "big": 123456789012345678901234567890.50},
            {"id": 18446744073709551617, "n": null} ] }"#;
        assert_eq!(
            records("$.items[*]", body),
            vec![
                r#"{"b":1,"a":"x y\"  z","big":123456789012345678901234567890.50}"#,
                r#"{"id":18446744073709551617,"n":null}"#
            ]
        );
        assert_eq!(records("$.items", body).len(), 2);
    }

    #[test]
    fn splitting_arrays_matches_the_node_path() {
        let bodies = [
            r#"{"items": [ {"a": [1, {"b": "x,]y"}], "s": "q\\"}, 2 , "three", [], {}, null, true, -1.5e3 ] }"#,
            r#"{"items": []}"#,
            r#"{"items": [ ]}"#,
            r#"{"items": [{"only": "one"}]}"#,
        ];
        let path = JsonPath::parse("$.items[*]").unwrap();
        for body in bodies {
            let doc = Document::parse(body.as_bytes()).unwrap();
            let mut fast = Vec::new();
            let count = path.write_records(&doc, &mut fast).unwrap();
            let mut slow = Vec::new();
            let nodes = path.records(&doc).unwrap();
            for node in &nodes {
                node.write_compact(&mut slow);
                slow.push(b'\n');
            }
            assert_eq!(count, nodes.len() as u64, "{body}");
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap(), "{body}");
        }
    }

    #[test]
    fn simple_paths() {
        assert_eq!(
            parse_simple("$.a['b-c'][0][*].*"),
            Some(vec![
                Segment::Name("a".into()),
                Segment::Name("b-c".into()),
                Segment::Index(0),
                Segment::Wildcard,
                Segment::Wildcard
            ])
        );
        assert_eq!(parse_simple("$..a"), None);
        assert_eq!(parse_simple("$.a[?@.x]"), None);
    }

    #[test]
    fn missing_or_null_is_empty_and_object_is_an_error() {
        assert!(records("$.items[*]", r#"{"items": null}"#).is_empty());
        assert!(records("$.items[*]", r#"{"other": 1}"#).is_empty());
        let doc = Document::parse(br#"{"items": {"a": 1}}"#).unwrap();
        let err = JsonPath::parse("$.items[*]").unwrap().records(&doc).unwrap_err();
        assert!(matches!(err, RecordsError::NotAnArray { found: "an object", .. }));
    }

    #[test]
    fn filters_go_to_the_full_engine_and_keep_order_and_digits() {
        let body =
            r#"{"items": [{"z": 1, "a": 2, "keep": true}, {"keep": false}, {"id": 9007199254740993, "keep": true}]}"#;
        assert_eq!(
            records("$.items[?@.keep == true]", body),
            vec![r#"{"z":1,"a":2,"keep":true}"#, r#"{"id":9007199254740993,"keep":true}"#]
        );
    }

    #[test]
    fn scalars_and_negative_index() {
        let doc = Document::parse(br#"{"data": [{"id": "a"}, {"id": "b"}], "meta": {"next-cursor": "c+/="}}"#).unwrap();
        let last = JsonPath::parse("$.data[-1].id").unwrap().first(&doc).unwrap().unwrap();
        assert_eq!(last.as_text().as_deref(), Some("b"));
        let next = JsonPath::parse("$.meta['next-cursor']").unwrap().first(&doc).unwrap().unwrap();
        assert_eq!(next.as_text().as_deref(), Some("c+/="));
    }
}
