//! `kind = "api_key"`: a key sent as a header (`X-Api-Key`), a query parameter (`api_key`) or
//! a cookie, by the name the API gives it.

use crate::keys::Spanned;
use serde::Deserialize;

use super::fixed::{Fixed, Place};
use super::{AuthPlan, Spec};
use crate::error::JobError;
use crate::keys::KeyReader;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    name: Spanned<String>,
    value: Spanned<String>,
    /// `header` (default), `query` or `cookie`.
    #[serde(rename = "in")]
    in_: Option<Spanned<String>>,
}

impl Spec for ApiKeySpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        let places = [Place::Header, Place::Query, Place::Cookie];
        let place = keys.choice(&self.in_, "in", &["header", "query", "cookie"])?.map_or(Place::Header, |i| places[i]);
        let name = keys.text(&self.name)?;
        if name.trim().is_empty() {
            return Err(keys.error(self.name.span(), "api_key needs the name the API gives the key".into()));
        }
        Ok(AuthPlan::Fixed(Fixed { kind: "api_key", place, name, value: keys.secret(&self.value, "auth.value")? }))
    }
}
