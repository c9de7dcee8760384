//! A JWT assertion (RFC 7523) as `oauth2_jwt_bearer` signs it: issuer, subject, audience,
//! scopes, issued now and valid for its lifetime, RS256 or ES256 by `jsonwebtoken`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// What signs an assertion.
#[derive(Clone)]
pub struct Assertion {
    pub key: EncodingKey,
    pub algorithm: Algorithm,
    pub issuer: String,
    pub subject: Option<String>,
    pub audience: String,
    pub scope: Option<String>,
    pub lifetime: Duration,
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion").field("algorithm", &self.algorithm).field("issuer", &self.issuer).finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    iat: u64,
    exp: u64,
}

impl Assertion {
    /// A fresh assertion, valid from now for its lifetime.
    pub fn sign(&self) -> Result<String, jsonwebtoken::errors::Error> {
        // A clock before 1970 signs as of 1970: the server refuses it, and says why.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            iss: &self.issuer,
            sub: self.subject.as_deref(),
            aud: &self.audience,
            scope: self.scope.as_deref(),
            iat: now,
            exp: now + self.lifetime.as_secs().max(1),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
    }
}
