//! The mock API's paths, one per pagination style, and the quirk knobs they share.
//!
//! Handlers return `Result<Response, Response>`: an error is just another response here.
#![allow(clippy::result_large_err)]

mod examples;

use std::collections::HashMap;
use std::io::Write;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::faults::{epoch_after, Fault};
use super::MockApi;

/// Query parameters that switch on the quirks of real APIs. Every path takes them.
#[derive(Debug, Default)]
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
    updated_since: Option<String>,
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
    fn parse(query: &[(String, String)]) -> Self {
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        Knobs {
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
            updated_since: get("updated_since"),
            by_id: get("order").as_deref() == Some("id"),
            desc: get("order").as_deref() == Some("desc"),
            totals_in: get("totals_in"),
            pretty: get("pretty").is_some(),
            odd: get("odd").is_some(),
            gain_field_after: get("gain_field_after").and_then(|v| v.parse().ok()),
            float_after: get("float_after").and_then(|v| v.parse().ok()),
        }
    }
}

/// One request, parsed.
struct Call<'a> {
    api: &'a MockApi,
    method: Method,
    /// The style path, without any `/t/<tenant>` prefix.
    route: String,
    /// The full path as requested.
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    knobs: Knobs,
    /// Position in the dataset of the first record the request can see (`updated_since`).
    first: u64,
    /// Once records have been touched: the records the request can see, in the order served,
    /// each a dataset position and the `updated_at` it has now.
    view: Option<Vec<(u64, chrono::DateTime<chrono::Utc>)>>,
}

/// Answer one request; `seq` is its number in arrival order (from 1).
pub(super) async fn respond(api: &MockApi, request: Request, seq: u64) -> Response {
    let (parts, body) = request.into_parts();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let path = parts.uri.path().to_string();
    let config = &api.config;
    // Salesforce's token URL is on the instance's host: the mock's own token URL there too.
    let token_path = if path.ends_with("/services/oauth2/token") { "/oauth/token" } else { path.as_str() };
    if parts.method == Method::POST && (token_path.starts_with("/oauth/") || token_path.starts_with("/login/")) {
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let tokens = &api.stats.tokens;
        return super::auth::endpoint(token_path, &query, config, tokens, &parts.headers, &body).await;
    }
    // `/auth/<kind>/<path>`: `<path>`, for a request with the kind's credential.
    let unprotected = match path.strip_prefix("/auth/").and_then(|rest| rest.split_once('/')) {
        Some((kind, rest)) => {
            if let Err(refused) = super::auth::check(kind, &config.secret, &api.stats.tokens, &parts.headers, &query) {
                return refused;
            }
            format!("/{rest}")
        }
        None => path.clone(),
    };
    let route = match unprotected.strip_prefix("/t/") {
        Some(rest) => rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_default(),
        None => unprotected.clone(),
    };
    let knobs = Knobs::parse(&query);
    let since = match &knobs.updated_since {
        Some(since) => match chrono::DateTime::parse_from_rfc3339(since) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("updated_since: {e}")),
        },
        None => None,
    };
    let first = since.map_or(0, |t| api.data.position_since(t));
    let view = touched_view(api, since, knobs.by_id);
    let call = Call { api, method: parts.method, route, path, query, headers: parts.headers, knobs, first, view };
    if call.knobs.html {
        return Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><head><title>Maintenance</title></head><body><h1>We'll be back soon</h1></body></html>",
            ))
            .expect("a valid response");
    }
    if call.knobs.graphql_errors {
        return call.json(StatusCode::OK, json!({"data": null, "errors": [{"message": "Cannot query field \"itemz\" on type \"Query\"."}, {"message": "rate of queries too high"}]}).to_string(), HeaderMap::new());
    }
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let mut limit_headers = HeaderMap::new();
    if let Some(bucket) = &api.bucket {
        let verdict = bucket.take();
        limit_headers.insert("x-ratelimit-limit", HeaderValue::from(verdict.limit));
        limit_headers.insert("x-ratelimit-remaining", HeaderValue::from(verdict.remaining));
        let reset = std::time::Duration::from_secs_f64(verdict.reset);
        limit_headers.insert("x-ratelimit-reset", HeaderValue::from(epoch_after(reset)));
        if !verdict.allowed {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            response.headers_mut().extend(limit_headers);
            let after = verdict.reset.ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
            return response;
        }
    }
    let flaky = call.knobs.flaky > 0 && {
        let uri = parts.uri.to_string();
        let mut attempts = api.attempts.lock().expect("attempts lock");
        let seen = attempts.entry(uri).or_default();
        *seen += 1;
        *seen <= call.knobs.flaky
    };
    let fault = if call.knobs.throttle_at == Some(seq) {
        Some(Fault::Status(429))
    } else if call.knobs.fail_after.is_some_and(|after| seq > after) || call.knobs.fail_at == Some(seq) {
        Some(Fault::Status(500))
    } else if flaky {
        Fault::parse(&call.knobs.flaky_as)
    } else {
        api.dice.draw()
    };
    if let Some(fault) = fault {
        api.stats.count_fault(fault);
    }
    let retry_after =
        call.knobs.retry_after.clone().unwrap_or_else(|| format!("{}", api.config.retry_after.as_secs_f64()));
    match fault {
        Some(Fault::Status(status)) => {
            let mut response =
                error(StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), "injected fault");
            let from_knob = flaky && call.knobs.retry_after.is_some();
            if from_knob || (!flaky && matches!(status, 429 | 503)) || call.knobs.throttle_at == Some(seq) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_str(&retry_after).expect("a valid header"));
            }
            return response;
        }
        Some(Fault::Reset) => {
            // A body that fails before anything is sent: hyper closes the connection.
            let reset = futures::stream::once(async {
                Err::<bytes::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"))
            });
            return Response::new(Body::from_stream(reset));
        }
        Some(Fault::Slow) => tokio::time::sleep(api.config.slow).await,
        _ => {}
    }
    let mut response = call.dispatch(&body);
    response.headers_mut().extend(limit_headers);
    if call.knobs.stall_at == Some(seq) {
        let (head, full) = response.into_parts();
        let full = axum::body::to_bytes(full, usize::MAX).await.unwrap_or_default();
        let (first, rest) = (full.slice(..full.len() / 2), full.slice(full.len() / 2..));
        let stall = std::time::Duration::from_millis(call.knobs.stall);
        let first = futures::stream::iter([Ok::<_, std::io::Error>(first)]);
        let rest = futures::stream::once(async move {
            tokio::time::sleep(stall).await;
            Ok(rest)
        });
        return Response::from_parts(head, Body::from_stream(futures::StreamExt::chain(first, rest)));
    }
    let cut = match fault {
        Some(Fault::Cut) => true,
        Some(Fault::Invalid) => false,
        _ => return response,
    };
    // Cut the body short: `invalid` frames the half properly, `cut` promises the whole.
    let (mut head, full) = response.into_parts();
    let full = axum::body::to_bytes(full, usize::MAX).await.unwrap_or_default();
    let half = full.slice(..full.len() / 2);
    if cut {
        // The body stream fails after the first half: hyper drops the connection.
        head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
        // The pause lets the head and the first half reach the client before the cut.
        let first = futures::stream::iter([Ok::<_, std::io::Error>(half)]);
        let cut = futures::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut"))
        });
        return Response::from_parts(head, Body::from_stream(futures::StreamExt::chain(first, cut)));
    }
    head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(half.len()));
    Response::from_parts(head, Body::from(half))
}

/// The records a request sees once some have been touched: untouched ones keep `updated_at`
/// = base + id minutes; the k-th touched one moves to base + (N + k) minutes, after all
/// others. Served by `updated_at` (or by id with `order=id`), from `since` on.
fn touched_view(
    api: &MockApi,
    since: Option<chrono::DateTime<chrono::Utc>>,
    by_id: bool,
) -> Option<Vec<(u64, chrono::DateTime<chrono::Utc>)>> {
    let touched = api.touched.lock().expect("touched lock");
    if touched.is_empty() {
        return None;
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
    Some(view)
}

impl Call<'_> {
    fn dispatch(&self, body: &[u8]) -> Response {
        let call = self;
        let api = self.api;
        match (call.method.clone(), call.route.as_str()) {
            (Method::GET, "/offset") => call.offset(false),
            (Method::GET, "/array") => call.offset(true),
            (Method::GET, "/page") => call.page(),
            (Method::GET, "/next-url") => call.next_url(),
            (Method::GET, "/link") => call.link_header(),
            (Method::GET, "/cursor") => call.cursor(),
            (Method::GET, "/cursor-header") => call.cursor_header(),
            (Method::GET, "/has-more") => call.has_more(),
            (Method::GET, "/items") => call.items(),
            (Method::GET, route) if route.starts_with("/items/") => call.item(&route["/items/".len()..]),
            (Method::POST, "/graphql") => call.graphql(body),
            (_, "/redirect") => call.redirect(),
            (_, route) if route.starts_with("/examples/") => call.example(body),
            (Method::POST, "/_admin/touch") => {
                let ids: Vec<u64> = call
                    .query
                    .iter()
                    .filter(|(k, _)| k == "ids")
                    .flat_map(|(_, v)| v.split(',').filter_map(|id| id.trim().parse().ok()).collect::<Vec<u64>>())
                    .filter(|id| (1..=api.data.len()).contains(id))
                    .collect();
                let mut touched = api.touched.lock().expect("touched lock");
                for id in &ids {
                    touched.retain(|t| t != id);
                    touched.push(*id);
                }
                call.json(StatusCode::OK, json!({"touched": ids.len()}).to_string(), HeaderMap::new())
            }
            (Method::GET, "/_stats") => call.json(
                StatusCode::OK,
                json!({"requests": api.stats.requests(), "max_in_flight": api.stats.max_in_flight()}).to_string(),
                HeaderMap::new(),
            ),
            _ => error(StatusCode::NOT_FOUND, "no such path; see docs/REFERENCE.md for the mock API's paths"),
        }
    }
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

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
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
                out.push_str(&record.replace(&was, &at.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
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

    fn json(&self, status: StatusCode, body: impl Into<String>, mut headers: HeaderMap) -> Response {
        let body: String = body.into();
        let content_type = self.knobs.content_type.clone().unwrap_or_else(|| "application/json".into());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/json")),
        );
        let body = if self.knobs.pretty { indent(&body) } else { body };
        let body = match self.knobs.gzip.as_deref() {
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

    /// `"next":...` for the last page, per the `end` knob.
    fn end_member(&self, key: &str) -> String {
        match self.knobs.end.as_str() {
            "empty" => format!(",\"{key}\":\"\""),
            "missing" => String::new(),
            _ => format!(",\"{key}\":null"),
        }
    }

    /// `GET /offset?offset=&limit=`: `{"total":N,"offset":o,"limit":l,"items":[...]}`;
    /// `GET /array?offset=&limit=`: a bare array, no total.
    fn offset(&self, bare: bool) -> Response {
        let run = || -> Result<Response, Response> {
            let offset = self.number("offset", 0)?;
            let size = match self.size("limit")? {
                size if self.knobs.shrink_at.is_some_and(|at| offset >= at) => size.div_ceil(2),
                size => size,
            };
            if let Some(r) = self.past_end(offset) {
                return Ok(r);
            }
            let (records, count) = self.records(offset, size);
            let headers = self.header_totals(offset, count, size);
            if bare {
                return Ok(self.json(StatusCode::OK, records, headers.unwrap_or_default()));
            }
            let total = match self.knobs.omit_total || headers.is_some() {
                true => String::new(),
                false => format!("\"total\":{}", self.len()),
            };
            let body = object(&[
                &total,
                &format!("\"offset\":{offset},\"limit\":{size}"),
                &self.records_member("items", &records, count),
            ]);
            Ok(self.json(StatusCode::OK, body, headers.unwrap_or_default()))
        };
        run().unwrap_or_else(|e| e)
    }

    /// `GET /page?page=&per_page=` (1-based):
    /// `{"page":p,"per_page":s,"total_pages":T,"total":N,"data":[...]}`.
    fn page(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let (page, size, start) = self.numbered_page()?;
            let (records, count) = self.records(start, size);
            let headers = self.header_totals(start, count, size);
            let totals = if self.knobs.omit_total || headers.is_some() {
                String::new()
            } else {
                format!("\"total_pages\":{},\"total\":{}", self.len().div_ceil(size), self.len())
            };
            let body = object(&[
                &format!("\"page\":{page},\"per_page\":{size}"),
                &totals,
                &self.records_member("data", &records, count),
            ]);
            Ok(self.json(StatusCode::OK, body, headers.unwrap_or_default()))
        };
        run().unwrap_or_else(|e| e)
    }

    /// The totals of a page of `count` records from `start` (pages of `size`) in the headers
    /// the `totals_in` knob names; `None` without it (the body has them).
    fn header_totals(&self, start: u64, count: u64, size: u64) -> Option<HeaderMap> {
        let how = self.knobs.totals_in.as_deref()?;
        let (total, pages, page) = (self.len(), self.len().div_ceil(size.max(1)), start / size.max(1) + 1);
        let range = match count {
            0 => format!("items */{total}"),
            n => format!("items {start}-{}/{total}", start + n - 1),
        };
        let pagination = json!({"total": total, "total_pages": pages, "page": page, "page_size": size});
        let pairs: Vec<(&str, String)> = match how {
            "x-total-count" => vec![("x-total-count", total.to_string())],
            "x-pagination" => vec![("x-pagination", pagination.to_string())],
            "content-range" => vec![("content-range", range)],
            "gitlab" => vec![
                ("x-total", total.to_string()),
                ("x-total-pages", pages.to_string()),
                ("x-page", page.to_string()),
                ("x-per-page", size.to_string()),
                ("x-next-page", if page < pages { (page + 1).to_string() } else { String::new() }),
            ],
            "next-page" => vec![("x-next-page", if page < pages { (page + 1).to_string() } else { String::new() })],
            "bad-range" => vec![("content-range", format!("items {start}-{}/abc", start + count))],
            "bad-json" => vec![("x-pagination", "{total: 5".to_string())],
            _ => vec![],
        };
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name, HeaderValue::from_str(&value).expect("a valid header"));
        }
        Some(headers)
    }

    /// The page number after `page`, or `None` on the last page; the `loop` knob makes a
    /// page point at itself.
    fn next_page(&self, page: u64, size: u64) -> Option<u64> {
        if self.knobs.loop_at == Some(page - 1) {
            return Some(page);
        }
        (page * size < self.len()).then_some(page + 1)
    }

    /// `GET /next-url?page=&per_page=` (Django REST Framework):
    /// `{"count":N,"next":url|null,"previous":url|null,"results":[...]}`.
    fn next_url(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let (page, size, start) = self.numbered_page()?;
            let (records, count) = self.records(start, size);
            let next = match self.next_page(page, size) {
                Some(n) => format!(",\"next\":{}", Value::from(self.url_with(&[("page", n.to_string())]))),
                None => self.end_member("next"),
            };
            let previous =
                if page > 1 { Value::from(self.url_with(&[("page", (page - 1).to_string())])) } else { Value::Null };
            let body = object(&[
                &format!("\"count\":{}{next}", self.len()),
                &format!("\"previous\":{previous}"),
                &self.records_member("results", &records, count),
            ]);
            Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
        };
        run().unwrap_or_else(|e| e)
    }

    /// `GET /link?page=&per_page=`: a bare array, with
    /// `Link: <...>; rel="first", <...>; rel="prev", <...>; rel="next", <...>; rel="last"`.
    fn link_header(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let (page, size, start) = self.numbered_page()?;
            let (records, _) = self.records(start, size);
            let quote =
                |rel: &str| if self.knobs.link_style == "unquoted" { rel.to_string() } else { format!("\"{rel}\"") };
            let mut links = vec![format!("<{}>; rel={}", self.url_with(&[("page", "1".into())]), quote("first"))];
            if page > 1 {
                links.push(format!(
                    "<{}>; rel={}; title=\"previous, page\"",
                    self.url_with(&[("page", (page - 1).to_string())]),
                    quote("prev")
                ));
            }
            if let Some(next) = self.next_page(page, size) {
                links.push(format!("<{}>; rel={}", self.url_with(&[("page", next.to_string())]), quote("next")));
            }
            let last = self.len().div_ceil(size).max(1);
            links.push(format!("<{}>; rel={}", self.url_with(&[("page", last.to_string())]), quote("last")));
            // Any order: put next last but one, as some servers do.
            links.rotate_left(1);
            let mut headers = HeaderMap::new();
            if self.knobs.end == "empty" && self.next_page(page, size).is_none() {
                headers.insert(header::LINK, HeaderValue::from_static(""));
            } else if self.knobs.link_style == "split" {
                for l in links {
                    headers.append(header::LINK, HeaderValue::from_str(&l).expect("a valid header"));
                }
            } else {
                headers.insert(header::LINK, HeaderValue::from_str(&links.join(", ")).expect("a valid header"));
            }
            Ok(self.json(StatusCode::OK, records, headers))
        };
        run().unwrap_or_else(|e| e)
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

    /// `GET /cursor?cursor=&limit=`: `{"items":[...],"next_cursor":"..."|null}`.
    fn cursor(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let start = self.decode_cursor(self.param("cursor"))?;
            let size = self.size("limit")?;
            let (records, count) = self.records(start, size);
            let next = match self.next_cursor(start, count, size) {
                Some(c) => format!(",\"next_cursor\":\"{c}\""),
                None => self.end_member("next_cursor"),
            };
            let body = object(&[&self.records_member("items", &records, count), next.trim_start_matches(',')]);
            Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
        };
        run().unwrap_or_else(|e| e)
    }

    /// `GET /cursor-header?limit=` with the cursor in `?cursor=` or an `X-Cursor` header: a
    /// bare array, and the next cursor in the `X-Next-Cursor` response header.
    fn cursor_header(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let cursor = self
                .param("cursor")
                .map(str::to_string)
                .or_else(|| self.headers.get("x-cursor").and_then(|v| v.to_str().ok()).map(str::to_string));
            let start = self.decode_cursor(cursor.as_deref())?;
            let size = self.size("limit")?;
            let (records, count) = self.records(start, size);
            let mut headers = HeaderMap::new();
            if let Some(c) = self.next_cursor(start, count, size) {
                headers.insert("x-next-cursor", HeaderValue::from_str(&c).expect("a valid header"));
            }
            Ok(self.json(StatusCode::OK, records, headers))
        };
        run().unwrap_or_else(|e| e)
    }

    /// `GET /has-more?starting_after=<id>&limit=` (Stripe):
    /// `{"object":"list","data":[...],"has_more":true|false}`; the next cursor is the last id.
    /// `GET /items/{id}`: the record with that id as the whole body; 404 for an id the
    /// dataset does not hold.
    fn item(&self, id: &str) -> Response {
        match id.parse::<u64>() {
            Ok(id) if (1..=self.len()).contains(&id) => {
                let (record, _) = self.records(id - 1, 1);
                let record = &record[1..record.len() - 1];
                self.json(StatusCode::OK, record.to_string(), HeaderMap::new())
            }
            _ => error(StatusCode::NOT_FOUND, &format!("no item {id}")),
        }
    }

    /// `GET /items?ids=1,2,3` (at most 100): `{"items":[...]}`, the records of the ids the
    /// dataset holds, in the order asked; the others are left out.
    fn items(&self) -> Response {
        let asked: Vec<&str> = self.query.iter().filter(|(k, _)| k == "ids").flat_map(|(_, v)| v.split(',')).collect();
        if asked.len() > 100 {
            return error(StatusCode::BAD_REQUEST, "at most 100 ids at once");
        }
        let mut records = Vec::new();
        for id in asked {
            if let Ok(id) = id.trim().parse::<u64>() {
                if (1..=self.len()).contains(&id) {
                    let (record, _) = self.records(id - 1, 1);
                    records.push(record[1..record.len() - 1].to_string());
                }
            }
        }
        let body = format!("{{\"items\":[{}]}}", records.join(","));
        self.json(StatusCode::OK, body, HeaderMap::new())
    }

    fn has_more(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let after = self.number("starting_after", 0)?;
            let start = after.saturating_sub(self.first).min(self.len());
            let size = self.size("limit")?;
            let (records, count) = self.records(start, size);
            let more = start + count < self.len();
            let more = if self.knobs.has_more_as_string { format!("\"{more}\"") } else { more.to_string() };
            let body = object(&[
                "\"object\":\"list\"",
                &self.records_member("data", &records, count),
                &format!("\"has_more\":{more}"),
            ]);
            Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
        };
        run().unwrap_or_else(|e| e)
    }

    /// `GET|POST /redirect?to=<url>&status=307`: a redirect to `to`, with this request's
    /// other query parameters added.
    fn redirect(&self) -> Response {
        let Some(to) = self.param("to") else { return error(StatusCode::BAD_REQUEST, "redirect needs ?to=") };
        let status = self.param("status").and_then(|s| s.parse().ok()).unwrap_or(307);
        let rest: Vec<(String, String)> =
            self.query.iter().filter(|(k, _)| k != "to" && k != "status").cloned().collect();
        let sep = if to.contains('?') { '&' } else { '?' };
        let query: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(rest).finish();
        let location = if query.is_empty() { to.to_string() } else { format!("{to}{sep}{query}") };
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT))
            .header(header::LOCATION, location)
            .body(Body::empty())
            .expect("a valid response")
    }

    /// `POST /graphql` with `{"query": "...", "variables": {"first": n, "after": cursor}}`:
    /// `{"data":{"items":{"nodes":[...],"pageInfo":{"endCursor":c,"hasNextPage":b}}}}`.
    fn graphql(&self, body: &[u8]) -> Response {
        let run = || -> Result<Response, Response> {
            let request: Value = serde_json::from_slice(body)
                .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("the body must be JSON: {e}")))?;
            let variables = &request["variables"];
            let size =
                variables["first"].as_u64().unwrap_or(100).clamp(1, self.knobs.max_page_size.unwrap_or(u64::MAX));
            let start = self.decode_cursor(variables["after"].as_str())?;
            let (records, count) = self.records(start, size);
            let next = self.next_cursor(start, count, size);
            let end_cursor = if count > 0 { Value::from(Self::encode_cursor(start + count)) } else { Value::Null };
            let body = format!(
                "{{\"data\":{{\"items\":{{\"totalCount\":{},\"nodes\":{records},\"pageInfo\":{{\"endCursor\":{end_cursor},\"hasNextPage\":{}}}}}}}}}",
                self.len(),
                next.is_some()
            );
            Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
        };
        run().unwrap_or_else(|e| e)
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
