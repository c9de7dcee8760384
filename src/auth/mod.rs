//! Credentials: what a request carries to show who sends it, and the rule of where it may go.
//!
//! The fetcher holds one [`Credentials`] for the whole job and hands it every request it is
//! about to send, with whether the request's origin may receive credentials (`request.url`'s
//! origin and `[auth] allow_origins`). An implementation puts its credentials on requests to
//! those origins and keeps them off every other, and may be asked to renew them after a 401
//! or 403. A credential a run obtains (a token, a session cookie) is taught to the run's
//! [`Redactor`], so that it is masked everywhere and kept to the allowed origins like a
//! `${VAR}` value. The kinds of `[auth]` are one file each beside this one.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use url::Url;

use crate::error::FetchErrorKind;
use crate::redact::{is_sensitive_param, Redactor};

/// A request about to be sent, as credentials see it.
pub struct Outbound<'a> {
    pub url: &'a mut Url,
    pub headers: &'a mut Vec<(String, String)>,
    pub body: Option<&'a Value>,
    /// The origin may receive credentials.
    pub trusted: bool,
}

pub trait Credentials: Send + Sync + std::fmt::Debug {
    /// Put credentials on a request to a trusted origin; keep them off any other.
    fn apply(&self, request: Outbound<'_>) -> Result<(), FetchErrorKind>;

    /// After a 401 or 403: get new credentials if this kind can (a token, a login); true when
    /// a retry may now succeed. Fixed credentials cannot.
    fn renew(&self) -> Pin<Box<dyn Future<Output = Result<bool, FetchErrorKind>> + Send + '_>> {
        Box::pin(async { Ok(false) })
    }
}

/// `[auth] kind = "none"`: the credentials are the job's own `${VAR}` headers, query
/// parameters and body fields. Sent as written to trusted origins; to any other origin (a next
/// link or redirect elsewhere) a parameter or header holding a secret, or a header that carries
/// credentials by its name, is left out, and a body holding a secret is refused.
#[derive(Debug)]
pub struct JobCredentials {
    secrets: Redactor,
}

impl JobCredentials {
    pub fn new(secrets: Redactor) -> Self {
        JobCredentials { secrets }
    }
}

impl Credentials for JobCredentials {
    fn apply(&self, request: Outbound<'_>) -> Result<(), FetchErrorKind> {
        if request.trusted {
            return Ok(());
        }
        let url = request.url;
        if url.query().is_some() && url.query_pairs().any(|(_, v)| self.secrets.contains_secret(&v)) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(_, v)| !self.secrets.contains_secret(v))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        request.headers.retain(|(name, value)| {
            let keep = !self.secrets.contains_secret(value) && !is_credential_header(name);
            if !keep {
                tracing::debug!(
                    "not sending header {name} to {}, which is not the job's origin",
                    url.origin().ascii_serialization()
                );
            }
            keep
        });
        if request.body.is_some_and(|body| self.secrets.contains_secret(&body.to_string())) {
            return Err(FetchErrorKind::Transport(
                "refusing to send a body holding credentials to an origin the job does not allow".into(),
            ));
        }
        Ok(())
    }
}

/// Headers that carry credentials by their name, whatever their value.
fn is_credential_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "authorization" | "proxy-authorization" | "cookie") || is_sensitive_param(&lower)
}
