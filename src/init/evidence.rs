//! What the first response says of the pages beyond it: totals and page counts in its headers
//! (which a job can read as facts), and whether more pages follow or it is the only one, which
//! decides what `init`'s tries must show before a job is confirmed.

use serde_json::Value;

use super::guess::{quoted, short, Answer};
use crate::detect::{self, NextValue, Shape};

/// A total or a page count a response header announces.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderTotal {
    /// The header, as servers usually spell it.
    pub header: &'static str,
    /// How the job file reads it: `{ header = "X-Total-Count" }`.
    pub toml: String,
    pub value: u64,
    /// A page count rather than a record count.
    pub pages: bool,
}

/// The totals in `headers`: `X-Total-Count` and `X-Total` (records), `X-Total-Pages` (pages),
/// a JSON `X-Pagination` (`total`/`totalCount`, `total_pages`/`totalPages`), and the
/// complete length of `Content-Range`.
pub fn header_totals(headers: &reqwest::header::HeaderMap) -> Vec<HeaderTotal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let plain = |header: &'static str| HeaderTotal {
        header,
        toml: format!("{{ header = {} }}", quoted(header)),
        value: 0,
        pages: false,
    };
    let mut found = Vec::new();
    for (header, pages) in [("X-Total-Count", false), ("X-Total", false), ("X-Total-Pages", true)] {
        if let Some(value) = text(header).and_then(|v| v.parse().ok()) {
            found.push(HeaderTotal { value, pages, ..plain(header) });
        }
    }
    if let Some(Value::Object(map)) = text("X-Pagination").and_then(|v| serde_json::from_str(v).ok()) {
        for (key, value) in &map {
            let pages = match detect::folded(key).as_str() {
                "total" | "totalcount" | "totalitems" | "totalrecords" | "totalentries" => false,
                "totalpages" | "pagecount" | "pages" => true,
                _ => continue,
            };
            if let Some(value) = value.as_u64() {
                let path = detect::join("$", key);
                let toml = format!("{{ header = \"X-Pagination\", path = {} }}", quoted(&path));
                found.push(HeaderTotal { header: "X-Pagination", toml, value, pages });
            }
        }
    }
    let range = text("Content-Range").and_then(|v| v.rsplit_once('/')).and_then(|(_, total)| total.parse().ok());
    if let Some(value) = range {
        found.push(HeaderTotal { value, ..plain("Content-Range") });
    }
    found
}

/// What in the first response says that more pages follow: a next link, a next field, a
/// has-more flag that is true, or a total beyond the records it holds. A job that stops after
/// its first page while this says more is not what the API serves.
pub fn more_evidence(answer: &Answer, records: usize) -> Option<String> {
    if let Some(link) = detect::link_next(answer.headers) {
        return Some(format!("its Link header names a next page ({})", short(&link)));
    }
    let shape = Shape::of(answer.body);
    if let Some((path, value)) = shape.next.first() {
        let value = match value {
            NextValue::Url(url) => short(url),
            NextValue::Cursor(cursor) => short(cursor),
            NextValue::Page(page) => page.to_string(),
        };
        return Some(format!("{path} names a next page ({value})"));
    }
    if let Some((path, _)) = shape.more.iter().find(|(_, more)| *more) {
        return Some(format!("{path} is true"));
    }
    let count = records as u64;
    if let Some((path, total)) = shape.totals.iter().find(|(_, total)| *total > count) {
        return Some(format!("{path} announces {total} records, and the page holds {count}"));
    }
    if let Some((path, pages)) = shape.pages.iter().find(|(_, pages)| *pages > 1) {
        return Some(format!("{path} announces {pages} pages"));
    }
    header_totals(answer.headers).into_iter().find(|t| if t.pages { t.value > 1 } else { t.value > count }).map(|t| {
        let what = if t.pages { "pages" } else { "records" };
        format!("the {} header announces {} {what}, and the page holds {count} records", t.header, t.value)
    })
}

/// Whether the first response shows that it is the only page: a total equal to the records
/// it holds, a single page announced, or a has-more flag that is false.
pub fn only_page(answer: &Answer, records: usize) -> Option<String> {
    let shape = Shape::of(answer.body);
    let count = records as u64;
    if let Some((path, _)) = shape.totals.iter().find(|(_, total)| *total == count) {
        return Some(format!("{path} announces the {count} records it holds"));
    }
    if let Some((path, _)) = shape.pages.iter().find(|(_, pages)| *pages == 1) {
        return Some(format!("{path} announces one page"));
    }
    if let Some((path, _)) = shape.more.iter().find(|(_, more)| !*more) {
        return Some(format!("{path} is false"));
    }
    header_totals(answer.headers)
        .into_iter()
        .find(|t| if t.pages { t.value == 1 } else { t.value == count })
        .map(|t| format!("the {} header announces the {count} records it holds", t.header))
}
