//! From one request and its response to a job: the URL's pagination parameters taken out of
//! it, the records found, the pagination named, credentials turned into `${VAR}`s. Pure: the
//! fetching and the confirming are in `init/mod.rs`.

use serde_json::Value;
use url::Url;

use crate::detect::{self, NextValue, Shape};

use super::evidence::header_totals;

/// What `init` was asked to fetch.
#[derive(Debug, Clone)]
pub struct Asked {
    pub url: Url,
    pub method: String,
    pub body: Option<Value>,
    /// `--header` values, as given.
    pub headers: Vec<(String, String)>,
}

/// What came back.
pub struct Answer<'a> {
    pub headers: &'a reqwest::header::HeaderMap,
    pub body: &'a Value,
}

/// A job file's worth of guesses; each key a TOML value as written, with notes for the reader.
#[derive(Debug, Clone, Default)]
pub struct Guess {
    pub name: String,
    /// The URL without its query.
    pub url: String,
    pub method: String,
    /// Query parameters that are not pagination's.
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    /// `[auth]` keys, and the variables the job reads its credentials from (with the values
    /// given, for the confirming request only).
    pub auth: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub records: String,
    /// How many records the first page held.
    pub found: usize,
    pub kind: String,
    pub pagination: Vec<(String, String)>,
    /// What the guess rests on, one line each, for the file's comments and the terminal.
    pub reasons: Vec<String>,
    /// What to check because the guess is unsure.
    pub doubts: Vec<String>,
}

/// What a query parameter does, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Page,
    Size,
    Offset,
    Cursor,
}

fn role(name: &str) -> Option<Role> {
    Some(match detect::folded(name).as_str() {
        // `number`: the page number in Spring Data's responses (asked for as `page`).
        "page" | "p" | "pagenumber" | "pageno" | "pagenum" | "pageindex" | "number" => Role::Page,
        "limit" | "perpage" | "pagesize" | "size" | "maxresults" | "pagelimit" | "count" | "first" => Role::Size,
        "offset" | "start" | "skip" => Role::Offset,
        "cursor" | "after" | "startingafter" | "pagetoken" | "nextpagetoken" | "continuation" | "starting" => {
            Role::Cursor
        }
        _ => return None,
    })
}

/// `"x"` as TOML writes a string.
pub fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

pub fn guess(asked: &Asked, answer: &Answer) -> Guess {
    let mut g = Guess { method: asked.method.clone(), body: asked.body.clone(), ..Guess::default() };
    g.name = name_of(&asked.url);
    let mut base = asked.url.clone();
    base.set_query(None);
    base.set_fragment(None);
    g.url = base.to_string();

    // The URL's parameters: pagination's are taken out, the rest stay.
    let mut found: Vec<(Role, String, String)> = Vec::new();
    for (name, value) in asked.url.query_pairs() {
        if is_secret(&name) {
            g.auth = vec![
                ("kind".into(), quoted("api_key")),
                ("in".into(), quoted("query")),
                ("name".into(), quoted(&name)),
                ("value".into(), quoted("${API_KEY}")),
            ];
            g.vars.push(("API_KEY".into(), value.into_owned()));
            continue;
        }
        match role(&name) {
            Some(r) if !found.iter().any(|(seen, ..)| *seen == r) => {
                found.push((r, name.into_owned(), value.into_owned()))
            }
            _ => g.params.push((name.into_owned(), value.into_owned())),
        }
    }
    let param = |r: Role| found.iter().find(|(seen, ..)| *seen == r).map(|(_, n, v)| (n.clone(), v.clone()));
    // A POST body's pagination fields, by the same names.
    let body_field = |r: Role| -> Option<(String, Value)> {
        let object = asked.body.as_ref()?.as_object()?;
        let mut fields: Vec<(String, Value)> = object.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(variables) = object.get("variables").and_then(Value::as_object) {
            fields.extend(variables.iter().map(|(k, v)| (format!("variables.{k}"), v.clone())));
        }
        fields.into_iter().find(|(k, _)| role(k.rsplit('.').next().unwrap_or(k)) == Some(r))
    };
    let in_body = asked.body.is_some();

    credentials(asked, &mut g);

    let shape = Shape::of(answer.body);
    let (records, count) = match answer.body {
        Value::Array(items) => ("$[*]".to_string(), items.len()),
        _ => match shape.records() {
            // A Relay connection's edges: the records are their nodes.
            Some((path, n)) if relay_edges(answer.body, path) => (format!("{path}.node"), *n),
            Some((path, n)) => (path.clone(), *n),
            None => {
                g.doubts.push("no array of objects was found in the response: set [records] path".into());
                ("$.items[*]".to_string(), 0)
            }
        },
    };
    g.reasons.push(match count {
        0 => format!("records: {records} (empty on this page)"),
        n => format!("records: {n} at {records}, the largest array of objects"),
    });
    g.records = records.clone();
    g.found = count;

    let size = param(Role::Size);
    let set = |g: &mut Guess, key: &str, value: String| g.pagination.push((key.to_string(), value));
    // The page size: the URL's, else the request body's, else (offset and page, `echoed`) the
    // one the response reports (`"size": 50`, `"limit": 50`).
    let with_size = |g: &mut Guess, limit_key: &str, echoed: bool| {
        let found = size
            .as_ref()
            .map(|(name, value)| (name.clone(), value.parse::<u64>().ok()))
            .or_else(|| body_field(Role::Size).map(|(name, value)| (name, value.as_u64())))
            .or_else(|| {
                echoed.then(|| body_number(answer.body, Role::Size)).flatten().map(|(n, v)| (n, v.parse().ok()))
            });
        if let Some((name, n)) = found {
            g.pagination.push((limit_key.to_string(), quoted(&name)));
            if let Some(n) = n {
                g.pagination.push(("page_size".into(), n.to_string()));
            }
        }
    };
    let more = shape.more.first().cloned();
    let next = shape.next.iter().find(|(_, v)| !matches!(v, NextValue::Page(_))).cloned();
    let body_page = shape.next.iter().find(|(_, v)| matches!(v, NextValue::Page(_))).cloned();

    if let Some(link) = detect::link_next(answer.headers) {
        g.kind = "link_header".into();
        g.reasons.push(format!("pagination: a Link header names the next page ({})", short(&link)));
        with_size(&mut g, "limit_param", false);
    } else if let Some((path, NextValue::Url(_))) = &next {
        g.kind = "next_url".into();
        set(&mut g, "next", quoted(path));
        g.reasons.push(format!("pagination: the next page's URL is at {path}"));
        with_size(&mut g, "limit_param", false);
    } else if let Some((path, NextValue::Cursor(_))) = &next {
        g.kind = "cursor".into();
        let cursor = cursor_param(&param(Role::Cursor).map(|p| p.0), body_field(Role::Cursor).map(|f| f.0), path);
        if in_body {
            set(&mut g, "params_in", quoted("body"));
        }
        set(&mut g, "cursor_param", quoted(&cursor));
        set(&mut g, "next", quoted(path));
        g.reasons.push(format!("pagination: a cursor at {path}, sent back as {cursor}"));
        if let Some((flag, _)) = &more {
            set(&mut g, "has_more", quoted(flag));
            g.reasons.push(format!("  until {flag} is false"));
        }
        with_size(&mut g, "limit_param", false);
    } else if let Some(header) = cursor_header(answer.headers).filter(|h| {
        // GitLab sends X-Next-Page beside X-Total-Pages: page numbers with a total fetch ahead.
        !(detect::folded(h).ends_with("nextpage")
            && param(Role::Page).is_some()
            && !header_totals(answer.headers).is_empty())
    }) {
        g.kind = "cursor".into();
        let cursor = match detect::folded(&header).ends_with("nextpage") {
            // `X-Next-Page: 3`: a page number, sent back as the page parameter.
            true => param(Role::Page).map_or("page".to_string(), |p| p.0),
            false => param(Role::Cursor).map_or("cursor".to_string(), |p| p.0),
        };
        set(&mut g, "cursor_param", quoted(&cursor));
        set(&mut g, "next_header", quoted(&header));
        g.reasons.push(format!("pagination: a cursor in the {header} header, sent back as {cursor}"));
        with_size(&mut g, "limit_param", false);
    } else if let (Some((flag, _)), true) = (&more, records.ends_with("[*]")) {
        // Stripe: `has_more`, and the next page starts after the last record's id.
        g.kind = "cursor".into();
        let last = format!("{}[-1].id", records.trim_end_matches("[*]"));
        let cursor = param(Role::Cursor).map_or("starting_after".to_string(), |p| p.0);
        set(&mut g, "cursor_param", quoted(&cursor));
        set(&mut g, "next", quoted(&last));
        set(&mut g, "has_more", quoted(flag));
        g.reasons.push(format!("pagination: {flag} says whether there is more; the next page starts after {last}"));
        g.doubts.push(format!("cursor_param ({cursor}) is a guess: it must be the parameter that takes the last id"));
        with_size(&mut g, "limit_param", false);
    } else if let Some((name, value)) = param(Role::Offset).or_else(|| body_number(answer.body, Role::Offset)) {
        g.kind = "offset".into();
        set(&mut g, "offset_param", quoted(&name));
        if let Ok(start) = value.parse::<u64>() {
            if start != 0 {
                set(&mut g, "start", start.to_string());
            }
        }
        with_size(&mut g, "limit_param", true);
        if param(Role::Offset).is_none() && name == "skip" {
            // Feathers answers `{"total", "limit", "skip", "data"}` and reads `$skip` and `$limit`.
            for (key, value) in g.pagination.iter_mut() {
                if matches!(key.as_str(), "offset_param" | "limit_param") {
                    *value = quoted(&format!("${}", value.trim_matches('"')));
                }
            }
        }
        g.reasons.push(format!("pagination: offsets in {name}"));
        totals(&shape, answer.headers, &mut g, false);
    } else if let Some((name, value)) =
        param(Role::Page).or_else(|| body_number(answer.body, Role::Page)).or_else(|| page_field(&body_page))
    {
        g.kind = "page".into();
        // Spring Data answers `"number": 0` for the page it was asked with `page=0`.
        let name = if name == "number" && param(Role::Page).is_none() { "page".to_string() } else { name };
        set(&mut g, "page_param", quoted(&name));
        let start = value.parse::<u64>().unwrap_or(1);
        set(&mut g, "start", start.to_string());
        with_size(&mut g, "size_param", true);
        g.reasons.push(format!("pagination: page numbers in {name}, from {start}"));
        totals(&shape, answer.headers, &mut g, true);
    } else {
        g.kind = "none".into();
        // One request, as given: the URL keeps every parameter it had.
        g.params = asked.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        g.params.retain(|(k, _)| !is_secret(k));
        g.reasons.push("pagination: none found (one request)".into());
        g.doubts.push(
            "no next link, next field, cursor, has_more flag or page parameter was found: if the API pages, \
             set [pagination] kind and its keys"
                .into(),
        );
    }
    g
}

/// A response header that carries the next page's cursor (`X-Next-Cursor`,
/// `X-Next-Page-Token`, `X-Continuation-Token`).
fn cursor_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.keys().map(|name| name.as_str()).find_map(|name| {
        matches!(
            detect::folded(name.trim_start_matches("x-")).as_str(),
            "nextcursor" | "nextpagetoken" | "continuationtoken" | "nexttoken" | "cursor" | "nextpage"
        )
        .then(|| name.to_string())
    })
}

/// Whether the array at `path` (`$.a.edges[*]`) holds Relay edges: `{"cursor": .., "node": {..}}`.
fn relay_edges(body: &Value, path: &str) -> bool {
    let Some(inner) = path.strip_prefix("$.").and_then(|p| p.strip_suffix("[*]")) else { return false };
    let array = inner.split('.').try_fold(body, |node, key| node.get(key));
    array.and_then(Value::as_array).is_some_and(|edges| {
        !edges.is_empty() && edges.iter().all(|edge| edge.get("node").is_some_and(Value::is_object))
    })
}

/// Other names a cursor goes back in, tried in turn when the first guess brings page 1 again.
pub const CURSOR_PARAMS: &[&str] =
    &["cursor", "start_cursor", "after", "starting_after", "page_token", "pageToken", "next_cursor", "continuation"];

/// Total pages, else total records, for offset and page pagination: from the body, else from
/// the headers that carry them.
fn totals(shape: &Shape, headers: &reqwest::header::HeaderMap, g: &mut Guess, pages: bool) {
    let from_headers = header_totals(headers);
    if let (true, Some((path, n))) = (pages, shape.pages.first()) {
        g.pagination.push(("total_pages".into(), quoted(path)));
        g.reasons.push(format!("  until the {n} pages at {path}"));
    } else if let Some((path, n)) = shape.totals.first() {
        g.pagination.push(("total".into(), quoted(path)));
        g.reasons.push(format!("  until the {n} records at {path}"));
    } else if let (true, Some(fact)) = (pages, from_headers.iter().find(|f| f.pages)) {
        g.pagination.push(("total_pages".into(), fact.toml.clone()));
        g.reasons.push(format!("  until the {} pages the {} header announces", fact.value, fact.header));
    } else if let Some(fact) = from_headers.iter().find(|f| !f.pages) {
        g.pagination.push(("total".into(), fact.toml.clone()));
        g.reasons.push(format!("  until the {} records the {} header announces", fact.value, fact.header));
    } else {
        g.reasons.push("  until a short page is confirmed by an empty one".into());
    }
}

/// A top-level number in the response that names a page, size or offset (`"page": 1`,
/// `"size": 50`, `"offset": 0`): its name and value.
fn body_number(body: &Value, r: Role) -> Option<(String, String)> {
    body.as_object()?.iter().find_map(|(k, v)| (role(k) == Some(r) && v.is_u64()).then(|| (k.clone(), v.to_string())))
}

/// `"next_page": 2` in a response: pages numbered from one less.
fn page_field(next: &Option<(String, NextValue)>) -> Option<(String, String)> {
    match next {
        Some((_, NextValue::Page(n))) if *n > 0 => Some(("page".into(), (n - 1).to_string())),
        _ => None,
    }
}

/// The parameter a cursor goes back in: the URL's or body's own, else what the field's name
/// suggests (`endCursor` goes back as GraphQL's `after`).
fn cursor_param(in_url: &Option<String>, in_body: Option<String>, next: &str) -> String {
    if let Some(name) = in_url.clone().or(in_body) {
        return name;
    }
    let field = next.rsplit(['.', '[']).next().unwrap_or("").trim_matches(['\'', ']']);
    match detect::folded(field).as_str() {
        "endcursor" => "variables.after".into(),
        "after" => "after".into(),
        "nextpagetoken" | "pagetoken" => "pageToken".into(),
        "nexttoken" => "next_token".into(),
        _ => "cursor".into(),
    }
}

/// `--header` values become `[auth]` with `${VAR}`s, or stay headers when they are no secret.
fn credentials(asked: &Asked, g: &mut Guess) {
    for (name, value) in &asked.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "authorization" {
            let (scheme, rest) = value.split_once(' ').unwrap_or(("", value.as_str()));
            match scheme.to_ascii_lowercase().as_str() {
                "basic" => {
                    g.auth = vec![
                        ("kind".into(), quoted("basic")),
                        ("username".into(), quoted("${API_USERNAME}")),
                        ("password".into(), quoted("${API_PASSWORD}")),
                    ];
                    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, rest.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok());
                    let (user, password) = decoded
                        .as_deref()
                        .and_then(|d| d.split_once(':'))
                        .map_or((String::new(), String::new()), |(u, p)| (u.to_string(), p.to_string()));
                    g.vars.push(("API_USERNAME".into(), user));
                    g.vars.push(("API_PASSWORD".into(), password));
                }
                _ => {
                    let mut auth = vec![("kind".into(), quoted("bearer")), ("token".into(), quoted("${API_TOKEN}"))];
                    let token = if scheme.eq_ignore_ascii_case("bearer") {
                        rest.trim().to_string()
                    } else {
                        // `Authorization: Token x` (DRF) or a bare key: the prefix as written.
                        let prefix = if scheme.is_empty() { String::new() } else { format!("{scheme} ") };
                        auth.push(("prefix".into(), quoted(&prefix)));
                        if scheme.is_empty() {
                            value.clone()
                        } else {
                            rest.trim().to_string()
                        }
                    };
                    g.auth = auth;
                    g.vars.push(("API_TOKEN".into(), token));
                }
            }
        } else if is_secret(&lower) || lower.contains("cookie") {
            g.auth = vec![
                ("kind".into(), quoted("api_key")),
                ("in".into(), quoted("header")),
                ("name".into(), quoted(name)),
                ("value".into(), quoted("${API_KEY}")),
            ];
            g.vars.push(("API_KEY".into(), value.clone()));
        } else {
            g.headers.push((name.clone(), value.clone()));
        }
    }
}

/// A parameter or header whose value is a credential, by its name (`api_key`, `X-Auth-Token`).
fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["key", "token", "secret", "auth", "session", "password", "signature"].iter().any(|w| name.contains(w))
}

/// A job name from the URL's last meaningful path segment: `/repos/o/r/issues` → `issues`.
fn name_of(url: &Url) -> String {
    let segment = url
        .path_segments()
        .into_iter()
        .flatten()
        .rev()
        .find(|s| !s.is_empty() && !s.chars().all(|c| c.is_ascii_digit()) && !matches!(*s, "api" | "v1" | "v2" | "v3"))
        .unwrap_or_else(|| url.host_str().unwrap_or("job"));
    let name: String = segment
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "job".into()
    } else {
        name
    }
}

/// A URL or cursor cut to 80 characters for a message.
pub(super) fn short(url: &str) -> String {
    match url.len() > 80 {
        true => format!("{}...", url.chars().take(77).collect::<String>()),
        false => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guessed(url: &str, body: Value, link: Option<&str>) -> Guess {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(link) = link {
            headers.insert(reqwest::header::LINK, link.parse().unwrap());
        }
        let asked = Asked { url: Url::parse(url).unwrap(), method: "GET".into(), body: None, headers: Vec::new() };
        guess(&asked, &Answer { headers: &headers, body: &body })
    }

    fn key<'g>(g: &'g Guess, name: &str) -> Option<&'g str> {
        g.pagination.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_url_keeps_its_own_parameters_and_gives_up_pagination_s() {
        let g = guessed(
            "https://api.example.com/v1/items?page=1&per_page=50&state=open",
            json!({
            "page": 1, "total_pages": 7, "data": [{"id": 1}]}),
            None,
        );
        assert_eq!((g.name.as_str(), g.url.as_str()), ("items", "https://api.example.com/v1/items"));
        assert_eq!(g.params, vec![("state".to_string(), "open".to_string())]);
        assert_eq!(g.kind, "page");
        assert_eq!(key(&g, "page_param"), Some("\"page\""));
        assert_eq!(key(&g, "size_param"), Some("\"per_page\""));
        assert_eq!(key(&g, "page_size"), Some("50"));
        assert_eq!(key(&g, "total_pages"), Some("\"$.total_pages\""));
        assert_eq!(g.records, "$.data[*]");
    }

    #[test]
    fn styles_of_the_common_frameworks() {
        let drf = guessed(
            "http://h/api/items/",
            json!({"count": 3, "next": "http://h/api/items/?page=2",
            "previous": null, "results": [{"id": 1}]}),
            None,
        );
        assert_eq!((drf.kind.as_str(), key(&drf, "next")), ("next_url", Some("\"$.next\"")));

        let fastapi = guessed(
            "http://h/items?page=1&size=50",
            json!({"items": [{"id": 1}], "total": 95,
            "page": 1, "size": 50, "pages": 2}),
            None,
        );
        assert_eq!(fastapi.kind, "page");
        assert_eq!(key(&fastapi, "size_param"), Some("\"size\""));
        assert_eq!(key(&fastapi, "total_pages"), Some("\"$.pages\""));

        let limit_offset = guessed(
            "http://h/items",
            json!({"items": [{"id": 1}], "total": 95, "limit": 50,
            "offset": 0}),
            None,
        );
        assert_eq!(limit_offset.kind, "offset");
        assert_eq!(key(&limit_offset, "limit_param"), Some("\"limit\""));
        assert_eq!(key(&limit_offset, "total"), Some("\"$.total\""));

        let github = guessed(
            "https://api.github.com/repos/o/r/issues?per_page=100",
            json!([{"id": 1}]),
            Some("<https://api.github.com/repositories/1/issues?per_page=100&page=2>; rel=\"next\""),
        );
        assert_eq!(
            (github.kind.as_str(), github.records.as_str(), github.name.as_str()),
            ("link_header", "$[*]", "issues")
        );
        assert_eq!(key(&github, "limit_param"), Some("\"per_page\""));

        let stripe = guessed(
            "https://api.stripe.com/v1/charges?limit=3",
            json!({"object": "list",
            "data": [{"id": "ch_1"}], "has_more": true}),
            None,
        );
        assert_eq!(stripe.kind, "cursor");
        assert_eq!(key(&stripe, "next"), Some("\"$.data[-1].id\""));
        assert_eq!(key(&stripe, "cursor_param"), Some("\"starting_after\""));
        assert_eq!(key(&stripe, "has_more"), Some("\"$.has_more\""));

        let slack = guessed(
            "https://slack.com/api/conversations.history?channel=C1&limit=200",
            json!({
            "ok": true, "messages": [{"ts": "1"}], "has_more": true,
            "response_metadata": {"next_cursor": "bG9n"}}),
            None,
        );
        assert_eq!(slack.kind, "cursor");
        assert_eq!(key(&slack, "next"), Some("\"$.response_metadata.next_cursor\""));
        assert_eq!(key(&slack, "cursor_param"), Some("\"cursor\""));
        assert_eq!(slack.params, vec![("channel".to_string(), "C1".to_string())]);

        let nothing = guessed("http://h/things", json!({"things": [{"id": 1}]}), None);
        assert_eq!(nothing.kind, "none");
        assert!(!nothing.doubts.is_empty());
    }

    #[test]
    fn the_shapes_of_json_api_hal_odata_spring_and_feathers() {
        let json_api = guessed(
            "http://h/articles",
            json!({"data": [{"id": "1", "type": "articles"}], "links": {"self": "/articles", "next": "/articles?page[number]=2"}}),
            None,
        );
        assert_eq!((json_api.kind.as_str(), key(&json_api, "next")), ("next_url", Some("\"$.links.next\"")));
        let hal = guessed(
            "http://h/people",
            json!({"_embedded": {"people": [{"id": 1}]}, "_links": {"next": {"href": "http://h/people?page=1"}}}),
            None,
        );
        assert_eq!(hal.records, "$._embedded.people[*]");
        assert_eq!((hal.kind.as_str(), key(&hal, "next")), ("next_url", Some("\"$._links.next.href\"")));
        let odata = guessed(
            "http://h/odata/People",
            json!({"@odata.context": "x", "value": [{"UserName": "a"}], "@odata.nextLink": "http://h/odata/People?$skiptoken=8"}),
            None,
        );
        assert_eq!((odata.kind.as_str(), key(&odata, "next")), ("next_url", Some("\"$['@odata.nextLink']\"")));
        let spring = guessed(
            "http://h/api/items",
            json!({"content": [{"id": 1}], "totalPages": 5, "totalElements": 100, "number": 0, "size": 20}),
            None,
        );
        assert_eq!(spring.kind, "page");
        assert_eq!((key(&spring, "page_param"), key(&spring, "start")), (Some("\"page\""), Some("0")));
        assert_eq!((key(&spring, "size_param"), key(&spring, "page_size")), (Some("\"size\""), Some("20")));
        assert_eq!(key(&spring, "total_pages"), Some("\"$.totalPages\""));
        let feathers =
            guessed("http://h/messages", json!({"total": 90, "limit": 10, "skip": 0, "data": [{"id": 1}]}), None);
        assert_eq!(feathers.kind, "offset");
        assert_eq!(
            (key(&feathers, "offset_param"), key(&feathers, "limit_param")),
            (Some("\"$skip\""), Some("\"$limit\""))
        );
    }

    #[test]
    fn credentials_become_variables() {
        let mut asked = Asked {
            url: Url::parse("http://h/x").unwrap(),
            method: "GET".into(),
            body: None,
            headers: vec![
                ("Authorization".into(), "Bearer s3cret".into()),
                ("Accept".into(), "application/json".into()),
            ],
        };
        let headers = reqwest::header::HeaderMap::new();
        let g = guess(&asked, &Answer { headers: &headers, body: &json!([]) });
        assert_eq!(g.auth[1], ("token".to_string(), "\"${API_TOKEN}\"".to_string()));
        assert_eq!(g.vars, vec![("API_TOKEN".to_string(), "s3cret".to_string())]);
        assert_eq!(g.headers, vec![("Accept".to_string(), "application/json".to_string())]);
        asked.headers = vec![("X-Api-Key".into(), "k".into())];
        let g = guess(&asked, &Answer { headers: &headers, body: &json!([]) });
        assert_eq!(g.auth[0].1, "\"api_key\"");
        assert_eq!(g.vars, vec![("API_KEY".to_string(), "k".to_string())]);
    }
}
