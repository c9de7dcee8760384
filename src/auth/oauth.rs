//! OAuth2 access tokens: one token for the whole job, fetched before the first request,
//! renewed ahead of its expiry and once on a 401, one renewal at a time.
//!
//! Every request first waits in [`Credentials::ready`] (see `renewal.rs`), holding neither a concurrency slot
//! nor a rate-limit token, so a renewal never waits on the requests that wait on it. The
//! renewal itself is single-flight: whoever takes the lock first asks the token endpoint;
//! the others find a newer token when they get the lock and ask nothing. A token is renewed
//! when less than min(60 s, a quarter of its lifetime) remains; one without `expires_in` is
//! kept until a 401. A 401 renews only if the request carried the token still current (one
//! that failed with a token already replaced just goes again with the new one). Each token
//! is taught to the run's redactor the moment it arrives. Token requests go to `token_url`
//! with the client's secret, never anywhere else, are retried on connection errors, 429 and
//! 5xx with the job's backoff, and take no slot of the API's rate limit.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use url::Url;

use super::exchange::{read_answer, refusal, Retry, Retryable};
use super::fixed::{add, Place};
use super::renewal::Renewal;
use super::{Credentials, JobCredentials, Outbound, Pending};
use crate::error::FetchErrorKind;
use crate::redact::{Redactor, Secret};

/// What buys a token, resolved from the job file.
#[derive(Clone)]
pub struct Grant {
    /// The job file's kind, for messages.
    pub kind: &'static str,
    pub token_url: Url,
    pub client_id: String,
    /// `None` for a public client (a refresh token bought with PKCE).
    pub client_secret: Option<String>,
    pub flow: Flow,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    /// Extra form fields.
    pub params: Vec<(String, String)>,
    pub client_auth: ClientAuth,
}

/// What the client trades for a token.
#[derive(Clone)]
pub enum Flow {
    /// Its own credentials (RFC 6749 4.4).
    ClientCredentials,
    /// A refresh token (RFC 6749 6), which the server may rotate on every use; `cache`
    /// overrides where the rotated one is kept.
    RefreshToken { configured: String, cache: Option<std::path::PathBuf> },
    /// A signed assertion (RFC 7523): service accounts.
    JwtBearer(super::assertion::Assertion),
}

/// How the client proves itself to the token endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` as form fields.
    Body,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("kind", &self.kind)
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl Grant {
    pub fn describe(&self) -> String {
        let scopes = if self.scopes.is_empty() { String::new() } else { format!(", scopes {}", self.scopes.join(" ")) };
        format!(
            "{}: client {} gets a token from {}{scopes}; renewed ahead of expiry and once on a 401, \
             sent as Authorization: Bearer to the allowed origins only",
            self.kind, self.client_id, self.token_url
        )
    }
}

/// A token as the run holds it.
#[derive(Debug)]
struct Token {
    value: String,
    lifetime: Option<Duration>,
    /// The scopes the server says it granted.
    scope: Option<String>,
}

/// What a token endpoint granted.
struct Granted {
    value: String,
    lifetime: Option<Duration>,
    scope: Option<String>,
}

/// A refresh token as the run holds it: the one to use next, and where it is kept.
#[derive(Debug)]
struct Refresh {
    current: String,
    configured: String,
    cache: Option<std::path::PathBuf>,
}

/// The run's credentials for an OAuth kind.
#[derive(Debug)]
pub struct OAuth {
    grant: Grant,
    refresh: std::sync::Mutex<Option<Refresh>>,
    client: reqwest::Client,
    retry: Retry,
    max_body: u64,
    secrets: Redactor,
    job: JobCredentials,
    tokens: Renewal<Token>,
}

impl OAuth {
    /// `client` is the job's (its TLS settings and timeouts), used without the job's limits;
    /// `job` names the refresh-token cache.
    pub fn new(
        grant: Grant,
        client: reqwest::Client,
        retry: Retry,
        max_body: u64,
        secrets: Redactor,
        job: &str,
    ) -> Self {
        let refresh = match &grant.flow {
            Flow::ClientCredentials | Flow::JwtBearer(_) => None,
            Flow::RefreshToken { configured, cache } => {
                let cache =
                    cache.clone().or_else(|| super::cache::default_path(job, &grant.token_url, &grant.client_id));
                let cached = cache.as_deref().and_then(|path| super::cache::load(path, configured));
                if let Some(path) = cached.as_ref().and(cache.as_ref()) {
                    tracing::info!("{}: using the refresh token rotated into {}", grant.kind, path.display());
                }
                let current = cached.unwrap_or_else(|| configured.clone());
                secrets.learn(Secret::new("oauth refresh token", current.clone()));
                Some(Refresh { current, configured: configured.clone(), cache })
            }
        };
        OAuth {
            grant,
            refresh: std::sync::Mutex::new(refresh),
            client,
            retry,
            max_body,
            job: JobCredentials::new(secrets.clone()),
            secrets,
            tokens: Renewal::default(),
        }
    }

    /// A new token, and when to renew it: when less than min(60 s, a quarter of its
    /// lifetime) remains.
    async fn obtain(&self) -> Result<(Token, Option<Instant>), FetchErrorKind> {
        let Granted { value, lifetime, scope } = self.request_token().await?;
        let renew_at = lifetime.map(|life| Instant::now() + life - (life / 4).min(Duration::from_secs(60)));
        tracing::info!(
            "{}: got an access token from {}{}",
            self.grant.kind,
            self.grant.token_url,
            match lifetime {
                Some(life) => format!(", valid for {}", crate::human::duration(life)),
                None => ", without an expiry (kept until a 401)".to_string(),
            }
        );
        Ok((Token { value, lifetime, scope }, renew_at))
    }

    /// Ask the token endpoint, with retries; the token (taught to the redactor) and its lifetime.
    async fn request_token(&self) -> Result<Granted, FetchErrorKind> {
        let what = format!("the token endpoint {}", self.grant.token_url);
        self.retry.run(&what, || self.send_token_request()).await
    }

    /// One token request: granted, refused for good, or `Err` with what a retry may cure.
    async fn send_token_request(&self) -> Result<Result<Granted, FetchErrorKind>, Retryable> {
        let grant = &self.grant;
        let refresh_token = self.refresh.lock().expect("refresh lock").as_ref().map(|r| r.current.clone());
        let assertion = match &grant.flow {
            Flow::JwtBearer(assertion) => {
                let signed = assertion.sign().map_err(Retryable::Unsigned)?;
                self.secrets.learn(Secret::new("jwt assertion", signed.clone()));
                Some(signed)
            }
            _ => None,
        };
        let mut form: Vec<(&str, &str)> = match (&refresh_token, &assertion) {
            (Some(token), _) => vec![("grant_type", "refresh_token"), ("refresh_token", token)],
            (None, Some(assertion)) => {
                vec![("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion)]
            }
            (None, None) => vec![("grant_type", "client_credentials")],
        };
        let scope = grant.scopes.join(" ");
        // A service account's scopes are claims of its assertion.
        if !scope.is_empty() && assertion.is_none() {
            form.push(("scope", &scope));
        }
        if let Some(audience) = &grant.audience {
            form.push(("audience", audience));
        }
        form.extend(grant.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut request = self.client.post(grant.token_url.clone()).header("Accept", "application/json");
        match (grant.client_auth, &grant.client_secret) {
            (ClientAuth::Basic, Some(secret)) => {
                let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(&grant.client_id), encode(secret));
                let basic = base64::engine::general_purpose::STANDARD.encode(pair);
                request = request.header("Authorization", format!("Basic {basic}"));
            }
            (ClientAuth::Body, Some(secret)) => {
                form.push(("client_id", &grant.client_id));
                form.push(("client_secret", secret));
            }
            // An assertion is the client's proof; a public client names itself only.
            (_, None) if assertion.is_some() => {}
            (_, None) => form.push(("client_id", &grant.client_id)),
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
        let request = request.header("Content-Type", "application/x-www-form-urlencoded").body(body);
        let response = request
            .send()
            .await
            .map_err(|e| Retryable::Unanswered(self.secrets.redact(&e.to_string()).into_owned()))?;
        let (status, bytes) = read_answer(response, self.max_body).await?;
        if !(200..300).contains(&status) {
            let (code, words) = refusal(&bytes);
            if code.as_deref() == Some("invalid_grant") && refresh_token.is_some() {
                return Ok(Err(self.refused(self.dead_refresh_token())));
            }
            let said = words.unwrap_or_else(|| format!("HTTP {status}"));
            return Ok(Err(self.refused(format!(
                "refused client {} with {status}: {}",
                grant.client_id,
                self.secrets.redact(&said)
            ))));
        }
        Ok(self.granted(serde_json::from_slice(&bytes).ok()))
    }

    fn granted(&self, json: Option<Value>) -> Result<Granted, FetchErrorKind> {
        let Some(json) = json else {
            return Err(self.refused("answered with a body that is not JSON".into()));
        };
        let Some(token) = json.get("access_token").and_then(Value::as_str).filter(|t| !t.is_empty()) else {
            return Err(self.refused("answered without an access_token".into()));
        };
        // Taught before anything else can print it.
        self.secrets.learn(Secret::new("oauth access token", token));
        match json.get("token_type").and_then(Value::as_str) {
            None => {}
            Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
            Some(other) => {
                return Err(self.refused(format!("issued a token of type {other:?}; harvest sends bearer tokens only")))
            }
        }
        let seconds = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let lifetime = seconds.filter(|s| s.is_finite() && *s > 0.0).map(Duration::from_secs_f64);
        let scope = json.get("scope").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(rotated) = json.get("refresh_token").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            self.rotated(rotated);
        }
        Ok(Granted { value: token.to_string(), lifetime, scope })
    }

    /// The server rotated the refresh token: the old one is dead, so the new one is kept
    /// before anything else happens.
    fn rotated(&self, token: &str) {
        self.secrets.learn(Secret::new("oauth refresh token", token));
        let mut refresh = self.refresh.lock().expect("refresh lock");
        let Some(refresh) = refresh.as_mut().filter(|r| r.current != token) else { return };
        refresh.current = token.to_string();
        match &refresh.cache {
            Some(path) => match super::cache::save(path, &refresh.configured, token) {
                Ok(()) => {
                    tracing::debug!("{}: the rotated refresh token is kept in {}", self.grant.kind, path.display())
                }
                Err(e) => tracing::warn!(
                    "{}: the server rotated the refresh token and it cannot be kept in {} ({e}); this run goes on, \
                     the next one will need a new refresh token",
                    self.grant.kind,
                    path.display()
                ),
            },
            None => tracing::warn!(
                "{}: the server rotated the refresh token and there is no cache folder (set XDG_CACHE_HOME or \
                 token_cache); the next run will need a new refresh token",
                self.grant.kind
            ),
        }
    }

    /// `invalid_grant` to a refresh token: what it means and what to do.
    fn dead_refresh_token(&self) -> String {
        let cache = self.refresh.lock().expect("refresh lock").as_ref().and_then(|r| r.cache.clone());
        let kept = match cache {
            Some(path) => format!("harvest keeps the latest rotated one in {}", path.display()),
            None => "there is no token cache".into(),
        };
        format!(
            "answered invalid_grant: the refresh token was revoked or already used ({kept}); authorize again and \
             configure the new refresh token"
        )
    }

    fn refused(&self, what: String) -> FetchErrorKind {
        FetchErrorKind::Auth(format!("the token endpoint {} {what}", self.grant.token_url))
    }
}

impl Credentials for OAuth {
    fn ready(&self) -> Pending<'_, ()> {
        Box::pin(self.tokens.ready(|| self.obtain()))
    }

    fn apply(&self, request: Outbound<'_>) -> Result<u64, FetchErrorKind> {
        if !request.trusted {
            return self.job.apply(request);
        }
        let token = self.tokens.current().ok_or_else(|| FetchErrorKind::Auth("no access token yet".into()))?;
        add(request.url, request.headers, Place::Header, "Authorization", &format!("Bearer {}", token.value.value));
        Ok(token.generation)
    }

    fn report(&self) -> Option<String> {
        let held = self.tokens.current()?;
        let token = &held.value;
        let lifetime = match token.lifetime {
            Some(life) => format!("valid for {}", crate::human::duration(Duration::from_secs(life.as_secs()))),
            None => "without an expiry (kept until a 401)".into(),
        };
        let scope = match &token.scope {
            Some(scope) => format!("scopes granted: {}", self.secrets.redact(scope)),
            None => "no scopes named in the response".into(),
        };
        Some(format!("{}: a bearer token from {}, {lifetime}; {scope}", self.grant.kind, self.grant.token_url))
    }

    fn renew(&self, used: u64, status: u16) -> Pending<'_, bool> {
        Box::pin(async move {
            if status != 401 {
                return Ok(false);
            }
            self.tokens
                .renew_after(used, || async {
                    tracing::info!("{}: the API answered 401 to the current token; renewing it", self.grant.kind);
                    self.obtain().await
                })
                .await?;
            Ok(true)
        })
    }
}
