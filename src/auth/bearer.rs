//! `kind = "bearer"`: `Authorization: Bearer <token>`, or another header or prefix for APIs
//! that want `Authorization: token <token>` (GitHub's classic form) or `X-Auth-Token: <token>`.

use crate::keys::Spanned;
use serde::Deserialize;

use super::fixed::{Fixed, Place};
use super::{AuthPlan, Spec};
use crate::error::JobError;
use crate::keys::KeyReader;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerSpec {
    token: Spanned<String>,
    /// Default `Authorization`.
    header: Option<Spanned<String>>,
    /// Sent verbatim before the token, space included; default `"Bearer "`.
    prefix: Option<Spanned<String>>,
}

impl Spec for BearerSpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        let token = keys.secret(&self.token, "auth.token")?;
        let prefix = keys.text_or(&self.prefix, "Bearer ")?;
        let name = keys.text_or(&self.header, "Authorization")?;
        if let (Err(_), Some(header)) = (reqwest::header::HeaderName::from_bytes(name.as_bytes()), &self.header) {
            return Err(keys.error(header.span(), format!("header = {name:?} is not a valid HTTP header name")));
        }
        Ok(AuthPlan::Fixed(Fixed { kind: "bearer", place: Place::Header, name, value: format!("{prefix}{token}") }))
    }
}
