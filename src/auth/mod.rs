//! Credentials: what a request carries to show who sends it, and the rule of where it may go.
//!
//! The fetcher holds one [`Credentials`] for the whole job and hands it every request it is
//! about to send, with whether the request's origin may receive credentials (`request.url`'s
//! origin and `[auth] allow_origins`). An implementation puts its credentials on requests to
//! those origins and keeps them off every other, and may be asked to renew them after a 401
//! or 403. A credential a run obtains (a token, a session cookie) is taught to the run's
//! [`Redactor`], so that it is masked everywhere and kept to the allowed origins like a
//! `${VAR}` value. The kinds of `[auth]` are one file each beside this one: each reads its
//! job-file keys (a [`Spec`]) into an [`AuthPlan`]; [`for_job`] turns the plan into the
//! credentials of the run, which the fetcher holds.

pub mod api_key;
pub mod assertion;
pub mod basic;
pub mod bearer;
pub mod cache;
pub mod client_credentials;
pub mod exchange;
pub mod fixed;
pub mod jwt_bearer;
pub mod oauth;
pub mod refresh_token;
pub mod renewal;
pub mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::error::{FetchErrorKind, JobError};
use crate::keys::KeyReader;
use crate::redact::{is_sensitive_param, Redactor};

/// The credentials a job's `[auth]` section asks for, resolved.
#[derive(Debug, Clone, Default)]
pub enum AuthPlan {
    /// The job's own `${VAR}` headers and parameters, if any.
    #[default]
    None,
    /// A credential fixed for the run: a header, a query parameter or a cookie.
    Fixed(fixed::Fixed),
    /// An OAuth2 access token from a token endpoint, renewed as it expires.
    OAuth(Box<oauth::Grant>),
    /// A login's cookies or token.
    Session(Box<session::Login>),
}

impl AuthPlan {
    /// What the job sends, in words, for `harvest check`.
    pub fn describe(&self) -> String {
        match self {
            AuthPlan::None => "none (the job's own headers and parameters)".into(),
            AuthPlan::Fixed(f) => f.describe(),
            AuthPlan::OAuth(g) => g.describe(),
            AuthPlan::Session(l) => l.describe(),
        }
    }
}

/// The run's credentials for job `job`'s `[auth]`; token and login requests use the job's
/// client (its TLS settings and timeouts), `retry` (the job's attempts and backoff) and its
/// `max_body`, but none of its limits.
pub(crate) fn for_job(
    auth: &AuthPlan,
    job: &str,
    secrets: &Redactor,
    max_body: u64,
    client: &reqwest::Client,
    retry: exchange::Retry,
) -> Arc<dyn Credentials> {
    let secrets = secrets.clone();
    match auth {
        AuthPlan::None => Arc::new(JobCredentials::new(secrets)),
        AuthPlan::Fixed(fixed) => Arc::new(fixed::FixedCredentials::new(fixed.clone(), secrets)),
        AuthPlan::OAuth(grant) => {
            let grant = grant.as_ref().clone();
            Arc::new(oauth::OAuth::new(grant, client.clone(), retry, max_body, secrets, job))
        }
        AuthPlan::Session(login) => {
            let login = login.as_ref().clone();
            Arc::new(session::SessionCredentials::new(login, client.clone(), retry, max_body, secrets))
        }
    }
}

/// An auth kind's keys as the job file writes them, and how they become its plan.
pub trait Spec: DeserializeOwned {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError>;
}

/// `kind = "none"`: no keys of its own.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoneSpec {}

impl Spec for NoneSpec {
    fn build(self, _keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        Ok(AuthPlan::None)
    }
}

/// A boxed future, as the trait's async methods return them.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, FetchErrorKind>> + Send + 'a>>;

/// A request about to be sent, as credentials see it.
pub struct Outbound<'a> {
    pub url: &'a mut Url,
    pub headers: &'a mut Vec<(String, String)>,
    pub body: Option<&'a Value>,
    /// The origin may receive credentials.
    pub trusted: bool,
}

pub trait Credentials: Send + Sync + std::fmt::Debug {
    /// Before a request takes its slot: have credentials that are not about to expire (the
    /// first token, or a renewal ahead of expiry). Holds no slot and no rate-limit token, so
    /// requests waiting here block nothing.
    fn ready(&self) -> Pending<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Put credentials on a request to a trusted origin; keep them off any other. Returns the
    /// generation of the credentials sent (0 for those that never change).
    fn apply(&self, request: Outbound<'_>) -> Result<u64, FetchErrorKind>;

    /// After a `status` of 401 or 403 for a request that carried generation `used`: true
    /// when a retry may now succeed, because this call renewed the credentials or another
    /// request already had. Fixed credentials cannot.
    fn renew(&self, _used: u64, _status: u16) -> Pending<'_, bool> {
        Box::pin(async { Ok(false) })
    }

    /// What the credentials obtained, for `check --probe`: never a value.
    fn report(&self) -> Option<String> {
        None
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
    fn apply(&self, request: Outbound<'_>) -> Result<u64, FetchErrorKind> {
        if request.trusted {
            return Ok(0);
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
        Ok(0)
    }
}

/// Headers that carry credentials by their name, whatever their value.
fn is_credential_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(lower.as_str(), "authorization" | "proxy-authorization" | "cookie") || is_sensitive_param(&lower)
}
