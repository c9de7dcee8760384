//! What token and login requests share: retries with the job's backoff ([`Retry`]), the
//! answer read within `max_body` with 429 and 5xx left to a retry ([`read_answer`]), and a
//! refusal in the server's own words ([`refusal`]), never its whole body (a server may echo
//! what it was sent).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::FetchErrorKind;

/// How a token or login request is retried: the job's attempts, and its backoff for attempt n.
#[derive(Clone)]
pub struct Retry {
    pub max_attempts: u32,
    pub delay: Arc<dyn Fn(u32) -> Duration + Send + Sync>,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("max_attempts", &self.max_attempts).finish()
    }
}

impl Retry {
    /// Run `attempt` until it succeeds, is refused for good (`Ok(Err(..))`, returned as it
    /// is), or has failed in a way worth retrying (`Err(why)`) `max_attempts` times: then
    /// "`what` why after n attempts". `what` names the endpoint (`the token endpoint <url>`).
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, FetchErrorKind>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Result<T, FetchErrorKind>, Retryable>>,
    {
        let mut n = 1;
        loop {
            let failure = match attempt().await {
                Ok(done) => return done,
                Err(retryable) => retryable,
            };
            if n >= self.max_attempts {
                return Err(FetchErrorKind::Auth(format!("{what} {failure} after {n} attempts")));
            }
            let delay = (self.delay)(n);
            tracing::warn!("{what} {failure}; retrying in {}", crate::human::duration(delay));
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }
}

/// A token or login request that failed in a way a retry may cure, in the words that follow
/// the endpoint's name.
#[derive(Debug, thiserror::Error)]
pub enum Retryable {
    /// No answer: the connection failed (the cause redacted).
    #[error("failed: {0}")]
    Unanswered(String),
    #[error("failed mid-body: {0}")]
    CutShort(reqwest::Error),
    #[error("failed mid-body: the body is larger than max_body ({})", crate::human::bytes(*.0))]
    TooLarge(u64),
    /// 429 or a 5xx.
    #[error("returned {0}")]
    Status(u16),
    #[error("could not sign the assertion: {0}")]
    Unsigned(jsonwebtoken::errors::Error),
}

/// A response's status and body, refused past `limit` bytes (after decompression); `Err`
/// with what a retry may cure: a body cut short, 429, a 5xx.
pub async fn read_answer(mut response: reqwest::Response, limit: u64) -> Result<(u16, Vec<u8>), Retryable> {
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Retryable::CutShort)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(Retryable::TooLarge(limit));
        }
    }
    if status == 429 || status >= 500 {
        return Err(Retryable::Status(status));
    }
    Ok((status, body))
}

/// What a refusal says: its OAuth `error` code, and in words `error (error_description)`,
/// or a framework's `detail`.
pub fn refusal(body: &[u8]) -> (Option<String>, Option<String>) {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| j.get(name)).and_then(Value::as_str).map(str::to_string);
    let code = field("error");
    let words = match (&code, field("error_description")) {
        (Some(e), Some(d)) => Some(format!("{e} ({d})")),
        (Some(e), None) => Some(e.clone()),
        (None, _) => field("detail"),
    };
    (code, words)
}
