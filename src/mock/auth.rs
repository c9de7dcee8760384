//! The mock's protected paths and its OAuth2 token endpoint.
//!
//! `/auth/<kind>/<path>` serves `<path>` (any pagination path, links kept under the prefix)
//! only to a request that carries the kind's credential, built from the mock's `secret`:
//!
//! | kind     | credential                                                        |
//! |----------|-------------------------------------------------------------------|
//! | `bearer` | `Authorization: Bearer <secret>`                                  |
//! | `basic`  | `Authorization: Basic base64("harvest:<secret>")`                 |
//! | `header` | `X-Api-Key: <secret>`                                             |
//! | `query`  | `?api_key=<secret>`                                               |
//! | `cookie` | `Cookie: api_key=<secret>`                                        |
//! | `oauth`  | `Authorization: Bearer <a token from POST /oauth/token, unexpired>` |
//! | `session`| `Cookie: session=<id from POST /login/cookie>` or `Authorization: Token <key from POST /login/token>` |
//!
//! A request without it gets a 401 with `WWW-Authenticate` and an OAuth-style JSON error.
//! `POST /oauth/token` grants `client_credentials` to client `harvest-client` with the secret
//! (HTTP Basic or form fields), for `token_lifetime`, and `refresh_token` for the mock's
//! refresh token: each use rotates it (the answer carries a new one, the old one is dead and
//! answers `invalid_grant`, as Google, Xero and QuickBooks do). It answers slowly (50 ms) so that
//! concurrent token requests overlap if a client sends them, and counts them and the most in
//! progress at once. `POST /login/cookie` and `POST /login/token` take `username = "harvest"`
//! and the secret as `password` (JSON or form) and answer with a session cookie or
//! `{"key": ...}`, counted with the token requests. `POST /oauth/revoke` revokes every token
//! and session issued so far.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use serde_json::json;

/// The username of `basic` and the client id of `oauth`.
pub const USER: &str = "harvest";
pub const CLIENT_ID: &str = "harvest-client";

/// Issued tokens and what the token endpoint saw.
#[derive(Debug, Default)]
pub struct Tokens {
    issued: Mutex<HashMap<String, Issued>>,
    next: AtomicU64,
    requests: AtomicU64,
    in_progress: AtomicU64,
    max_in_progress: AtomicU64,
    /// 401s answered on `/auth/oauth`, by why: `expired`, `revoked`, `unknown`, `missing`.
    refused: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// The refresh token that works now (`None`: the configured one, not used yet).
    refresh: Mutex<Option<String>>,
    /// Refresh tokens handed out, for the tests' leak searches.
    refresh_issued: Mutex<Vec<String>>,
}

#[derive(Debug, Clone, Copy)]
struct Issued {
    expires: Instant,
    revoked: bool,
}

impl Tokens {
    /// Token requests answered (granted or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The most token requests in progress at once.
    pub fn max_in_progress(&self) -> u64 {
        self.max_in_progress.load(Ordering::SeqCst)
    }

    /// 401s on `/auth/oauth` for this reason.
    pub fn refused(&self, reason: &str) -> u64 {
        self.refused.lock().expect("refused lock").get(reason).copied().unwrap_or(0)
    }

    /// Every access and refresh token issued so far, as the tests search for them.
    pub fn issued(&self) -> Vec<String> {
        let mut all: Vec<String> = self.issued.lock().expect("tokens lock").keys().cloned().collect();
        all.extend(self.refresh_issued.lock().expect("refresh lock").iter().cloned());
        all
    }

    /// A token or session id issued here, unrevoked and unexpired; else a counted 401.
    fn valid(&self, id: &str) -> Result<(), Response> {
        let issued = self.issued.lock().expect("tokens lock").get(id).copied();
        match issued {
            None => Err(self.refuse("unknown")),
            Some(t) if t.revoked => Err(self.refuse("revoked")),
            Some(t) if t.expires <= Instant::now() => Err(self.refuse("expired")),
            Some(_) => Ok(()),
        }
    }

    fn refuse(&self, reason: &'static str) -> Response {
        *self.refused.lock().expect("refused lock").entry(reason).or_default() += 1;
        unauthorized("invalid_token", &format!("the access token is {reason}"))
    }
}

/// `/auth/<kind>/<path>`: `<path>` for a request with the kind's credential, else its refusal.
pub(super) async fn authorize(State(api): State<Arc<super::MockApi>>, request: Request, next: Next) -> Response {
    let arrived = request.extensions().get::<super::Arrived>().expect("counted on arrival");
    let path = arrived.uri.path();
    let kind = path.strip_prefix("/auth/").and_then(|rest| rest.split('/').next()).unwrap_or("");
    let query = super::routes::query_pairs(request.uri());
    match check(kind, &api.config.secret, &api.stats.tokens, request.headers(), &query) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// `POST /oauth/...` (a token, or `/oauth/revoke`), `POST /login/<how>` (a session), and
/// Salesforce's `.../services/oauth2/token` (as `/oauth/token`).
pub(super) async fn token(State(api): State<Arc<super::MockApi>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = super::routes::query_pairs(&parts.uri);
    let path = parts.uri.path();
    let path = if path.ends_with("/services/oauth2/token") { "/oauth/token" } else { path };
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    endpoint(path, &query, &api.config, &api.stats.tokens, &parts.headers, &body).await
}

/// Check the credential of `/auth/<kind>/...`.
pub(super) fn check(
    kind: &str,
    secret: &str,
    tokens: &Tokens,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> Result<(), Response> {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    // `refuse=1`: every credential is refused, as a path needing a scope the client lacks.
    if query.iter().any(|(k, v)| k == "refuse" && v == "1") {
        return Err(unauthorized("insufficient_scope", "the token lacks the scope this path needs"));
    }
    let ok = match kind {
        "bearer" => header(header::AUTHORIZATION) == format!("Bearer {secret}"),
        "basic" => {
            let expected = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{secret}"));
            header(header::AUTHORIZATION) == format!("Basic {expected}")
        }
        "header" => headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(secret),
        "query" => query.iter().any(|(k, v)| k == "api_key" && v == secret),
        "cookie" => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|pair| pair.trim() == format!("api_key={secret}")),
        "oauth" => {
            let Some(token) = header(header::AUTHORIZATION).strip_prefix("Bearer ") else {
                return Err(tokens.refuse("missing"));
            };
            return tokens.valid(token);
        }
        "session" => {
            let cookie = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| pair.trim().strip_prefix("session=").map(str::to_string));
            let key = header(header::AUTHORIZATION).strip_prefix("Token ").map(str::to_string);
            let Some(id) = cookie.or(key) else { return Err(tokens.refuse("missing")) };
            return tokens.valid(&id);
        }
        other => {
            let kinds = "bearer, basic, header, query, cookie, oauth, session";
            return Err(json_response(
                StatusCode::NOT_FOUND,
                json!({ "detail": format!("no auth kind {other:?}; the kinds are {kinds}") }),
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(unauthorized("invalid_token", "missing or wrong credentials"))
    }
}

/// `POST /oauth/token` and `POST /oauth/revoke`.
async fn endpoint(
    path: &str,
    query: &[(String, String)],
    config: &super::MockConfig,
    tokens: &Tokens,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if path == "/oauth/revoke" {
        for issued in tokens.issued.lock().expect("tokens lock").values_mut() {
            issued.revoked = true;
        }
        return json_response(StatusCode::OK, json!({ "revoked": true }));
    }
    let seq = tokens.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let now = tokens.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
    tokens.max_in_progress.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (secret, lifetime) = (&config.secret, config.token_lifetime);
    let knob = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let response = match path.strip_prefix("/login/") {
        // `fail=N`: the first N token or login requests answer 503.
        _ if knob("fail").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| seq <= n) => {
            json_response(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "temporarily_unavailable" }))
        }
        Some(how) => login(how, secret, lifetime, tokens, headers, body),
        None => {
            let mut response = grant(config, tokens, headers, body);
            // `token_type=mac` or `no_token=1`: a grant a bearer client cannot use.
            if knob("token_type").is_some() || knob("no_token").is_some() {
                let bytes =
                    axum::body::to_bytes(std::mem::take(response.body_mut()), 1 << 20).await.unwrap_or_default();
                let mut answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if let Some(kind) = knob("token_type") {
                    answer["token_type"] = json!(kind);
                }
                if knob("no_token").is_some() {
                    answer.as_object_mut().map(|o| o.remove("access_token"));
                }
                response = json_response(StatusCode::OK, answer);
            }
            response
        }
    };
    tokens.in_progress.fetch_sub(1, Ordering::SeqCst);
    response
}

fn grant(config: &super::MockConfig, tokens: &Tokens, headers: &HeaderMap, body: &[u8]) -> Response {
    let (secret, refresh_token, lifetime) = (&config.secret, &config.refresh_token, config.token_lifetime);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant_type == JWT_BEARER {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let audience = format!("http://{host}/oauth/token");
        if let Err(why) = verify_assertion(form.get("assertion").map(String::as_str).unwrap_or(""), &audience, config) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &why);
        }
        return issue(tokens, lifetime, form.get("scope").cloned(), json!({}));
    }
    if !matches!(grant_type, "client_credentials" | "refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "client_credentials, refresh_token or jwt-bearer",
        );
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    let (id, client_secret) = match basic.as_deref().and_then(|b| b.split_once(':')) {
        Some((id, s)) => (decode(id), decode(s)),
        None => {
            (form.get("client_id").cloned().unwrap_or_default(), form.get("client_secret").cloned().unwrap_or_default())
        }
    };
    if id != CLIENT_ID || client_secret != *secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    }
    let mut answer = json!({});
    if grant_type == "refresh_token" {
        let n = tokens.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut current = tokens.refresh.lock().expect("refresh lock");
        let valid = current.clone().unwrap_or_else(|| refresh_token.to_string());
        if form.get("refresh_token") != Some(&valid) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token is invalid or was already used",
            );
        }
        let rotated = format!("mock-refresh-{n}-{:016x}", rand::random::<u64>());
        *current = Some(rotated.clone());
        tokens.refresh_issued.lock().expect("refresh lock").push(rotated.clone());
        answer["refresh_token"] = json!(rotated);
    }
    issue(tokens, lifetime, form.get("scope").cloned(), answer)
}

/// The grant type of RFC 7523 assertions.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The issuer the mock takes assertions from.
pub const JWT_ISSUER: &str = "harvest@mock.iam.gserviceaccount.com";

/// An access token, added to `answer`.
fn issue(tokens: &Tokens, lifetime: Duration, scope: Option<String>, mut answer: serde_json::Value) -> Response {
    let n = tokens.next.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("mock-access-{n}-{:016x}", rand::random::<u64>());
    let issued = Issued { expires: Instant::now() + lifetime, revoked: false };
    tokens.issued.lock().expect("tokens lock").insert(token.clone(), issued);
    answer["access_token"] = json!(token);
    answer["token_type"] = json!("Bearer");
    answer["expires_in"] = json!(lifetime.as_secs().max(1));
    answer["scope"] = json!(scope.unwrap_or_default());
    json_response(StatusCode::OK, answer)
}

/// An assertion signed by one of the mock's public keys, from `JWT_ISSUER`, for `audience`,
/// unexpired.
fn verify_assertion(assertion: &str, audience: &str, config: &super::MockConfig) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| format!("not a JWT: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[JWT_ISSUER]);
    for pem in &config.jwt_public_keys {
        let key = match header.alg {
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
            _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
        };
        let Ok(key) = key else { continue };
        if jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation).is_ok() {
            return Ok(());
        }
    }
    Err("the assertion is not signed by a known key, or its iss, aud or exp is wrong".into())
}

/// `POST /login/cookie` or `/login/token`: a session for `harvest` with the secret.
fn login(how: &str, secret: &str, lifetime: Duration, tokens: &Tokens, headers: &HeaderMap, body: &[u8]) -> Response {
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("json"));
    let fields: HashMap<String, String> = if json {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        HashMap::from([("username".into(), text("username")), ("password".into(), text("password"))])
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    if field("username") != USER || field("password") != secret {
        return json_response(StatusCode::UNAUTHORIZED, json!({ "detail": "invalid username or password" }));
    }
    let n = tokens.next.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("mock-session-{n}-{:016x}", rand::random::<u64>());
    let issued = Issued { expires: Instant::now() + lifetime, revoked: false };
    tokens.issued.lock().expect("tokens lock").insert(id.clone(), issued);
    match how {
        "token" => json_response(StatusCode::OK, json!({ "key": id })),
        _ => {
            let mut response = json_response(StatusCode::OK, json!({ "ok": true }));
            let cookie = format!("session={id}; Path=/; HttpOnly; SameSite=Lax");
            response.headers_mut().insert(header::SET_COOKIE, cookie.parse().expect("a valid header"));
            response
        }
    }
}

fn unauthorized(error: &str, description: &str) -> Response {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, error, description);
    let challenge = format!("Bearer realm=\"mock\", error=\"{error}\"");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.parse().expect("a valid header"));
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(status, json!({ "error": error, "error_description": description }))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}
