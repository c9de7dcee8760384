//! What a JSON response says about itself, read the way a person reads an unknown API: where
//! the records are (the largest array of objects), what names a next page (a `next` URL, a
//! cursor, a `has_more` flag, a `Link` header) and what announces a total. `harvest init`
//! writes a job from it, and a run warns with it when a partition stops after its first page
//! while the response suggests more.

use serde_json::Value;

use crate::paginate::link_header::parse_links;
use crate::paginate::{StopReason, Style};

/// What one response holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Arrays of objects, largest first: their JSONPath and length.
    pub arrays: Vec<(String, usize)>,
    /// Fields that name the next page, in document order.
    pub next: Vec<(String, NextValue)>,
    /// `has_more`-like flags.
    pub more: Vec<(String, bool)>,
    /// Announced record totals.
    pub totals: Vec<(String, u64)>,
    /// Announced page counts.
    pub pages: Vec<(String, u64)>,
}

/// What a next-page field holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NextValue {
    /// An absolute URL, or one relative to the request (`/items?page=2`, `?cursor=x`).
    Url(String),
    /// An opaque token sent back as a parameter.
    Cursor(String),
    /// The number of the next page.
    Page(u64),
}

impl Shape {
    /// Read `root`, looking into objects a few levels down but never into the records.
    pub fn of(root: &Value) -> Shape {
        let mut shape = Shape::default();
        walk(root, "$", 0, &mut shape);
        shape.arrays.sort_by_key(|array| std::cmp::Reverse(array.1));
        shape
    }

    /// The records: the largest array of objects.
    pub fn records(&self) -> Option<&(String, usize)> {
        self.arrays.first()
    }
}

/// How deep into nested objects fields are looked for (`$.response_metadata.next_cursor`,
/// `$.data.search.pageInfo.endCursor`).
const DEPTH: usize = 5;

fn walk(value: &Value, path: &str, depth: usize, shape: &mut Shape) {
    match value {
        Value::Array(items)
            if items.iter().any(Value::is_object) && items.iter().all(|v| v.is_object() || v.is_null()) =>
        {
            shape.arrays.push((format!("{path}[*]"), items.len()));
        }
        Value::Object(map) if depth < DEPTH => {
            // `{"next": {"after": "x", "link": "..."}}` (HubSpot) and `"links": {"next": ...}`.
            let parent_is_next = is_next_name(path.rsplit(['.', '[']).next().unwrap_or(""));
            for (key, child) in map {
                let child_path = join(path, key);
                let name = normalize(key);
                match child {
                    Value::String(text) if !text.is_empty() && (is_next_name(key) || parent_is_next) => {
                        if let Some(next) = next_value(&name, text, parent_is_next) {
                            shape.next.push((child_path.clone(), next));
                        }
                    }
                    Value::Number(n) if is_next_name(key) && !parent_is_next => {
                        if let Some(page) = n.as_u64() {
                            shape.next.push((child_path.clone(), NextValue::Page(page)));
                        }
                    }
                    Value::Bool(b) if MORE.contains(&name.as_str()) => shape.more.push((child_path.clone(), *b)),
                    Value::Number(n) if TOTALS.contains(&name.as_str()) => {
                        if let Some(total) = n.as_u64() {
                            shape.totals.push((child_path.clone(), total));
                        }
                    }
                    Value::Number(n) if PAGES.contains(&name.as_str()) => {
                        if let Some(pages) = n.as_u64() {
                            shape.pages.push((child_path.clone(), pages));
                        }
                    }
                    _ => {}
                }
                walk(child, &child_path, depth + 1, shape);
            }
        }
        _ => {}
    }
}

/// A name with case, `_` and `-` taken away: `next_cursor`, `nextCursor` and `Next-Cursor` read
/// alike (parameters, fields and headers are named all these ways).
pub fn folded(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// A field's name folded, `@odata.` taken away too: `@odata.nextLink` is `nextlink`.
fn normalize(key: &str) -> String {
    folded(key.trim_start_matches("@odata."))
}

const NEXT: &[&str] = &[
    "next",
    "nexturl",
    "nextlink",
    "nextpage",
    "nextpageurl",
    "nextpagelink",
    "nextrecordsurl",
    "nextcursor",
    "nextpagetoken",
    "nexttoken",
    "nextpagecursor",
    "cursor",
    "endcursor",
    "after",
    "continuation",
    "continuationtoken",
    "scrollid",
];
const MORE: &[&str] = &["hasmore", "hasnextpage", "hasnext", "more", "moreitems", "moreresults"];
const TOTALS: &[&str] = &[
    "total",
    "totalcount",
    "totalresults",
    "totalitems",
    "totalrecords",
    "totalentries",
    "totalsize",
    "count",
    "numfound",
    "totalhits",
];
const PAGES: &[&str] = &["totalpages", "pagecount", "numpages", "pages", "lastpage"];

fn is_next_name(key: &str) -> bool {
    NEXT.contains(&normalize(key).as_str())
}

/// A string under a next-like name: a URL when it looks like one, else a cursor. Under a
/// `next` object, only its URL-like `link`/`href` and cursor-like names count.
fn next_value(name: &str, text: &str, under_next: bool) -> Option<NextValue> {
    let url_like = text.starts_with("http://")
        || text.starts_with("https://")
        || text.starts_with('/')
        || (text.starts_with('?') && text.contains('='));
    if under_next && !matches!(name, "href" | "link" | "url" | "after" | "cursor" | "token" | "pagetoken") {
        return None;
    }
    Some(if url_like { NextValue::Url(text.to_string()) } else { NextValue::Cursor(text.to_string()) })
}

/// `$.a` + `b` → `$.a.b`; names that are not plain identifiers in brackets: `$['@odata.nextLink']`.
pub fn join(path: &str, key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match plain {
        true => format!("{path}.{key}"),
        false => format!("{path}['{}']", key.replace('\\', "\\\\").replace('\'', "\\'")),
    }
}

/// The target of a `Link: <...>; rel="next"` header, if any.
pub fn link_next(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).find_map(|value| {
        parse_links(value)
            .into_iter()
            .find(|(_, rels)| rels.iter().any(|r| r.eq_ignore_ascii_case("next")))
            .map(|l| l.0)
    })
}

/// What a partition that stopped after its first page (for `stop`) may have missed: the
/// evidence in the response and the likely fix, or `None` when the response suggests no more.
/// The most common way a harvest goes wrong is to stop after page 1 because a next or records
/// path is wrong; this is said at the end of the run, not discovered in the data later.
pub fn first_page_hint(
    style: &Style,
    records_path: &str,
    received: u64,
    stop: &StopReason,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Option<String> {
    if !matches!(stop, StopReason::NoRecords | StopReason::NoNext | StopReason::SinglePage) {
        return None;
    }
    let root: Value = serde_json::from_slice(body).ok()?;
    let shape = Shape::of(&root);
    if received == 0 {
        return Some(match shape.records() {
            Some((path, n)) if *n > 0 => format!(
                "no records at records.path {records_path}, while {path} holds {n} objects: \
                 should [records] path be \"{path}\"?"
            ),
            _ => format!("no records at records.path {records_path}"),
        });
    }
    let follows = matches!(style, Style::Cursor(_) | Style::NextUrl(_));
    let evidence: Option<(String, String)> = if !matches!(style, Style::LinkHeader(_)) && link_next(headers).is_some() {
        Some((
            "the response has a Link header with rel=\"next\"".into(),
            "pagination kind = \"link_header\" follows it".into(),
        ))
    } else if let Some((path, value)) = shape.next.first() {
        let fix = match (value, follows) {
            (_, true) => format!("check pagination.next (is it \"{path}\"?)"),
            (NextValue::Url(_), false) => format!("pagination kind = \"next_url\" with next = \"{path}\" follows it"),
            (NextValue::Cursor(_), false) => format!("pagination kind = \"cursor\" with next = \"{path}\" follows it"),
            (NextValue::Page(_), false) => "pagination kind = \"page\" follows it".into(),
        };
        Some((format!("the response names a next page at {path}"), fix))
    } else if let Some((path, _)) = shape.more.iter().find(|(_, more)| *more) {
        Some((format!("the response says {path} is true"), "check [pagination]".into()))
    } else {
        shape.totals.iter().find(|(_, total)| *total > received).map(|(path, total)| {
            (
                format!("the response announces {total} at {path}, more than the {received} read"),
                "check [pagination]".into(),
            )
        })
    };
    let full = style.size_param().filter(|(_, size)| *size == received);
    match (evidence, full) {
        (Some((said, fix)), _) => Some(format!("{said}: {fix}")),
        (None, Some((param, size))) => Some(format!(
            "the page was full ({size} records, as {param}={size} asked) yet named no next page: check [pagination]"
        )),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_records_next_pages_and_totals_in_the_shapes_apis_use() {
        let stripe = Shape::of(&json!({"object": "list", "data": [{"id": "ch_1"}], "has_more": true}));
        assert_eq!(stripe.records(), Some(&("$.data[*]".to_string(), 1)));
        assert_eq!(stripe.more, vec![("$.has_more".to_string(), true)]);

        let slack = Shape::of(&json!({"ok": true, "messages": [{"ts": "1"}, {"ts": "2"}],
            "response_metadata": {"next_cursor": "dXNlcjpVMEc5V0ZYTlo="}}));
        assert_eq!(slack.records().unwrap().0, "$.messages[*]");
        assert_eq!(
            slack.next,
            vec![(
                "$.response_metadata.next_cursor".to_string(),
                NextValue::Cursor("dXNlcjpVMEc5V0ZYTlo=".to_string())
            )]
        );

        let drf = Shape::of(&json!({"count": 120, "next": "http://api/items/?page=2", "previous": null,
            "results": [{"id": 1}, {"id": 2}]}));
        assert_eq!(drf.totals, vec![("$.count".to_string(), 120)]);
        assert_eq!(drf.next, vec![("$.next".to_string(), NextValue::Url("http://api/items/?page=2".into()))]);

        let hubspot = Shape::of(&json!({"results": [{"id": "1"}],
            "paging": {"next": {"after": "NTI1Cg==", "link": "https://api.hubapi.com/x?after=NTI1Cg=="}}}));
        assert_eq!(hubspot.next.len(), 2);
        assert_eq!(hubspot.next[0], ("$.paging.next.after".to_string(), NextValue::Cursor("NTI1Cg==".into())));

        let odata = Shape::of(&json!({"value": [{"id": 1}], "@odata.nextLink": "https://x/y?$skip=10"}));
        assert_eq!(odata.next[0].0, "$['@odata.nextLink']");

        let fastapi = Shape::of(&json!({"items": [{"id": 1}], "total": 95, "page": 1, "size": 50, "pages": 2}));
        assert_eq!((fastapi.totals[0].1, fastapi.pages[0].1), (95, 2));

        let relay = Shape::of(&json!({"data": {"repository": {"issues": {"nodes": [{"id": "a"}],
            "pageInfo": {"endCursor": "Y3Vyc29y", "hasNextPage": true}}}}}));
        assert_eq!(relay.records().unwrap().0, "$.data.repository.issues.nodes[*]");
        assert_eq!(relay.next[0].0, "$.data.repository.issues.pageInfo.endCursor");
        assert_eq!(relay.more[0], ("$.data.repository.issues.pageInfo.hasNextPage".to_string(), true));
    }

    #[test]
    fn the_records_are_the_largest_array_of_objects_and_are_not_searched() {
        let shape = Shape::of(&json!({"tags": ["a", "b", "c"], "meta": [{"k": 1}],
            "items": [{"id": 1, "next": "not a page"}, {"id": 2}]}));
        assert_eq!(shape.records(), Some(&("$.items[*]".to_string(), 2)));
        assert!(shape.next.is_empty(), "{:?}", shape.next);
        let empty = Shape::of(&json!({"items": []}));
        assert_eq!(empty.records(), None);
    }

    fn hint(style: &Style, received: u64, stop: StopReason, link: Option<&str>, body: Value) -> Option<String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(link) = link {
            headers.insert(reqwest::header::LINK, link.parse().unwrap());
        }
        first_page_hint(style, "$.items[*]", received, &stop, &headers, body.to_string().as_bytes())
    }

    #[test]
    fn a_first_page_that_suggests_more_names_the_evidence_and_the_fix() {
        let none = Style::None;
        let more = hint(&none, 3, StopReason::SinglePage, None, json!({"items": [{}, {}, {}], "has_more": true}));
        assert_eq!(more.as_deref(), Some("the response says $.has_more is true: check [pagination]"));
        let total = hint(&none, 3, StopReason::SinglePage, None, json!({"items": [{}, {}, {}], "total": 40}));
        assert_eq!(
            total.as_deref(),
            Some("the response announces 40 at $.total, more than the 3 read: check [pagination]")
        );
        let link = hint(&none, 3, StopReason::SinglePage, Some("<http://h/x?page=2>; rel=\"next\""), json!([{}]));
        assert!(link.unwrap().contains("pagination kind = \"link_header\" follows it"));
        let next = hint(&none, 3, StopReason::SinglePage, None, json!({"items": [{}], "next": "http://h/x?page=2"}));
        assert!(next.unwrap().contains("pagination kind = \"next_url\" with next = \"$.next\""));
        // Nothing suggests more, or the server said so itself: nothing to say.
        assert_eq!(hint(&none, 3, StopReason::SinglePage, None, json!({"items": [{}], "total": 3})), None);
        assert_eq!(hint(&none, 3, StopReason::HasMoreFalse, None, json!({"items": [{}], "has_more": true})), None);
        assert_eq!(hint(&none, 3, StopReason::MaxPages { pages: 1 }, None, json!({"items": [{}], "next": "x"})), None);
    }
}
