//! What a response body holds: its records, one compact JSON line each, and what the
//! pagination reads of the response. A [`Decoder`] does both in one pass over the body, on
//! the task that fetched it and inside its retry loop (a body that is not what the job says
//! is fetched again, or fails the page); everything after works on what it returns.
//!
//! Today every job's pages are JSON documents ([`JsonPages`]); a body of another format
//! (JSON Lines, CSV) is another decoder behind the same seam, chosen by [`for_job`].

use serde_json::Value;

use crate::error::PageError;
use crate::fetch::Fetched;
use crate::jsonpath::{Document, JsonPath, Kind, RecordsError};
use crate::paginate::{PageResponse, Reading, Style};
use crate::plan::{Plan, RecordsPlan};
use crate::redact::Redactor;

/// A body decoded.
pub(crate) struct Decoded {
    /// Records, one compact JSON line each.
    pub(crate) lines: Vec<u8>,
    pub(crate) records: u64,
    /// What the pagination reads of the response.
    pub(crate) reading: Reading,
}

/// Why a body could not be decoded.
pub(crate) enum Undecodable {
    /// Not the format at all (cut short, HTML): fetched again like a cut connection.
    Malformed { reason: String, cut_short: bool },
    /// Well formed, but not what the job says (an error list, no records where they should be,
    /// a pagination field that cannot be read): the page fails.
    Page(PageError),
}

/// Turns a response body into records and pagination facts, once.
pub(crate) trait Decoder: Send + Sync {
    fn decode(&self, fetched: &Fetched) -> Result<Decoded, Undecodable>;
}

/// The decoder a job's pages need.
pub(crate) fn for_job(plan: &Plan) -> JsonPages {
    let keys = plan.output.merge.iter().flat_map(|merge| &merge.primary_key);
    JsonPages {
        records: plan.records.clone(),
        pagination: plan.pagination.style.clone(),
        secrets: plan.redactor.clone(),
        keys: keys.map(|name| (name.clone(), member(name))).collect(),
    }
}

/// The path to a record's top-level field `name`.
fn member(name: &str) -> JsonPath {
    let quoted = serde_json::to_string(name).expect("a string serializes");
    JsonPath::parse(&format!("$[{quoted}]")).expect("a quoted name is a valid path")
}

/// A page that is one JSON document: records at `records.path`, the API's errors at
/// `records.errors`, the pagination's facts wherever the strategy reads them.
pub(crate) struct JsonPages {
    records: RecordsPlan,
    pagination: Style,
    secrets: Redactor,
    /// `mode = "merge"`: the primary key's fields, which every record must have.
    keys: Vec<(String, JsonPath)>,
}

impl Decoder for JsonPages {
    fn decode(&self, fetched: &Fetched) -> Result<Decoded, Undecodable> {
        let doc = Document::parse(&fetched.body)
            .map_err(|e| Undecodable::Malformed { reason: e.message, cut_short: e.cut_short })?;
        check_errors(self.records.errors.as_ref(), &self.secrets, &doc, fetched.status).map_err(Undecodable::Page)?;
        let mut lines = Vec::with_capacity(fetched.body.len());
        let path = &self.records.path;
        let records = path.write_records(&doc, &mut lines).map_err(|e| {
            Undecodable::Page(match e {
                RecordsError::NotAnArray { at, found } => PageError::NotAnArray { path: path.to_string(), at, found },
                RecordsError::Invalid(why) => PageError::Pagination(why.to_string()),
            })
        })?;
        let response = PageResponse {
            status: fetched.status,
            headers: &fetched.headers,
            url: &fetched.url,
            doc: &doc,
            records,
            secrets: &self.secrets,
        };
        let reading = self.pagination.read(&response).map_err(Undecodable::Page)?;
        check_keys(&self.keys, &lines).map_err(Undecodable::Page)?;
        Ok(Decoded { lines, records, reading })
    }
}

/// `mode = "merge"`: a record without a value for each primary key field fails the page, since
/// its row could not be named.
fn check_keys(keys: &[(String, JsonPath)], lines: &[u8]) -> Result<(), PageError> {
    if keys.is_empty() {
        return Ok(());
    }
    for (index, line) in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let record = Document::parse(line).map_err(|e| PageError::Pagination(e.message))?;
        for (name, path) in keys {
            let value = path.first(&record).map_err(|e| PageError::Pagination(e.to_string()))?;
            if value.is_none_or(|v| v.kind() == Kind::Null) {
                return Err(PageError::Keyless { record: index as u64 + 1, field: name.clone() });
            }
        }
    }
    Ok(())
}

/// A non-empty array at `records.errors` fails the page, whatever the status.
fn check_errors(errors: Option<&JsonPath>, secrets: &Redactor, doc: &Document, status: u16) -> Result<(), PageError> {
    let Some(path) = errors else { return Ok(()) };
    let Some(node) = path.first(doc).map_err(|why| PageError::Pagination(why.to_string()))? else { return Ok(()) };
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
    let mut messages = secrets.redact(&messages.join("; ")).into_owned();
    if errors.len() > 5 {
        messages.push_str(&format!(" (and {} more)", errors.len() - 5));
    }
    Err(PageError::ApiErrors { path: path.to_string(), status, messages })
}
