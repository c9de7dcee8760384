//! A credential fixed for the whole run (`bearer`, `basic`, `api_key`): one header, query
//! parameter or cookie, added to every request to an allowed origin and to no other.

use super::{Credentials, JobCredentials, Outbound};
use crate::error::FetchErrorKind;
use crate::redact::Redactor;

#[derive(Clone)]
pub struct Fixed {
    /// The job file's kind, for messages.
    pub kind: &'static str,
    pub place: Place,
    pub name: String,
    /// The whole value sent (`Bearer <token>`, `Basic <base64>`, the key): a secret.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Header,
    Query,
    Cookie,
}

impl std::fmt::Debug for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixed").field("kind", &self.kind).field("place", &self.place).field("name", &self.name).finish()
    }
}

impl Fixed {
    pub fn describe(&self) -> String {
        let how = match self.place {
            Place::Header => format!("the header {}", self.name),
            Place::Query => format!("the query parameter {}", self.name),
            Place::Cookie => format!("the cookie {}", self.name),
        };
        format!("{}: sent as {how} to the allowed origins only", self.kind)
    }
}

/// The run's credentials for a [`Fixed`] kind, with the job's own `${VAR}` headers kept to
/// the allowed origins as for `kind = "none"`.
#[derive(Debug)]
pub struct FixedCredentials {
    fixed: Fixed,
    job: JobCredentials,
}

impl FixedCredentials {
    pub fn new(fixed: Fixed, secrets: Redactor) -> Self {
        FixedCredentials { fixed, job: JobCredentials::new(secrets) }
    }
}

impl Credentials for FixedCredentials {
    fn apply(&self, request: Outbound<'_>) -> Result<u64, FetchErrorKind> {
        if request.trusted {
            add(request.url, request.headers, self.fixed.place, &self.fixed.name, &self.fixed.value);
            return Ok(0);
        }
        self.job.apply(request)
    }
}

/// Put `name` = `value` on a request: a header or query parameter replaces one of the same
/// name (a next link may carry the key already), a cookie joins the `Cookie` header.
pub fn add(url: &mut url::Url, headers: &mut Vec<(String, String)>, place: Place, name: &str, value: &str) {
    match place {
        Place::Header => {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            headers.push((name.to_string(), value.to_string()));
        }
        Place::Query => {
            let kept: Vec<(String, String)> =
                url.query_pairs().filter(|(k, _)| k != name).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            url.query_pairs_mut().clear().extend_pairs(kept).append_pair(name, value);
        }
        Place::Cookie => add_cookies(headers, &format!("{name}={value}")),
    }
}

/// Add `name=value` pairs (`a=1; b=2`) to the request's `Cookie` header, or make one.
pub fn add_cookies(headers: &mut Vec<(String, String)>, pairs: &str) {
    match headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case("cookie")) {
        Some((_, cookies)) => {
            cookies.push_str("; ");
            cookies.push_str(pairs);
        }
        None => headers.push(("Cookie".to_string(), pairs.to_string())),
    }
}
