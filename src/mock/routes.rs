//! The mock API's route table: every path, the credentials and tenants in front of them, and
//! the query knobs that switch on the quirks of real APIs.
//!
//! Handlers return `Result<Response, Response>`: an error is just another response here.
#![allow(clippy::result_large_err)]

mod examples;
mod quirks;
mod styles;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{any, on, post, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::json;

use super::{Arrived, MockApi};

/// Every path the mock serves. The style paths (and `/examples/...`) answer through the
/// quirks layer, as they are, under `/t/<tenant>`, and behind `/auth/<kind>` (the kind's
/// credential checked first); the token and login endpoints answer as they are.
pub(super) fn router(api: &Arc<MockApi>) -> Router<Arc<MockApi>> {
    use MethodFilter as M;
    let styles = Router::new()
        .route("/offset", answer(M::GET, |call| call.offset(false)))
        .route("/array", answer(M::GET, |call| call.offset(true)))
        .route("/page", answer(M::GET, Call::page))
        .route("/next-url", answer(M::GET, Call::next_url))
        .route("/link", answer(M::GET, Call::link_header))
        .route("/cursor", answer(M::GET, Call::cursor))
        .route("/cursor-header", answer(M::GET, Call::cursor_header))
        .route("/has-more", answer(M::GET, Call::has_more))
        .route("/items", answer(M::GET, Call::items))
        .route("/items/{id}", answer(M::GET, Call::item))
        .route("/graphql", answer(M::POST, Call::graphql))
        .route("/redirect", any(|call: Call| async move { call.redirect() }))
        .route("/_admin/touch", answer(M::POST, Call::touch))
        .route("/_stats", answer(M::GET, Call::stats))
        .nest("/examples", examples::router())
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "no such path; see docs/REFERENCE.md for the mock API's paths")
        })
        .layer(from_fn_with_state(api.clone(), quirks::misbehave));
    let tenants = styles.clone().nest("/t/{tenant}", styles);
    let credentials = from_fn_with_state(api.clone(), super::auth::authorize);
    Router::new()
        .route("/oauth/{*endpoint}", post(super::auth::token))
        .route("/login/{how}", post(super::auth::token))
        // Salesforce's token URL is on the instance's host.
        .route("/services/oauth2/token", post(super::auth::token))
        .route("/examples/salesforce/services/oauth2/token", post(super::auth::token))
        .nest("/auth/{kind}", tenants.clone().layer(credentials))
        .merge(tenants)
}

/// A path's handler for `method`: `answer` given the parsed request.
fn answer(method: MethodFilter, answer: fn(&Call) -> Response) -> MethodRouter<Arc<MockApi>> {
    on(method, move |call: Call| async move { answer(&call) })
}

/// A request's query as pairs, decoded.
pub(crate) fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// Query parameters that switch on the quirks of real APIs. Every path takes them.
#[derive(Debug, Clone)]
struct Knobs {
    /// Serve at most this many records a page, silently...
    max_page_size: Option<u64>,
    /// ...or answer this status when more are asked.
    oversize: Option<u16>,
    /// Offset paths: from this record on, serve at most half the size asked, as servers that
    /// cap a response's bytes do where records grow.
    shrink_at: Option<u64>,
    /// Status for a page past the end (default: 200 with an empty list).
    past_end: Option<u16>,
    /// `omit`: no total in bodies.
    omit_total: bool,
    /// How the last page says there is no next: `null` (default), `empty`, `missing`.
    end: String,
    /// Form of next links: `absolute` (default), `root`, `query`, `path`.
    links: String,
    /// The origin next links point to, instead of the server's own.
    next_origin: Option<String>,
    /// The 0-based page that links back to itself.
    loop_at: Option<u64>,
    /// `null` or `missing`: how an empty page shows its records.
    empty_results: String,
    html: bool,
    /// Each distinct URI fails its first `flaky` requests...
    flaky: u64,
    /// ...as this: a status code (`503`, `429`, ...), `cut` (the connection closes mid-body)
    /// or `invalid` (half the JSON, properly framed).
    flaky_as: String,
    /// `Retry-After` on flaky statuses, in seconds.
    retry_after: Option<String>,
    /// The server's `throttle_at`-th request (counting every path) gets a 429 with
    /// `retry_after`.
    throttle_at: Option<u64>,
    /// Every request after the server's `fail_after`-th (counting every path) gets a 500.
    fail_after: Option<u64>,
    /// The server's `fail_at`-th request gets a 500.
    fail_at: Option<u64>,
    /// The server's `stall_at`-th request gets half its body, then waits `stall` ms (30,000 by
    /// default) before the rest: a response slow in the middle of its body.
    stall_at: Option<u64>,
    stall: u64,
    graphql_errors: bool,
    /// `1`: gzip with Content-Encoding; `hidden`: gzip without saying so.
    gzip: Option<String>,
    content_type: Option<String>,
    /// Link headers: `split` puts each link in its own header, `unquoted` drops quotes.
    link_style: String,
    has_more_as_string: bool,
    /// `updated_since`: only records updated after this instant.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// `order=id`: records in id order even when touched ones have moved on in time, so that
    /// `updated_at` is not monotonic in the order served.
    by_id: bool,
    /// `order=desc`: newest first (the highest id first), as many APIs list by default.
    desc: bool,
    /// Where `/offset`, `/array` and `/page` announce their totals instead of the body:
    /// `x-total-count` (json-server, Express), `x-pagination` (a JSON header: flask-smorest,
    /// ASP.NET), `content-range` (PostgREST), `gitlab` (`X-Total`, `X-Total-Pages`,
    /// `X-Next-Page`, ...), `next-page` (only `X-Next-Page`); `bad-range` and `bad-json` send
    /// those two malformed.
    totals_in: Option<String>,
    /// Indent JSON bodies, as some frameworks do.
    pretty: bool,
    /// Records carry JSON in forms a serializer would not write (see `with_odd_forms`).
    odd: bool,
    /// Records with a greater id gain a field, `added` (a schema that grows).
    gain_field_after: Option<u64>,
    /// Every record gets `amount`: its id as an integer, or as a float past this id (a column
    /// that widens from integer to float).
    float_after: Option<u64>,
}

impl Knobs {
    /// The knobs of a query; a 400 for an `updated_since` that is not RFC 3339.
    fn parse(query: &[(String, String)]) -> Result<Self, Response> {
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let since = match get("updated_since") {
            Some(since) => match chrono::DateTime::parse_from_rfc3339(&since) {
                Ok(t) => Some(t.with_timezone(&chrono::Utc)),
                Err(e) => return Err(error(StatusCode::BAD_REQUEST, &format!("updated_since: {e}"))),
            },
            None => None,
        };
        Ok(Knobs {
            max_page_size: get("max_page_size").and_then(|v| v.parse().ok()),
            oversize: get("oversize").and_then(|v| v.parse().ok()),
            shrink_at: get("shrink_at").and_then(|v| v.parse().ok()),
            past_end: get("past_end").and_then(|v| v.parse().ok()),
            omit_total: get("total").as_deref() == Some("omit"),
            end: get("end").unwrap_or_else(|| "null".into()),
            links: get("links").unwrap_or_else(|| "absolute".into()),
            next_origin: get("next_origin"),
            loop_at: get("loop").and_then(|v| v.parse().ok()),
            empty_results: get("empty_results").unwrap_or_default(),
            html: get("html").is_some(),
            flaky: get("flaky").and_then(|v| v.parse().ok()).unwrap_or(0),
            flaky_as: get("flaky_as").unwrap_or_else(|| "503".into()),
            retry_after: get("retry_after"),
            throttle_at: get("throttle_at").and_then(|v| v.parse().ok()),
            fail_after: get("fail_after").and_then(|v| v.parse().ok()),
            fail_at: get("fail_at").and_then(|v| v.parse().ok()),
            stall_at: get("stall_at").and_then(|v| v.parse().ok()),
            stall: get("stall").and_then(|v| v.parse().ok()).unwrap_or(30_000),
            graphql_errors: get("errors").is_some(),
            gzip: get("gzip"),
            content_type: get("content_type"),
            link_style: get("link_style").unwrap_or_default(),
            has_more_as_string: get("has_more_as").as_deref() == Some("string"),
            since,
            by_id: get("order").as_deref() == Some("id"),
            desc: get("order").as_deref() == Some("desc"),
            totals_in: get("totals_in"),
            pretty: get("pretty").is_some(),
            odd: get("odd").is_some(),
            gain_field_after: get("gain_field_after").and_then(|v| v.parse().ok()),
            float_after: get("float_after").and_then(|v| v.parse().ok()),
        })
    }

    /// A JSON answer as the knobs shape it: its Content-Type, indented, gzip'd.
    fn json(&self, status: StatusCode, body: impl Into<String>, mut headers: HeaderMap) -> Response {
        let body: String = body.into();
        let content_type = self.content_type.clone().unwrap_or_else(|| "application/json".into());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/json")),
        );
        let body = if self.pretty { indent(&body) } else { body };
        let body = match self.gzip.as_deref() {
            Some(how) => {
                if how != "hidden" {
                    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(body.as_bytes()).expect("writing to memory");
                Body::from(gz.finish().expect("writing to memory"))
            }
            None => Body::from(body),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// One request, parsed.
struct Call {
    api: Arc<MockApi>,
    /// The full path as requested (with any `/auth/<kind>` and `/t/<tenant>` prefix).
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    /// The path's parameters (`{id}`, `{org}`, ...).
    segments: Vec<(String, String)>,
    body: Bytes,
    knobs: Knobs,
    /// Position in the dataset of the first record the request can see (`updated_since`).
    first: u64,
    /// Once records have been touched: the records the request can see, in the order served,
    /// each a dataset position and the `updated_at` it has now.
    view: Option<Arc<View>>,
}

/// What a request sees once records were touched: dataset positions and their `updated_at`.
pub(crate) type View = Vec<(u64, chrono::DateTime<chrono::Utc>)>;

impl FromRequest<Arc<MockApi>> for Call {
    type Rejection = Response;

    async fn from_request(request: Request, api: &Arc<MockApi>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let segments = match RawPathParams::from_request_parts(&mut parts, api).await {
            Ok(params) => params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            Err(_) => Vec::new(),
        };
        let query = query_pairs(&parts.uri);
        let knobs = match parts.extensions.remove::<Knobs>() {
            Some(knobs) => knobs,
            None => Knobs::parse(&query)?,
        };
        let path = match parts.extensions.get::<Arrived>() {
            Some(arrived) => arrived.uri.path().to_string(),
            None => parts.uri.path().to_string(),
        };
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let first = knobs.since.map_or(0, |t| api.data.position_since(t));
        let view = touched_view(api, knobs.since, knobs.by_id);
        let (api, headers) = (api.clone(), parts.headers);
        Ok(Call { api, path, query, headers, segments, body, knobs, first, view })
    }
}

/// The records a request sees once some have been touched: untouched ones keep `updated_at`
/// = base + id minutes; the one touched k-th moves to base + (N + k) minutes (its last touch
/// counts: a record touched again moves past every earlier touch, as an edit would), after all
/// others. Served by `updated_at` (or by id with `order=id`), from `since` on.
/// The view is kept for the next request that asks the same while no record is touched: the
/// pages of one run each see it without sorting the dataset again.
fn touched_view(api: &MockApi, since: Option<chrono::DateTime<chrono::Utc>>, by_id: bool) -> Option<Arc<View>> {
    let touched = api.touched.lock().expect("touched lock");
    if touched.is_empty() {
        return None;
    }
    let key = (touched.len(), since, by_id);
    let mut kept = api.view.lock().expect("view lock");
    if let Some((_, view)) = kept.as_ref().filter(|(at, _)| *at == key) {
        return Some(view.clone());
    }
    let n = api.data.len();
    let moved: HashMap<u64, u64> = touched.iter().enumerate().map(|(k, id)| (*id, n + k as u64 + 1)).collect();
    let mut view: Vec<(u64, chrono::DateTime<chrono::Utc>)> = (1..=n)
        .map(|id| (id - 1, super::dataset::updated_at(moved.get(&id).copied().unwrap_or(id))))
        .filter(|(_, at)| since.is_none_or(|since| *at > since))
        .collect();
    if !by_id {
        view.sort_by_key(|(_, at)| *at);
    }
    let view = Arc::new(view);
    *kept = Some((key, view.clone()));
    Some(view)
}

/// `{a,b,c}` from member texts, skipping empty ones.
fn object(members: &[&str]) -> String {
    let mut out = String::with_capacity(members.iter().map(|m| m.len() + 1).sum::<usize>() + 2);
    out.push('{');
    for member in members.iter().filter(|m| !m.is_empty()) {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(member);
    }
    out.push('}');
    out
}

fn error(status: StatusCode, detail: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "detail": detail }).to_string()))
        .expect("a valid response")
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The path's parameter `name` (`""` when the route has none).
    fn segment(&self, name: &str) -> &str {
        self.segments.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, Response> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => {
                v.parse().map_err(|_| error(StatusCode::BAD_REQUEST, &format!("{name} must be a number, got {v:?}")))
            }
        }
    }

    /// Records visible to this request.
    fn len(&self) -> u64 {
        match &self.view {
            Some(view) => view.len() as u64,
            None => self.api.data.len() - self.first,
        }
    }

    /// The page size to serve: the size asked, capped or refused per the knobs.
    fn size(&self, name: &str) -> Result<u64, Response> {
        let asked = self.number(name, 100)?;
        if asked == 0 {
            return Err(error(StatusCode::BAD_REQUEST, &format!("{name} must be at least 1")));
        }
        match self.knobs.max_page_size {
            Some(max) if asked > max => match self.knobs.oversize {
                Some(status) => Err(error(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    &format!("{name} must be at most {max}"),
                )),
                None => Ok(max),
            },
            _ => Ok(asked),
        }
    }

    /// `?page=&per_page=` (1-based): the page, the size served and the first record's position;
    /// a page past the end is the status the `past_end` knob asks for, if any.
    fn numbered_page(&self) -> Result<(u64, u64, u64), Response> {
        let page = self.number("page", 1)?.max(1);
        let size = self.size("per_page")?;
        let start = (page - 1) * size;
        match self.past_end(start) {
            Some(refused) => Err(refused),
            None => Ok((page, size, start)),
        }
    }

    /// A page starting past the end: an empty list, or the status the knob asks for.
    fn past_end(&self, start: u64) -> Option<Response> {
        let status = self.knobs.past_end?;
        (start >= self.len() && start > 0)
            .then(|| error(StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND), "page out of range"))
    }

    /// Records `[start, start + size)` of the visible data as a JSON array.
    fn records(&self, start: u64, size: u64) -> (String, u64) {
        let end = (start.saturating_add(size)).min(self.len());
        let mut out = String::with_capacity(((end.saturating_sub(start)) * 600 + 2) as usize);
        out.push('[');
        for i in start..end.max(start) {
            if i > start {
                out.push(',');
            }
            if let Some(view) = &self.view {
                let (position, at) = view[i as usize];
                let record = self.api.data.record_str(position);
                let was = super::dataset::updated_at(position + 1).format("%Y-%m-%dT%H:%M:%SZ").to_string();
                let now = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
                let record = record.replace(&was, &now);
                match self.api.deleted.lock().expect("deleted lock").contains(&(position + 1)) {
                    true => out.push_str(
                        &record.replace("\"deleted_at\":null", &format!("\"deleted_at\":\"{now}\",\"deleted\":true")),
                    ),
                    false => out.push_str(&record),
                }
                continue;
            }
            let position = match self.knobs.desc {
                true => self.first + (self.len() - 1 - i),
                false => self.first + i,
            };
            let record = self.api.data.record_str(position);
            match (self.knobs.gain_field_after, self.knobs.float_after) {
                (None, None) if self.knobs.odd => out.push_str(&super::dataset::with_odd_forms(record)),
                (None, None) => out.push_str(record),
                (gain, float) => out.push_str(&evolve(record, position + 1, gain, float)),
            }
        }
        out.push(']');
        (out, end.saturating_sub(start))
    }

    /// `"key":[...]` for an object body, honouring `empty_results`.
    fn records_member(&self, key: &str, records: &str, count: u64) -> String {
        match (count, self.knobs.empty_results.as_str()) {
            (0, "null") => format!("\"{key}\":null"),
            (0, "missing") => String::new(),
            _ => format!("\"{key}\":{records}"),
        }
    }

    fn json(&self, status: StatusCode, body: impl Into<String>, headers: HeaderMap) -> Response {
        self.knobs.json(status, body, headers)
    }

    /// The URL of this same request with `changes` made to its query, in the form the
    /// `links` knob asks for.
    fn url_with(&self, changes: &[(&str, String)]) -> String {
        let mut pairs: Vec<(String, String)> =
            self.query.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).cloned().collect();
        pairs.extend(changes.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let query: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let host = self.headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        match self.knobs.links.as_str() {
            "root" => format!("{}?{query}", self.path),
            "query" => format!("?{query}"),
            "path" => format!("{}?{query}", self.path.rsplit('/').next().unwrap_or("")),
            _ => match &self.knobs.next_origin {
                Some(origin) => format!("{}{}?{query}", origin.trim_end_matches('/'), self.path),
                None => format!("http://{host}{}?{query}", self.path),
            },
        }
    }

    /// The position a cursor stands for. Cursors look like `p200+x/0=`: opaque, and full of
    /// characters that need encoding in a query string.
    fn decode_cursor(&self, cursor: Option<&str>) -> Result<u64, Response> {
        let Some(cursor) = cursor.filter(|c| !c.is_empty()) else { return Ok(0) };
        cursor
            .strip_prefix('p')
            .and_then(|c| c.split('+').next())
            .and_then(|c| c.parse().ok())
            .filter(|_| cursor.ends_with('='))
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, &format!("invalid cursor {cursor:?}")))
    }

    fn encode_cursor(position: u64) -> String {
        format!("p{position}+x/{}=", position % 10)
    }

    /// The cursor for the page after `[start, start + count)`, or `None` at the end.
    fn next_cursor(&self, start: u64, count: u64, size: u64) -> Option<String> {
        if self.knobs.loop_at.is_some_and(|p| p * size == start) {
            return Some(Self::encode_cursor(start));
        }
        let next = start + count;
        (next < self.len() && count > 0).then(|| Self::encode_cursor(next))
    }

    /// `"next":...` for the last page, per the `end` knob.
    fn end_member(&self, key: &str) -> String {
        match self.knobs.end.as_str() {
            "empty" => format!(",\"{key}\":\"\""),
            "missing" => String::new(),
            _ => format!(",\"{key}\":null"),
        }
    }
}

/// Record `id` with the fields the `gain_field_after` and `float_after` knobs add.
fn evolve(record: &str, id: u64, gain: Option<u64>, float: Option<u64>) -> String {
    let mut out = record.strip_suffix('}').unwrap_or(record).to_string();
    if let Some(after) = float {
        match id > after {
            true => out.push_str(&format!(",\"amount\":{id}.5")),
            false => out.push_str(&format!(",\"amount\":{id}")),
        }
    }
    if gain.is_some_and(|after| id > after) {
        out.push_str(&format!(",\"added\":\"late {id}\""));
    }
    out.push('}');
    out
}

/// JSON indented two spaces a level, every token kept byte for byte (a parser and a pretty
/// printer would rewrite escapes and numbers): whitespace goes in only between tokens.
fn indent(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    for c in json.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                depth += 1;
                out.push(c);
                newline(&mut out, depth);
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}
