//! The HTTP client: one pooled reqwest client, the job's token bucket, retries, redirects,
//! and the job's [`Credentials`] applied to every request with whether its origin may see them.
//!
//! A fetch hands a 2xx response to the caller's judge, which parses it once; it ends with the
//! judge's result or a [`FetchError`] that names the method, the redacted URL, the status and a
//! body excerpt. Connect errors, timeouts, bodies cut short or not valid JSON, and the
//! `on_status` codes are retried with exponential backoff and full jitter; other statuses fail
//! at once. A server's request to wait pauses the whole job. Redirects are followed here, not
//! by reqwest, so that the origin rule applies to every hop.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::exchange::Retry;
use crate::auth::{Credentials, Outbound};
use crate::error::{Error, FetchError, FetchErrorKind};
use crate::plan::{Method, Plan, RetryPlan};
use crate::progress::{Progress, Track};
use crate::redact::Redactor;

mod body;
mod cache;
pub mod wait;

use cache::ResponseCache;

pub use wait::{backoff, retry_after, server_pause};

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

/// How a caller's judge turns down a response body.
pub enum Reject<E> {
    /// Not JSON: retried like a cut connection (`cut_short`: it ended early).
    NotJson { reason: String, cut_short: bool },
    /// Unusable for another reason: the fetch ends with it.
    Fail(E),
}

/// Why [`Fetcher::fetch_with`] gave up.
pub enum FetchFailure<E> {
    Fetch(FetchError),
    Rejected(E),
    /// The run was interrupted before the request was sent: nothing was asked.
    Interrupted,
}

/// Counters for the run manifest.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FetchStats {
    pub requests: u64,
    pub bytes: u64,
    /// Retries by cause: `status_503`, `timeout`, `connect`, `body`, `invalid_json`.
    pub retries: BTreeMap<String, u64>,
    /// Pauses of the whole job the server asked for, by cause (`retry_after`,
    /// `x_ratelimit`, `ratelimit`).
    pub pauses: BTreeMap<String, u64>,
    /// Seconds the job was paused because the server asked.
    pub server_wait_seconds: f64,
    /// Responses taken from the response cache (`--cache`) instead of the server.
    pub cached: u64,
}

pub struct Fetcher {
    client: reqwest::Client,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The job's own limit in words, for a partition waiting on it.
    limit_words: String,
    /// Requests in flight, whole job.
    permits: tokio::sync::Semaphore,
    retry: RetryPlan,
    max_body: u64,
    timeout: Duration,
    respect_server_limits: bool,
    max_wait: Duration,
    redactor: Redactor,
    allowed: Vec<url::Origin>,
    /// What requests carry, and the rule of where it may go.
    credentials: Arc<dyn Credentials>,
    requests: AtomicU64,
    bytes: AtomicU64,
    retries: Mutex<BTreeMap<String, u64>>,
    /// No request of the job starts before this instant (a server-requested pause).
    paused_until: Mutex<Option<Instant>>,
    pauses: Mutex<(BTreeMap<String, u64>, f64)>,
    /// Once cancelled (an interrupt), no request is sent any more: one waiting for its slot,
    /// a token, a server pause or a backoff gives up at once.
    cancel: CancellationToken,
    /// Where server-requested pauses are shown.
    progress: Arc<Progress>,
    /// `--cache`: responses kept while a job is being written.
    cache: Option<ResponseCache>,
    cached: AtomicU64,
}

/// Token and login requests: the job's attempts and backoff.
fn auth_retry(plan: &Plan) -> Retry {
    let retry = plan.retry.clone();
    let delay = Arc::new(move |attempt| backoff(&retry, attempt, rand::rng().random::<f64>()));
    Retry { max_attempts: plan.retry.max_attempts, delay }
}

/// Where a redirect goes: its Location resolved against the URL that answered.
fn redirected(status: StatusCode, headers: &HeaderMap, url: &Url) -> Result<Url, FetchErrorKind> {
    let Some(location) = headers.get(LOCATION).and_then(|l| l.to_str().ok()) else {
        let excerpt = "redirect without a Location header".into();
        return Err(FetchErrorKind::Status { status: status.as_u16(), excerpt, challenge: None });
    };
    url.join(location).map_err(|e| FetchErrorKind::Transport(format!("redirected to an invalid URL: {e}")))
}

/// How long a request in flight when the run is interrupted may still take: its page is kept
/// if it arrives by then, and fetched again by the resume if not.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(2);

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
    /// A 401 or 403 to a request that carried credentials of this generation.
    Unauthorized {
        kind: FetchErrorKind,
        status: u16,
        generation: u64,
    },
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
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| Error::Client {
                context: format!("ca_cert {} is not a PEM certificate", path.display()),
                source,
            })?;
            builder = builder.add_root_certificate(cert);
        }
        if r.insecure_skip_verify {
            tracing::warn!("insecure_skip_verify is set: TLS certificates are not checked");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|source| Error::Client { context: "cannot build the HTTP client".into(), source })?;
        let limiter = plan.limits.requests_per_second.map(|rps| {
            let period = Duration::from_secs_f64(1.0 / rps);
            let burst = NonZeroU32::new(plan.limits.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period).expect("a positive period").allow_burst(burst);
            RateLimiter::direct(quota)
        });
        Ok(Fetcher {
            credentials: crate::auth::for_job(
                &plan.auth,
                &plan.name,
                &plan.redactor,
                plan.request.max_body,
                &client,
                auth_retry(plan),
            ),
            client,
            limiter,
            limit_words: plan
                .limits
                .requests_per_second
                .map_or(String::new(), |rps| format!("requests_per_second = {rps}")),
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
            retries: Mutex::new(BTreeMap::new()),
            paused_until: Mutex::new(None),
            pauses: Mutex::new((BTreeMap::new(), 0.0)),
            cancel: CancellationToken::new(),
            progress: Progress::off(),
            cache: plan.request.cache.as_ref().and_then(|c| ResponseCache::new(c.ttl, &c.account)),
            cached: AtomicU64::new(0),
        })
    }

    /// Send nothing more once `cancel` is cancelled.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Show server-requested pauses in `progress`.
    pub fn with_progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    pub fn stats(&self) -> FetchStats {
        let pauses = self.pauses.lock().expect("stats lock");
        FetchStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            retries: self.retries.lock().expect("stats lock").clone(),
            pauses: pauses.0.clone(),
            server_wait_seconds: pauses.1,
            cached: self.cached.load(Ordering::Relaxed),
        }
    }

    /// What the credentials obtained (a token's lifetime and scopes), for `check --probe`.
    pub fn credentials_report(&self) -> Option<String> {
        self.credentials.report()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Fetch one page and hand the 2xx response to `judge`, which parses it once: a body it
    /// finds not to be JSON is retried like a cut connection; its other rejections end the
    /// fetch. Connect errors, timeouts and the `on_status` codes are retried with backoff.
    /// A server's request to wait (Retry-After on a 429 or 503) pauses every request of the
    /// job and uses no attempt; all such waits of one request together are bounded by
    /// `max_wait`.
    pub async fn fetch_with<T, E>(
        &self,
        request: &Outgoing,
        track: Option<&Track>,
        mut judge: impl FnMut(&Fetched) -> Result<T, Reject<E>>,
    ) -> Result<T, FetchFailure<E>> {
        if let Some(fetched) = self.cache.as_ref().and_then(|cache| cache.get(request)) {
            // A body the judge turns down is fetched again.
            if let Ok(value) = judge(&fetched) {
                self.cached.fetch_add(1, Ordering::Relaxed);
                return Ok(value);
            }
        }
        let mut attempt = 1;
        let mut waited = Duration::ZERO;
        let mut renewed = false;
        loop {
            let outcome = match self.send(request, track, attempt).await? {
                Attempt::Done(fetched) => match judge(&fetched) {
                    Ok(value) => {
                        if let Some(cache) = &self.cache {
                            cache.put(request, &fetched, &self.redactor);
                        }
                        return Ok(value);
                    }
                    Err(Reject::Fail(e)) => return Err(FetchFailure::Rejected(e)),
                    Err(Reject::NotJson { reason, cut_short }) => self.not_json(&fetched, reason, cut_short),
                },
                other => other,
            };
            let fail = |kind| Err(FetchFailure::Fetch(self.error(request, kind, attempt)));
            match outcome {
                Attempt::Done(_) => unreachable!("judged above"),
                Attempt::Fail(kind) => return fail(kind),
                Attempt::Unauthorized { kind, status, generation } => {
                    // Renewed once for this request and refused again: renewal cannot cure it.
                    if renewed || !self.renew(request, status, generation, attempt).await? {
                        return fail(kind);
                    }
                    // Goes again with the new credentials, using none of its attempts.
                    renewed = true;
                }
                Attempt::Retry { kind, wait: Some(wait), .. } if self.respect_server_limits => {
                    waited += wait;
                    if waited > self.max_wait {
                        return fail(FetchErrorKind::Transport(format!(
                            "{kind}, and the server asked to wait {} in all, more than limits.max_wait ({})",
                            crate::human::duration(waited),
                            crate::human::duration(self.max_wait)
                        )));
                    }
                    // The pause was set when the response arrived; the loop waits it out.
                }
                Attempt::Retry { kind, cause, .. } => {
                    if attempt >= self.retry.max_attempts {
                        return fail(kind);
                    }
                    self.back_off(request, track, &kind, cause, attempt).await?;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt at `request`: its credentials ready first (holding no slot, so a renewal
    /// never waits on those waiting for it), then a slot, then the exchange. A request in
    /// flight when the run is interrupted gets a short grace to finish.
    async fn send<E>(
        &self,
        request: &Outgoing,
        track: Option<&Track>,
        attempt: u32,
    ) -> Result<Attempt, FetchFailure<E>> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(FetchFailure::Interrupted),
            ready = self.credentials.ready() => {
                if let Err(kind) = ready {
                    return Err(FetchFailure::Fetch(self.error(request, kind, attempt)));
                }
            }
        }
        let _permit = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(FetchFailure::Interrupted),
            permit = self.slot(track) => permit,
        };
        if let Some(track) = track {
            track.sending();
        }
        tokio::select! {
            outcome = self.attempt(request, attempt) => Ok(outcome),
            _ = async {
                self.cancel.cancelled().await;
                tokio::time::sleep(INTERRUPT_GRACE).await;
            } => Err(FetchFailure::Interrupted),
        }
    }

    /// A body the judge found not to be JSON: tried again like a cut connection.
    fn not_json(&self, fetched: &Fetched, reason: String, cut_short: bool) -> Attempt {
        let content_type = fetched.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none");
        let content_type = content_type.to_string();
        let kind = FetchErrorKind::NotJson { reason, content_type, excerpt: self.excerpt(&fetched.body) };
        let cause = if cut_short { "body_cut_short" } else { "invalid_json" };
        Attempt::Retry { kind, cause: cause.to_string(), wait: None }
    }

    /// A 401 or 403: whether renewed credentials (of the `generation` refused) are worth
    /// another try.
    async fn renew<E>(
        &self,
        request: &Outgoing,
        status: u16,
        generation: u64,
        attempt: u32,
    ) -> Result<bool, FetchFailure<E>> {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(FetchFailure::Interrupted),
            renewal = self.credentials.renew(generation, status) => {
                renewal.map_err(|kind| FetchFailure::Fetch(self.error(request, kind, attempt)))
            }
        }
    }

    /// Wait before attempt `attempt + 1`: backoff with jitter (the whole job with it after a
    /// 429 that gave no usable hint), counted, logged and shown.
    async fn back_off<E>(
        &self,
        request: &Outgoing,
        track: Option<&Track>,
        kind: &FetchErrorKind,
        cause: String,
        attempt: u32,
    ) -> Result<(), FetchFailure<E>> {
        let delay = backoff(&self.retry, attempt, rand::rng().random::<f64>());
        if cause == "status_429" {
            // Too many requests, and no usable hint of how long to wait: the whole job backs
            // off with this request, not only this request.
            self.hold(delay);
        }
        if let Some(track) = track {
            track.retrying(&cause, delay, attempt + 1, self.retry.max_attempts);
        }
        *self.retries.lock().expect("stats lock").entry(cause).or_default() += 1;
        tracing::warn!(
            "{} {} {kind}; retrying in {} (attempt {} of {})",
            request.method.as_str(),
            self.redactor.url(&request.url),
            crate::human::duration(delay),
            attempt + 1,
            self.retry.max_attempts
        );
        tokio::select! {
            _ = self.cancel.cancelled() => return Err(FetchFailure::Interrupted),
            _ = tokio::time::sleep(delay) => {}
        }
        if let Some(track) = track {
            track.sending();
        }
        Ok(())
    }

    fn error(&self, request: &Outgoing, kind: FetchErrorKind, attempts: u32) -> FetchError {
        FetchError { method: request.method.as_str().to_string(), url: self.redactor.url(&request.url), kind, attempts }
    }

    async fn attempt(&self, request: &Outgoing, attempt: u32) -> Attempt {
        let mut method = request.method;
        let mut url = request.url.clone();
        let mut body = request.body.as_ref();
        for _ in 0..=MAX_REDIRECTS {
            // What cannot be built is not sent, nor tried again.
            let (builder, generation) = match self.build(method, &url, &request.headers, body) {
                Ok(built) => built,
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
                let next = match redirected(status, response.headers(), &url) {
                    Ok(next) => next,
                    Err(kind) => return Attempt::Fail(kind),
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
            let asked = server_pause(&headers, status.as_u16());
            if let Err(kind) = self.heed(status.as_u16(), asked.as_ref()) {
                return Attempt::Fail(kind);
            }
            let bytes = match self.read_body(response).await {
                Ok(b) => b,
                Err(attempt) => return attempt,
            };
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                "{} {} -> {} ({}, {} ms, attempt {attempt})",
                method.as_str(),
                self.redactor.url(&url),
                status.as_u16(),
                crate::human::bytes(bytes.len() as u64),
                started.elapsed().as_millis()
            );
            if !status.is_success() {
                return self.refused(status.as_u16(), &headers, &bytes, generation, asked.map(|(wait, _, _)| wait));
            }
            let bytes = match self.undeclared_compression(bytes) {
                Ok(b) => b,
                Err(kind) => return Attempt::Fail(kind),
            };
            return Attempt::Done(Fetched { status: status.as_u16(), headers, url, body: bytes, attempts: attempt });
        }
        Attempt::Fail(FetchErrorKind::TooManyRedirects(MAX_REDIRECTS))
    }

    /// A server's request to wait (Retry-After, rate-limit headers), heeded when the job
    /// respects server limits: every request of the job pauses; past `max_wait`, the page fails.
    fn heed(&self, status: u16, asked: Option<&(Duration, &'static str, String)>) -> Result<(), FetchErrorKind> {
        let (Some((wait, cause, detail)), true) = (asked, self.respect_server_limits) else { return Ok(()) };
        if *wait > self.max_wait {
            return Err(FetchErrorKind::Transport(format!(
                "returned {status} and asked to wait {} ({detail}), more than limits.max_wait ({})",
                crate::human::duration(*wait),
                crate::human::duration(self.max_wait)
            )));
        }
        self.pause(*wait, cause, detail);
        Ok(())
    }

    /// A response that is not a success: a 401 or 403 for the credentials to renew, a status
    /// the job retries (after the server's `wait`, if it asked for one), or a failure.
    fn refused(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        generation: u64,
        wait: Option<Duration>,
    ) -> Attempt {
        let excerpt = self.excerpt(body);
        let challenge = headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
        let challenge = challenge.map(|c| self.redactor.redact(c).into_owned());
        let kind = FetchErrorKind::Status { status, excerpt, challenge };
        if matches!(status, 401 | 403) {
            return Attempt::Unauthorized { kind, status, generation };
        }
        if self.retry.on_status.contains(&status) {
            return Attempt::Retry { kind, cause: format!("status_{status}"), wait };
        }
        Attempt::Fail(kind)
    }

    /// Build one HTTP request. Credentials (header values and query values holding a
    /// secret, and headers that carry credentials by name) go only to allowed origins.
    fn build(
        &self,
        method: Method,
        url: &Url,
        headers: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<(reqwest::RequestBuilder, u64), FetchErrorKind> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchErrorKind::Transport(format!("{} is not an http or https URL", self.redactor.url(url))));
        }
        let trusted = self.allowed.contains(&url.origin());
        let (mut url, mut headers) = (url.clone(), headers.to_vec());
        let generation = self.credentials.apply(Outbound { url: &mut url, headers: &mut headers, body, trusted })?;
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
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
        let builder = match body {
            Some(body) => builder.header(CONTENT_TYPE, "application/json").body(body.to_string()),
            None => builder,
        };
        Ok((builder, generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_learned_mid_run_stays_with_the_allowed_origins() {
        let text = "name = \"t\"\n[request]\nurl = \"https://api.example.com/items\"\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"none\"\n";
        let env = crate::job::Env::default();
        let plan = crate::job::parse(std::path::Path::new("t.toml"), text, &env, &Default::default()).unwrap();
        let fetcher = Fetcher::new(&plan).unwrap();
        let token = "sess-1a2b3c4d5e";
        let headers = vec![("X-Session".to_string(), token.to_string())];
        let sent = |url: &str| {
            let request =
                fetcher.build(Method::Get, &Url::parse(url).unwrap(), &headers, None).unwrap().0.build().unwrap();
            (request.headers().contains_key("x-session"), request.url().to_string())
        };
        let other = &format!("https://files.example.net/x?s={token}&page=2");
        assert_eq!(sent(other), (true, other.to_string()), "not yet a secret");
        // The run obtains it (a login's session id): from now on it goes to the job's origin only.
        plan.redactor.learn(crate::redact::Secret::new("the session", token));
        assert_eq!(sent(other), (false, "https://files.example.net/x?page=2".to_string()));
        assert!(sent("https://api.example.com/items").0, "the job's own origin still gets it");
    }
}
