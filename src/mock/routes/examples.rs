//! `/examples/<api>/...`: the response shapes, pagination and credentials of real APIs, each
//! as its documentation describes it, so that the jobs in `jobs/examples/` (and `harvest init`)
//! are tested against them: GitHub's issues (Link header, bearer), Stripe's charges
//! (`starting_after` + `has_more`, the secret key as the basic-auth user), Slack's
//! `conversations.history` (`response_metadata.next_cursor`, `""` at the end), Notion's
//! database query (POST, `start_cursor`), Shopify's orders (`page_info` in a Link header, no
//! other filter beside it), HubSpot's contacts (`paging.next.after`, OAuth2), Salesforce's
//! SOQL query (`nextRecordsUrl` relative to the host, OAuth2), a GraphQL Relay connection
//! (edges and `pageInfo.endCursor`); and the shapes of the common frameworks: Django REST
//! Framework's cursor pagination, FastAPI's fastapi-pagination (page and limit-offset) and
//! json-server (`_page`, `_limit`, Link and X-Total-Count).

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{on, MethodFilter};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use super::{error, Call};
use crate::MockApi;

/// How an example API wants its credential.
#[derive(Clone, Copy)]
enum Credential {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// An access token from the mock's `/oauth/token`.
    OAuth,
    /// Stripe: the secret key as the basic-auth user, no password.
    KeyAsUser,
    /// Shopify: `X-Shopify-Access-Token: <secret>`.
    ShopifyToken,
    None,
}

/// The example APIs' paths, each with its method and its credential.
pub(super) fn router() -> Router<Arc<MockApi>> {
    use Credential::{Bearer, KeyAsUser, OAuth, ShopifyToken};
    use MethodFilter as M;
    const OPEN: Credential = Credential::None;
    let routes: Vec<(&str, MethodFilter, Credential, Serve)> = vec![
        ("/github/repos/{owner}/{repo}/issues", M::GET, Bearer, Call::github),
        ("/github/repos/{owner}/{repo}/issues/comments", M::GET, Bearer, Call::github),
        ("/github/orgs/{org}/repos", M::GET, Bearer, Call::github_repos),
        ("/stripe/v1/charges", M::GET, KeyAsUser, Call::stripe),
        ("/slack/api/conversations.history", M::GET.or(M::POST), Bearer, Call::slack),
        ("/notion/v1/databases/{database}/query", M::POST, Bearer, Call::notion),
        ("/shopify/admin/api/{version}/orders.json", M::GET, ShopifyToken, Call::shopify),
        ("/hubspot/crm/v3/objects/contacts", M::GET, OAuth, Call::hubspot),
        ("/salesforce/services/data/{version}/query", M::GET, OAuth, |call| call.salesforce(None)),
        ("/salesforce/services/data/{version}/query/{locator}", M::GET, OAuth, |call| {
            call.salesforce(Some(call.segment("locator")))
        }),
        ("/relay/graphql", M::POST, Bearer, Call::relay),
        ("/drf/cursor/items/", M::GET, OPEN, Call::drf_cursor),
        ("/fastapi/items", M::GET, OPEN, Call::fastapi_page),
        ("/fastapi/limit-offset/items", M::GET, OPEN, Call::fastapi_limit_offset),
        ("/json-server/posts", M::GET, OPEN, Call::json_server),
        ("/repeats", M::GET, OPEN, Call::repeats),
        ("/repeats/", M::GET, OPEN, Call::repeats),
        ("/single", M::GET, OPEN, Call::single),
        ("/single/", M::GET, OPEN, Call::single),
        ("/throttled", M::GET.or(M::POST), OPEN, Call::throttled),
        ("/throttled/", M::GET.or(M::POST), OPEN, Call::throttled),
    ];
    let examples = routes.into_iter().fold(Router::new(), |examples, (path, method, credential, serve)| {
        let handler = move |call: Call| async move {
            call.credential(credential).and_then(|()| serve(&call)).unwrap_or_else(|e| e)
        };
        examples.route(path, on(method, handler))
    });
    examples.fallback(|| async { error(StatusCode::NOT_FOUND, "no such example path; see docs/REFERENCE.md") })
}

/// An example path's answer.
type Serve = fn(&Call) -> Result<Response, Response>;

impl Call {
    fn credential(&self, wanted: Credential) -> Result<(), Response> {
        let (secret, tokens) = (&self.api.config.secret, &self.api.stats.tokens);
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let ok = match wanted {
            Credential::None => true,
            Credential::Bearer => return crate::auth::check("bearer", secret, tokens, &self.headers, &[]),
            Credential::OAuth => return crate::auth::check("oauth", secret, tokens, &self.headers, &[]),
            Credential::KeyAsUser => {
                let expected = base64::engine::general_purpose::STANDARD.encode(format!("{secret}:"));
                header("authorization") == format!("Basic {expected}")
            }
            Credential::ShopifyToken => header("x-shopify-access-token") == secret,
        };
        match ok {
            true => Ok(()),
            false => Err(error(StatusCode::UNAUTHORIZED, "missing or wrong credentials")),
        }
    }

    /// A number parameter, or `default`.
    fn count(&self, name: &str, default: u64) -> Result<u64, Response> {
        let n = self.number(name, default)?;
        match n {
            0 => Err(error(StatusCode::BAD_REQUEST, &format!("{name} must be at least 1"))),
            n => Ok(n),
        }
    }

    /// `Link` from `(rel, url)` pairs.
    fn links(links: &[(&str, String)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value: Vec<String> = links.iter().map(|(rel, url)| format!("<{url}>; rel=\"{rel}\"")).collect();
        if !value.is_empty() {
            headers.insert(header::LINK, HeaderValue::from_str(&value.join(", ")).expect("a valid header"));
        }
        headers
    }

    /// `GET /repos/{owner}/{repo}/issues?per_page=&page=`: an array, `Link` with next and last.
    fn github(&self) -> Result<Response, Response> {
        let size = self.count("per_page", 30)?.min(100);
        let page = self.count("page", 1)?;
        let (records, _) = self.records((page - 1) * size, size);
        let last = self.len().div_ceil(size).max(1);
        let mut links = Vec::new();
        if page < last {
            links.push(("next", self.url_with(&[("page", (page + 1).to_string())])));
            links.push(("last", self.url_with(&[("page", last.to_string())])));
        }
        Ok(self.json(StatusCode::OK, records, Self::links(&links)))
    }

    /// `GET /orgs/{org}/repos?per_page=&page=`: the organization's 5 repositories (`id`, `name`,
    /// `full_name`, `owner.login`), an array with `Link` as for issues.
    fn github_repos(&self) -> Result<Response, Response> {
        const REPOS: u64 = 5;
        let size = self.count("per_page", 30)?.min(100);
        let page = self.count("page", 1)?;
        let org = serde_json::to_string(self.segment("org")).expect("a name serializes");
        let bare = org.trim_matches('"');
        let records: Vec<String> = ((page - 1) * size + 1..=(page * size).min(REPOS))
            .map(|id| {
                format!(
                    "{{\"id\":{id},\"name\":\"repo-{id}\",\"full_name\":\"{bare}/repo-{id}\",\"owner\":{{\"login\":{org}}}}}"
                )
            })
            .collect();
        let last = REPOS.div_ceil(size).max(1);
        let mut links = Vec::new();
        if page < last {
            links.push(("next", self.url_with(&[("page", (page + 1).to_string())])));
            links.push(("last", self.url_with(&[("page", last.to_string())])));
        }
        Ok(self.json(StatusCode::OK, format!("[{}]", records.join(",")), Self::links(&links)))
    }

    /// `GET /v1/charges?limit=&starting_after=`: a list object with `has_more`.
    fn stripe(&self) -> Result<Response, Response> {
        let size = self.count("limit", 10)?.min(100);
        let start = self.number("starting_after", 0)?.min(self.len());
        let (records, count) = self.records(start, size);
        let body = format!(
            "{{\"object\":\"list\",\"url\":\"/v1/charges\",\"has_more\":{},\"data\":{records}}}",
            start + count < self.len()
        );
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// `GET /api/conversations.history?channel=&limit=&cursor=`: `messages`, and
    /// `response_metadata.next_cursor`, empty on the last page.
    fn slack(&self) -> Result<Response, Response> {
        if self.param("channel").is_none_or(str::is_empty) {
            return Ok(self.json(
                StatusCode::OK,
                json!({"ok": false, "error": "channel_not_found"}).to_string(),
                HeaderMap::new(),
            ));
        }
        let size = self.count("limit", 100)?.min(999);
        let start = self.decode_cursor(self.param("cursor"))?;
        let (records, count) = self.records(start, size);
        let next = self.next_cursor(start, count, size).unwrap_or_default();
        let body = format!(
            "{{\"ok\":true,\"messages\":{records},\"has_more\":{},\"pin_count\":0,\"response_metadata\":{{\"next_cursor\":{}}}}}",
            !next.is_empty(),
            Value::from(next)
        );
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// `POST /v1/databases/{id}/query` with `{"page_size": n, "start_cursor": c}`; wants a
    /// `Notion-Version` header.
    fn notion(&self) -> Result<Response, Response> {
        if self.headers.get("notion-version").is_none() {
            return Err(error(StatusCode::BAD_REQUEST, "Notion-Version header failed validation"));
        }
        let request: Value = serde_json::from_slice(if self.body.is_empty() { b"{}" } else { &self.body })
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("body failed validation: {e}")))?;
        let size = request["page_size"].as_u64().unwrap_or(100).clamp(1, 100);
        let start = self.decode_cursor(request["start_cursor"].as_str())?;
        let (records, count) = self.records(start, size);
        let next = self.next_cursor(start, count, size);
        let body = format!(
            "{{\"object\":\"list\",\"results\":{records},\"next_cursor\":{},\"has_more\":{},\"type\":\"page_or_database\",\"page_or_database\":{{}}}}",
            next.as_ref().map_or(Value::Null, |c| Value::from(c.as_str())),
            next.is_some()
        );
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// `GET /admin/api/{version}/orders.json?status=any&limit=` then `?limit=&page_info=`: the
    /// next page only through the Link header, and a `page_info` request may carry nothing but
    /// `limit` and `fields`.
    fn shopify(&self) -> Result<Response, Response> {
        let size = self.count("limit", 50)?.min(250);
        let start = match self.param("page_info") {
            Some(info) => {
                if let Some((other, _)) =
                    self.query.iter().find(|(k, _)| !matches!(k.as_str(), "page_info" | "limit" | "fields"))
                {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        &format!("page_info - {other} cannot be combined with page_info"),
                    ));
                }
                self.decode_cursor(Some(info))?
            }
            None => 0,
        };
        let (records, count) = self.records(start, size);
        let mut links = Vec::new();
        if let Some(next) = self.next_cursor(start, count, size) {
            let url = self.url_with(&[("page_info", next)]);
            // Only limit goes on with page_info: the first request's filters are in the cursor.
            let mut url =
                url::Url::parse(&url).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| matches!(k.as_ref(), "page_info" | "limit"))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut().clear().extend_pairs(kept);
            links.push(("next", url.to_string()));
        }
        Ok(self.json(StatusCode::OK, format!("{{\"orders\":{records}}}"), Self::links(&links)))
    }

    /// `GET /crm/v3/objects/contacts?limit=&after=`: `paging.next.after` and `.link`, no
    /// `paging` on the last page.
    fn hubspot(&self) -> Result<Response, Response> {
        let size = self.count("limit", 10)?.min(100);
        let start = self.number("after", 0)?;
        let (records, count) = self.records(start, size);
        let paging = match start + count < self.len() {
            true => {
                let after = (start + count).to_string();
                let link = self.url_with(&[("after", after.clone())]);
                format!(",\"paging\":{{\"next\":{{\"after\":\"{after}\",\"link\":{}}}}}", Value::from(link))
            }
            false => String::new(),
        };
        Ok(self.json(StatusCode::OK, format!("{{\"results\":{records}{paging}}}"), HeaderMap::new()))
    }

    /// `GET /services/data/{v}/query?q=` then the `nextRecordsUrl` it gives, a path on the
    /// same host: `{"totalSize":N,"done":b,"nextRecordsUrl":"...","records":[...]}`. The batch
    /// size comes from `Sforce-Query-Options: batchSize=N` (2,000 by default).
    fn salesforce(&self, locator: Option<&str>) -> Result<Response, Response> {
        let start = match locator {
            None => {
                if self.param("q").is_none_or(|q| !q.to_ascii_uppercase().starts_with("SELECT")) {
                    return Err(error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY: q must be a SOQL SELECT"));
                }
                0
            }
            Some(locator) => locator
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse().ok())
                .ok_or_else(|| error(StatusCode::NOT_FOUND, "INVALID_QUERY_LOCATOR"))?,
        };
        let options = self.headers.get("sforce-query-options").and_then(|v| v.to_str().ok()).unwrap_or("");
        let size = options
            .split(',')
            .find_map(|o| o.trim().strip_prefix("batchSize=")?.parse::<u64>().ok())
            .unwrap_or(2000)
            .clamp(200, 2000);
        let (records, count) = self.records(start, size);
        let done = start + count >= self.len();
        // The path this request came by, up to `/query`: the next URL is relative to the host.
        let base = &self.path[..self.path.find("/query").map_or(self.path.len(), |i| i + "/query".len())];
        let next = match done {
            true => String::new(),
            false => format!(",\"nextRecordsUrl\":\"{base}/01gD0000002HU6KIAW-{}\"", start + count),
        };
        let body = format!("{{\"totalSize\":{},\"done\":{done}{next},\"records\":{records}}}", self.len());
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// `POST /graphql` with `variables.first` and `variables.after`: a Relay connection of
    /// edges, each `{"cursor": c, "node": {...}}`, with `pageInfo`.
    fn relay(&self) -> Result<Response, Response> {
        let request: Value = serde_json::from_slice(&self.body)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("the body must be JSON: {e}")))?;
        let variables = &request["variables"];
        let size = variables["first"].as_u64().unwrap_or(100).clamp(1, 100);
        let start = self.decode_cursor(variables["after"].as_str())?;
        let end = (start + size).min(self.len());
        let edges: Vec<String> = (start..end)
            .map(|i| {
                let (one, _) = self.records(i, 1);
                format!("{{\"cursor\":\"{}\",\"node\":{}}}", Self::encode_cursor(i + 1), &one[1..one.len() - 1])
            })
            .collect();
        let end_cursor = if end > start { Value::from(Self::encode_cursor(end)) } else { Value::Null };
        let body = format!(
            "{{\"data\":{{\"repository\":{{\"issues\":{{\"totalCount\":{},\"pageInfo\":{{\"endCursor\":{end_cursor},\"hasNextPage\":{}}},\"edges\":[{}]}}}}}}}}",
            self.len(),
            end < self.len(),
            edges.join(",")
        );
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// Django REST Framework's CursorPagination: `next` and `previous` URLs carrying
    /// `cursor`, no count.
    fn drf_cursor(&self) -> Result<Response, Response> {
        let size = self.count("page_size", 100)?;
        let start = self.decode_cursor(self.param("cursor"))?;
        let (records, count) = self.records(start, size);
        let next = self.next_cursor(start, count, size).map(|c| self.url_with(&[("cursor", c)]));
        let previous =
            (start > 0).then(|| self.url_with(&[("cursor", Self::encode_cursor(start.saturating_sub(size)))]));
        let body = json!({"next": next, "previous": previous}).to_string();
        Ok(self.json(
            StatusCode::OK,
            format!("{},\"results\":{records}}}", body.trim_end_matches('}')),
            HeaderMap::new(),
        ))
    }

    /// fastapi-pagination's `Page`: `{"items":[...],"total":N,"page":p,"size":s,"pages":P}`.
    fn fastapi_page(&self) -> Result<Response, Response> {
        let (page, size) = (self.count("page", 1)?, self.count("size", 50)?.min(100));
        let (records, _) = self.records((page - 1) * size, size);
        let body = format!(
            "{{\"items\":{records},\"total\":{},\"page\":{page},\"size\":{size},\"pages\":{}}}",
            self.len(),
            self.len().div_ceil(size)
        );
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// fastapi-pagination's `LimitOffsetPage`: `{"items":[...],"total":N,"limit":l,"offset":o}`.
    fn fastapi_limit_offset(&self) -> Result<Response, Response> {
        let (limit, offset) = (self.count("limit", 50)?.min(100), self.number("offset", 0)?);
        let (records, _) = self.records(offset, limit);
        let body = format!("{{\"items\":{records},\"total\":{},\"limit\":{limit},\"offset\":{offset}}}", self.len());
        Ok(self.json(StatusCode::OK, body, HeaderMap::new()))
    }

    /// json-server (0.17): `?_page=&_limit=` gives an array, `Link` with first, prev, next and
    /// last, and `X-Total-Count`.
    /// json-server (0.17): `_page` and `_limit`; the Link header and X-Total-Count come only
    /// when `_page` is in the query. Without it, `_limit` alone gives the first records and
    /// nothing else (no way on), and neither gives every record.
    fn json_server(&self) -> Result<Response, Response> {
        if self.param("_page").is_none() {
            let size = match self.param("_limit") {
                Some(_) => self.count("_limit", 10)?,
                None => self.len(),
            };
            let (records, _) = self.records(0, size);
            return Ok(self.json(StatusCode::OK, records, HeaderMap::new()));
        }
        let (page, size) = (self.count("_page", 1)?, self.count("_limit", 10)?);
        let (records, _) = self.records((page - 1) * size, size);
        let last = self.len().div_ceil(size).max(1);
        let mut links = vec![("first", self.url_with(&[("_page", "1".into())]))];
        if page > 1 {
            links.push(("prev", self.url_with(&[("_page", (page - 1).to_string())])));
        }
        if page < last {
            links.push(("next", self.url_with(&[("_page", (page + 1).to_string())])));
        }
        links.push(("last", self.url_with(&[("_page", last.to_string())])));
        let mut headers = Self::links(&links);
        headers.insert("x-total-count", HeaderValue::from(self.len()));
        Ok(self.json(StatusCode::OK, records, headers))
    }

    /// `/examples/repeats?page=&per_page=`: a broken API that serves page 1 whatever page is
    /// asked (`{"page": p, "data": [...]}`): nothing `init` writes for it can be confirmed.
    fn repeats(&self) -> Result<Response, Response> {
        let page = self.number("page", 1)?;
        let size = self.count("per_page", 20)?;
        let (records, _) = self.records(0, size);
        Ok(self.json(StatusCode::OK, format!("{{\"page\":{page},\"data\":{records}}}"), HeaderMap::new()))
    }

    /// `/examples/single`: an API of one page, `{"total": n, "data": [...]}` (at most 25).
    fn single(&self) -> Result<Response, Response> {
        let (records, count) = self.records(0, 25);
        Ok(self.json(StatusCode::OK, format!("{{\"total\":{count},\"data\":{records}}}"), HeaderMap::new()))
    }

    /// `/examples/throttled?hint=`: 429 to every request, with a hint that asks for no wait
    /// (`zero`: `Retry-After: 0`; `date`: a Retry-After date 30 s past; `reset`: an
    /// X-RateLimit-Reset 30 s past; `ietf`: `RateLimit: "default";r=0;t=0`) or for one second
    /// (`one`), or none.
    fn throttled(&self) -> Result<Response, Response> {
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(30);
        let epoch = past.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let pairs: Vec<(&str, String)> = match self.param("hint").unwrap_or("") {
            "zero" => vec![("retry-after", "0".into())],
            "date" => vec![("retry-after", httpdate::fmt_http_date(past))],
            "reset" => vec![("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", epoch.to_string())],
            "ietf" => vec![("ratelimit", "\"default\";r=0;t=0".into())],
            "one" => vec![("retry-after", "1".into())],
            _ => vec![],
        };
        for (name, value) in pairs {
            response.headers_mut().insert(name, HeaderValue::from_str(&value).expect("a valid header"));
        }
        Ok(response)
    }
}
