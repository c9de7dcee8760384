//! `kind = "oauth2_jwt_bearer"` (RFC 7523): the client signs a short JWT with its private key
//! and trades it for an access token (Google service accounts, Salesforce's JWT flow). RS256
//! and ES256, signed with `jsonwebtoken`. `key_file` takes a PEM, or a Google service-account
//! JSON key as downloaded, which also gives the issuer (`client_email`) and the token URL
//! (`token_uri`). The key and each assertion are secrets, sent only to `token_url`.

use std::time::Duration;

use crate::keys::Spanned;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;

use super::assertion::Assertion;
use super::oauth::{ClientAuth, Flow, Grant};
use super::{AuthPlan, Spec};
use crate::error::JobError;
use crate::keys::KeyReader;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtBearerSpec {
    /// Optional with a service-account key file, which names it.
    token_url: Option<Spanned<String>>,
    /// Optional with a service-account key file (its `client_email`).
    issuer: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    /// Default: the token URL.
    audience: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    /// A PEM, from `${VAR}`.
    private_key: Option<Spanned<String>>,
    /// A PEM file, or a Google service-account JSON key.
    key_file: Option<Spanned<String>>,
    /// `RS256` (default) or `ES256`.
    algorithm: Option<Spanned<String>>,
    /// How long each assertion is valid; default one hour.
    lifetime: Option<Spanned<String>>,
}

/// The fields of a Google service-account key this kind reads.
#[derive(Deserialize)]
struct ServiceAccount {
    private_key: String,
    client_email: String,
    token_uri: Option<String>,
}

impl Spec for JwtBearerSpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        let algorithms = [Algorithm::RS256, Algorithm::ES256];
        let algorithm =
            keys.choice(&self.algorithm, "algorithm", &["RS256", "ES256"])?.map_or(Algorithm::RS256, |i| algorithms[i]);
        let (pem, account, key_span) = match (&self.private_key, &self.key_file) {
            (Some(pem), None) => (keys.secret(pem, "auth.private_key")?, None, pem.span()),
            (None, Some(file)) => {
                let (path, text) = keys.file(file, "key_file")?;
                if text.trim_start().starts_with('{') {
                    let account: ServiceAccount = serde_json::from_str(&text).map_err(|e| {
                        keys.error(
                            file.span(),
                            format!("key_file {} is not a service-account key: {e}", path.display()),
                        )
                    })?;
                    keys.learn(&account.private_key, "auth.key_file");
                    (account.private_key.clone(), Some(account), file.span())
                } else {
                    keys.learn(&text, "auth.key_file");
                    (text, None, file.span())
                }
            }
            (Some(pem), Some(_)) => {
                return Err(keys.error(pem.span(), "give either private_key or key_file, not both".into()))
            }
            (None, None) => {
                let at = self.token_url.as_ref().or(self.issuer.as_ref()).map(|v| v.span()).unwrap_or(0..0);
                return Err(keys.error(at, "oauth2_jwt_bearer needs private_key or key_file".into()));
            }
        };
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .map_err(|e| keys.error(key_span.clone(), format!("the private key is not a {algorithm:?} PEM key: {e}")))?;
        let token_url = match (&self.token_url, account.as_ref().and_then(|a| a.token_uri.as_deref())) {
            (Some(url), _) => keys.url(url, "token_url")?,
            (None, Some(uri)) => url::Url::parse(uri)
                .map_err(|e| keys.error(key_span.clone(), format!("the key file's token_uri is not a URL: {e}")))?,
            (None, None) => return Err(keys.error(key_span, "oauth2_jwt_bearer needs token_url".into())),
        };
        let issuer = match (&self.issuer, &account) {
            (Some(issuer), _) => keys.identifier(issuer)?,
            (None, Some(account)) => account.client_email.clone(),
            (None, None) => return Err(keys.error(key_span, "oauth2_jwt_bearer needs issuer".into())),
        };
        let scopes: Vec<String> = self.scopes.iter().map(|s| keys.text(s)).collect::<Result<_, _>>()?;
        let assertion = Assertion {
            key,
            algorithm,
            subject: self.subject.as_ref().map(|s| keys.identifier(s)).transpose()?,
            audience: match &self.audience {
                Some(audience) => keys.identifier(audience)?,
                None => token_url.to_string(),
            },
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
            lifetime: keys.duration(&self.lifetime, Duration::from_secs(3600))?,
            issuer: issuer.clone(),
        };
        Ok(AuthPlan::OAuth(Box::new(Grant {
            kind: "oauth2_jwt_bearer",
            token_url,
            client_id: issuer,
            client_secret: None,
            flow: Flow::JwtBearer(assertion),
            scopes,
            audience: None,
            params: Vec::new(),
            client_auth: ClientAuth::Body,
        })))
    }
}
