//! `kind = "basic"`: HTTP Basic, `Authorization: Basic base64(username:password)` (RFC 7617).

use crate::keys::Spanned;
use base64::Engine;
use serde::Deserialize;

use super::fixed::{Fixed, Place};
use super::{AuthPlan, Spec};
use crate::error::JobError;
use crate::keys::KeyReader;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicSpec {
    username: Spanned<String>,
    password: Spanned<String>,
}

impl Spec for BasicSpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        // The username is an identifier; the pair is the secret, in every form it is sent.
        let username = keys.identifier(&self.username)?;
        let password = keys.secret(&self.password, "auth.password")?;
        let pair = format!("{username}:{password}");
        keys.learn(&pair, "auth.basic");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
        Ok(AuthPlan::Fixed(Fixed {
            kind: "basic",
            place: Place::Header,
            name: "Authorization".into(),
            value: format!("Basic {encoded}"),
        }))
    }
}
