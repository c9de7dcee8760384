//! The HTTP client: one pooled reqwest client, the job's token bucket, retries, redirects
//! and the rule that credentials go only to the origins allowed to see them.
//!
//! A fetch returns the body of a 2xx response that parsed as JSON, or a [`FetchError`] that
//! names the method, the redacted URL, the status and a body excerpt. Connect errors,
//! timeouts, bodies cut short or not valid JSON, and the `on_status` codes are retried with
//! exponential backoff and full jitter; other statuses fail at once. Redirects are followed
//! here, not by reqwest, so that the origin rule applies to every hop.

use std::collections::BTreeMap;
use std::io::Read;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, USER_AGENT};
use reqwest::StatusCode;
use url::Url;

use crate::error::{Error, FetchError, FetchErrorKind};
use crate::plan::{Method, Plan, RetryPlan};
use crate::redact::{is_sensitive_param, Redactor};

const MAX_REDIRECTS: usize = 10;
const EXCERPT_CHARS: usize = 200;

/// One request to make.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
}

/// A 2xx response whose body is JSON.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    /// The URL that answered, after redirects.
    pub url: Url,
    pub body: Bytes,
    pub attempts: u32,
}

/// Counters for the run manifest.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchStats {
    pub requests: u64,
    pub bytes: u64,
    /// Retries by cause: `status_503`, `timeout`, `connect`, `body`, `invalid_json`.
    pub retries: BTreeMap<String, u64>,
    /// Seconds spent waiting because the server asked (Retry-After).
    pub server_wait_seconds: f64,
}

pub struct Fetcher {
    client: reqwest::Client,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Requests in flight, whole job.
    permits: tokio::sync::Semaphore,
    retry: RetryPlan,
    max_body: u64,
    timeout: Duration,
    respect_server_limits: bool,
    max_wait: Duration,
    redactor: Redactor,
    allowed: Vec<url::Origin>,
    requests: AtomicU64,
    bytes: AtomicU64,
    retries: Mutex<(BTreeMap<String, u64>, f64)>,
}

/// What one attempt came to.
enum Attempt {
    Done(Fetched),
    /// Worth another try; `wait` is the server's Retry-After, if it gave one.
    Retry {
        kind: FetchErrorKind,
        cause: String,
        wait: Option<Duration>,
    },
    Fail(FetchErrorKind),
}

impl Fetcher {
    pub fn new(plan: &Plan) -> Result<Self, Error> {
        let r = &plan.request;
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("harvest/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(r.connect_timeout)
            .timeout(r.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(plan.limits.concurrency.max(1))
            .tcp_nodelay(true);
        if let Some(path) = &r.ca_cert {
            let pem = std::fs::read(path).map_err(|e| Error::io(format!("reading ca_cert {}", path.display()), e))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::Other(format!("ca_cert {} is not a PEM certificate: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        if r.insecure_skip_verify {
            tracing::warn!("insecure_skip_verify is set: TLS certificates are not checked");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| Error::Other(format!("cannot build the HTTP client: {e}")))?;
        let limiter = plan.limits.requests_per_second.map(|rps| {
            let period = Duration::from_secs_f64(1.0 / rps);
            let burst = NonZeroU32::new(plan.limits.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period).expect("a positive period").allow_burst(burst);
            RateLimiter::direct(quota)
        });
        Ok(Fetcher {
            client,
            limiter,
            permits: tokio::sync::Semaphore::new(plan.limits.concurrency.max(1)),
            retry: plan.retry.clone(),
            max_body: r.max_body,
            timeout: r.timeout,
            respect_server_limits: plan.limits.respect_server_limits,
            max_wait: plan.limits.max_wait,
            redactor: plan.redactor.clone(),
            allowed: plan.allowed_origins.clone(),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            retries: Mutex::new((BTreeMap::new(), 0.0)),
        })
    }

    pub fn stats(&self) -> FetchStats {
        let retries = self.retries.lock().expect("stats lock");
        FetchStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            retries: retries.0.clone(),
            server_wait_seconds: retries.1,
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Fetch one page, retrying what is worth retrying.
    pub async fn fetch(&self, request: &Outgoing) -> Result<Fetched, FetchError> {
        let mut attempt = 1;
        loop {
            let outcome = {
                // A slot first, then a token: the request leaves as soon as it has both, so the
                // send times keep to the bucket.
                let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
                if let Some(limiter) = &self.limiter {
                    limiter.until_ready().await;
                }
                self.attempt(request, attempt).await
            };
            match outcome {
                Attempt::Done(fetched) => return Ok(fetched),
                Attempt::Fail(kind) => return Err(self.error(request, kind, attempt)),
                Attempt::Retry { kind, cause, wait } => {
                    if attempt >= self.retry.max_attempts {
                        return Err(self.error(request, kind, attempt));
                    }
                    let delay = match wait.filter(|_| self.respect_server_limits) {
                        Some(wait) if wait > self.max_wait => {
                            let kind = FetchErrorKind::Transport(format!(
                                "asked to wait {wait:?} (Retry-After), longer than limits.max_wait ({:?})",
                                self.max_wait
                            ));
                            return Err(self.error(request, kind, attempt));
                        }
                        Some(wait) => {
                            self.retries.lock().expect("stats lock").1 += wait.as_secs_f64();
                            wait
                        }
                        None => backoff(&self.retry, attempt, rand::rng().random::<f64>()),
                    };
                    *self.retries.lock().expect("stats lock").0.entry(cause).or_default() += 1;
                    tracing::warn!(
                        "{} {} {kind}; retrying in {delay:.1?} (attempt {} of {})",
                        request.method.as_str(),
                        self.redactor.url(&request.url),
                        attempt + 1,
                        self.retry.max_attempts
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn error(&self, request: &Outgoing, kind: FetchErrorKind, attempts: u32) -> FetchError {
        FetchError { method: request.method.as_str().to_string(), url: self.redactor.url(&request.url), kind, attempts }
    }

    async fn attempt(&self, request: &Outgoing, attempt: u32) -> Attempt {
        let mut method = request.method;
        let mut url = request.url.clone();
        let mut body = request.body.as_ref();
        for _ in 0..=MAX_REDIRECTS {
            let builder = match self.build(method, &url, &request.headers, body) {
                Ok(b) => b,
                Err(kind) => return Attempt::Fail(kind),
            };
            let started = Instant::now();
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = match builder.send().await {
                Ok(r) => r,
                Err(e) => return self.transport_error(&e, false),
            };
            let status = response.status();
            if status.is_redirection() {
                let Some(location) = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                    return Attempt::Fail(FetchErrorKind::Status {
                        status: status.as_u16(),
                        excerpt: "redirect without a Location header".into(),
                    });
                };
                let next = match url.join(location) {
                    Ok(next) => next,
                    Err(e) => {
                        return Attempt::Fail(FetchErrorKind::Transport(format!("redirected to an invalid URL: {e}")))
                    }
                };
                if matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER) {
                    method = Method::Get;
                    body = None;
                }
                tracing::debug!("{} redirects to {}", self.redactor.url(&url), self.redactor.url(&next));
                url = next;
                continue;
            }
            let headers = response.headers().clone();
            let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none").to_string();
            let bytes = match self.read_body(response).await {
                Ok(b) => b,
                Err(attempt) => return attempt,
            };
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                "{} {} -> {} ({} bytes, {:.0?}, attempt {attempt})",
                method.as_str(),
                self.redactor.url(&url),
                status.as_u16(),
                bytes.len(),
                started.elapsed()
            );
            if !status.is_success() {
                let kind = FetchErrorKind::Status { status: status.as_u16(), excerpt: self.excerpt(&bytes) };
                if self.retry.on_status.contains(&status.as_u16()) {
                    let wait = retry_after(&headers);
                    return Attempt::Retry { kind, cause: format!("status_{}", status.as_u16()), wait };
                }
                return Attempt::Fail(kind);
            }
            let bytes = match self.undeclared_compression(bytes) {
                Ok(b) => b,
                Err(kind) => return Attempt::Fail(kind),
            };
            if let Err(e) = serde_json::from_slice::<&serde_json::value::RawValue>(strip_bom(&bytes)) {
                let kind =
                    FetchErrorKind::NotJson { reason: e.to_string(), content_type, excerpt: self.excerpt(&bytes) };
                let cause = if e.is_eof() { "body_cut_short" } else { "invalid_json" };
                return Attempt::Retry { kind, cause: cause.to_string(), wait: None };
            }
            return Attempt::Done(Fetched { status: status.as_u16(), headers, url, body: bytes, attempts: attempt });
        }
        Attempt::Fail(FetchErrorKind::TooManyRedirects(MAX_REDIRECTS))
    }

    /// Build one HTTP request. Credentials (header values and query values holding a
    /// secret, and headers that carry credentials by name) go only to allowed origins.
    fn build(
        &self,
        method: Method,
        url: &Url,
        headers: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::RequestBuilder, FetchErrorKind> {
        let trusted = self.allowed.contains(&url.origin());
        let mut url = url.clone();
        if !trusted && url.query().is_some() && url.query_pairs().any(|(_, v)| self.redactor.contains_secret(&v)) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(_, v)| !self.redactor.contains_secret(v))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if !trusted && (self.redactor.contains_secret(value) || is_credential_header(name)) {
                tracing::debug!(
                    "not sending header {name} to {}, which is not the job's origin",
                    url.origin().ascii_serialization()
                );
                continue;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| FetchErrorKind::Transport(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| FetchErrorKind::Transport(e.to_string()))?;
            map.insert(name, value);
        }
        if !map.contains_key(USER_AGENT) {
            map.insert(USER_AGENT, HeaderValue::from_static(concat!("harvest/", env!("CARGO_PKG_VERSION"))));
        }
        let builder = match method {
            Method::Get => self.client.get(url),
            Method::Post => self.client.post(url),
        };
        let builder = builder.headers(map);
        Ok(match body {
            Some(body) => {
                if !trusted && self.redactor.contains_secret(&body.to_string()) {
                    return Err(FetchErrorKind::Transport(
                        "refusing to send a body holding credentials to an origin the job does not allow".into(),
                    ));
                }
                builder.header(CONTENT_TYPE, "application/json").body(body.to_string())
            }
            None => builder,
        })
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Bytes, Attempt> {
        if response.content_length().is_some_and(|len| len > self.max_body) {
            return Err(Attempt::Fail(FetchErrorKind::BodyTooLarge { limit: self.max_body }));
        }
        let mut body = bytes::BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() as u64 + chunk.len() as u64 > self.max_body {
                        return Err(Attempt::Fail(FetchErrorKind::BodyTooLarge { limit: self.max_body }));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(e) => return Err(self.transport_error(&e, true)),
            }
        }
    }

    /// Classify a transport failure; `reading_body`: it came while the body was streaming.
    fn transport_error(&self, e: &reqwest::Error, reading_body: bool) -> Attempt {
        // reqwest's messages name the URL; show it redacted like every other.
        let chain = |e: &reqwest::Error| {
            let text = error_chain(e);
            let text = match e.url() {
                Some(url) => text.replace(url.as_str(), &self.redactor.url(url)),
                None => text,
            };
            self.redactor.redact(&text).into_owned()
        };
        let (cause, kind) = if e.is_timeout() {
            ("timeout", FetchErrorKind::Timeout(self.timeout))
        } else if e.is_connect() {
            ("connect", FetchErrorKind::Transport(chain(e)))
        } else if reading_body || e.is_body() || e.is_decode() {
            ("body_cut_short", FetchErrorKind::Transport(format!("the body was cut short: {}", chain(e))))
        } else {
            ("transport", FetchErrorKind::Transport(chain(e)))
        };
        Attempt::Retry { kind, cause: cause.to_string(), wait: None }
    }

    /// Some servers compress without saying so: trust the bytes.
    fn undeclared_compression(&self, body: Bytes) -> Result<Bytes, FetchErrorKind> {
        let limit = self.max_body + 1;
        let mut out = Vec::new();
        let read = match body.as_ref() {
            [0x1f, 0x8b, ..] => flate2::read::MultiGzDecoder::new(body.as_ref()).take(limit).read_to_end(&mut out),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => match zstd::stream::read::Decoder::new(body.as_ref()) {
                Ok(d) => d.take(limit).read_to_end(&mut out),
                Err(e) => Err(e),
            },
            _ => return Ok(body),
        };
        match read {
            Ok(_) if out.len() as u64 > self.max_body => Err(FetchErrorKind::BodyTooLarge { limit: self.max_body }),
            Ok(_) => Ok(Bytes::from(out)),
            // Not compressed after all: let the JSON check report it.
            Err(_) => Ok(body),
        }
    }

    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_CHARS * 4)]);
        let text: String = text.chars().take(EXCERPT_CHARS).collect();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        self.redactor.redact(&text).into_owned()
    }
}

/// Exponential backoff with full jitter: `jitter` (uniform in [0, 1)) times
/// min(max_backoff, initial_backoff * 2^(attempt - 1)).
pub fn backoff(retry: &RetryPlan, attempt: u32, jitter: f64) -> Duration {
    let ceiling =
        retry.initial_backoff.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(retry.max_backoff);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

fn is_credential_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "authorization" | "proxy-authorization" | "cookie") || is_sensitive_param(&lower)
}

fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let message = s.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = s.source();
    }
    text
}

/// `Retry-After` as seconds (decimals allowed) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_jitters_below_it() {
        let retry = RetryPlan {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
            on_status: vec![],
        };
        let ceilings: Vec<Duration> = (1..=6).map(|a| backoff(&retry, a, 1.0)).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 4000, 4000].map(Duration::from_millis));
        assert_eq!(backoff(&retry, 3, 0.25), Duration::from_millis(500));
        assert_eq!(backoff(&retry, 3, 0.0), Duration::ZERO);
        assert_eq!(backoff(&retry, u32::MAX, 0.5), Duration::from_secs(2));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", later.parse().unwrap());
        let wait = retry_after(&h).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120), "{wait:?}");
    }
}
