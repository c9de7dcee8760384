//! `kind = "oauth2_refresh_token"` (RFC 6749 6): a refresh token the user authorized once buys
//! access tokens (Google, Xero, QuickBooks). Servers that rotate it answer each use with a new
//! one and kill the old: the new one goes to the token cache at once (see `cache.rs`), and
//! later runs start from it while the configured refresh token is still the one it grew from.

use crate::keys::Spanned;
use serde::Deserialize;

use super::client_credentials::{client_auth, params};
use super::oauth::{Flow, Grant};
use super::{AuthPlan, Spec};
use crate::error::JobError;
use crate::keys::KeyReader;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenSpec {
    token_url: Spanned<String>,
    client_id: Spanned<String>,
    /// A public client has none.
    client_secret: Option<Spanned<String>>,
    refresh_token: Spanned<String>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    audience: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::keys::shapes::Scalars>")]
    params: Option<Spanned<toml::Table>>,
    client_auth: Option<Spanned<String>>,
    /// Where the rotated refresh token is kept, instead of the user's cache folder.
    token_cache: Option<Spanned<String>>,
}

impl Spec for RefreshTokenSpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        Ok(AuthPlan::OAuth(Box::new(Grant {
            kind: "oauth2_refresh_token",
            token_url: keys.url(&self.token_url, "token_url")?,
            client_id: keys.identifier(&self.client_id)?,
            client_secret: self.client_secret.as_ref().map(|s| keys.secret(s, "auth.client_secret")).transpose()?,
            flow: Flow::RefreshToken {
                configured: keys.secret(&self.refresh_token, "auth.refresh_token")?,
                cache: self.token_cache.as_ref().map(|p| keys.text(p).map(std::path::PathBuf::from)).transpose()?,
            },
            scopes: self.scopes.iter().map(|s| keys.text(s)).collect::<Result<_, _>>()?,
            audience: self.audience.as_ref().map(|a| keys.text(a)).transpose()?,
            params: params(keys, &self.params)?,
            client_auth: client_auth(keys, &self.client_auth)?,
        })))
    }
}
