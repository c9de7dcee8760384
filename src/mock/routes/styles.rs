//! The style paths' handlers: one per pagination style, and the paths around them.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{error, object, Call};

impl Call {
    /// `GET /offset?offset=&limit=`: `{"total":N,"offset":o,"limit":l,"items":[...]}`;
    /// `GET /array?offset=&limit=`: a bare array, no total.
    pub(super) fn offset(&self, bare: bool) -> Response {
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
    pub(super) fn page(&self) -> Response {
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
    pub(super) fn next_url(&self) -> Response {
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
    pub(super) fn link_header(&self) -> Response {
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

    /// `GET /cursor?cursor=&limit=`: `{"items":[...],"next_cursor":"..."|null}`.
    pub(super) fn cursor(&self) -> Response {
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
    pub(super) fn cursor_header(&self) -> Response {
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

    /// `GET /items/{id}`: the record with that id as the whole body; 404 for an id the
    /// dataset does not hold.
    pub(super) fn item(&self) -> Response {
        let id = self.segment("id");
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
    pub(super) fn items(&self) -> Response {
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

    /// `GET /has-more?starting_after=<id>&limit=` (Stripe):
    /// `{"object":"list","data":[...],"has_more":true|false}`; the next cursor is the last id.
    pub(super) fn has_more(&self) -> Response {
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
    pub(super) fn redirect(&self) -> Response {
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
    pub(super) fn graphql(&self) -> Response {
        let run = || -> Result<Response, Response> {
            let request: Value = serde_json::from_slice(&self.body)
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

    /// `POST /_admin/touch?ids=1,2`: those records change now (see `touched_view`).
    pub(super) fn touch(&self) -> Response {
        let data = &self.api.data;
        let ids: Vec<u64> = self
            .query
            .iter()
            .filter(|(k, _)| k == "ids")
            .flat_map(|(_, v)| v.split(',').filter_map(|id| id.trim().parse().ok()).collect::<Vec<u64>>())
            .filter(|id| (1..=data.len()).contains(id))
            .collect();
        let delete = self.param("deleted") == Some("true");
        let mut touched = self.api.touched.lock().expect("touched lock");
        let mut deleted = self.api.deleted.lock().expect("deleted lock");
        for id in &ids {
            touched.push(*id);
            match delete {
                true => deleted.insert(*id),
                false => deleted.remove(id),
            };
        }
        self.json(StatusCode::OK, json!({"touched": ids.len()}).to_string(), HeaderMap::new())
    }

    /// `GET /_stats`: the requests served so far and the most in flight at once.
    pub(super) fn stats(&self) -> Response {
        let stats = &self.api.stats;
        let body = json!({"requests": stats.requests(), "max_in_flight": stats.max_in_flight()});
        self.json(StatusCode::OK, body.to_string(), HeaderMap::new())
    }
}
