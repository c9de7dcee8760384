//! `kind = "oauth2_client_credentials"` (RFC 6749 4.4): the client's id and secret buy an
//! access token at `token_url` (HubSpot, Salesforce, Zoom, Microsoft Graph, Auth0).

use crate::keys::Spanned;
use serde::Deserialize;

use super::oauth::{ClientAuth, Flow, Grant};
use super::{AuthPlan, Spec};
use crate::error::JobError;
use crate::keys::KeyReader;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsSpec {
    token_url: Spanned<String>,
    client_id: Spanned<String>,
    client_secret: Spanned<String>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    audience: Option<Spanned<String>>,
    /// Extra form fields of the token request.
    #[schemars(with = "Option<crate::keys::shapes::Scalars>")]
    params: Option<Spanned<toml::Table>>,
    /// `basic` (default, RFC 6749 2.3.1) or `body`.
    client_auth: Option<Spanned<String>>,
}

/// `client_auth`: `basic` (default) or `body`.
pub(super) fn client_auth(keys: &dyn KeyReader, value: &Option<Spanned<String>>) -> Result<ClientAuth, JobError> {
    Ok(match keys.choice(value, "client_auth", &["basic", "body"])? {
        Some(1) => ClientAuth::Body,
        _ => ClientAuth::Basic,
    })
}

/// `params`: extra form fields of the token request.
pub(super) fn params(
    keys: &dyn KeyReader,
    table: &Option<Spanned<toml::Table>>,
) -> Result<Vec<(String, String)>, JobError> {
    let mut params = Vec::new();
    if let Some(table) = table {
        for (name, value) in table.get_ref() {
            let text = match value {
                toml::Value::String(s) => keys.text(&Spanned::new(table.span(), s.clone()))?,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(keys.error(table.span(), format!("auth.params.{name} must be a string or number"))),
            };
            params.push((name.clone(), text));
        }
    }
    Ok(params)
}

impl Spec for ClientCredentialsSpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        let client_auth = client_auth(keys, &self.client_auth)?;
        let params = params(keys, &self.params)?;
        Ok(AuthPlan::OAuth(Box::new(Grant {
            kind: "oauth2_client_credentials",
            token_url: keys.url(&self.token_url, "token_url")?,
            // An identifier, shown in messages even when it came from ${VAR}.
            client_id: keys.identifier(&self.client_id)?,
            client_secret: Some(keys.secret(&self.client_secret, "auth.client_secret")?),
            flow: Flow::ClientCredentials,
            scopes: self.scopes.iter().map(|s| keys.text(s)).collect::<Result<_, _>>()?,
            audience: self.audience.as_ref().map(|a| keys.text(a)).transpose()?,
            params,
            client_auth,
        })))
    }
}
