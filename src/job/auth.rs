//! `[auth]`: `kind` picks how requests prove who sends them, and the kind reads its own keys
//! (its `Spec`, in its file under `auth/`); `allow_origins` is read here for every kind. A
//! key of another kind is an error at its line that names the kind it belongs to.

use toml::de::DeValue;

use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::sections::KindKeys;
use super::*;
use crate::auth::api_key::ApiKeySpec;
use crate::auth::basic::BasicSpec;
use crate::auth::bearer::BearerSpec;
use crate::auth::client_credentials::ClientCredentialsSpec;
use crate::auth::jwt_bearer::JwtBearerSpec;
use crate::auth::refresh_token::RefreshTokenSpec;
use crate::auth::session::SessionSpec;
use crate::auth::{AuthPlan, NoneSpec, Spec};

/// The keys every auth kind takes.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SharedAuthKeys {
    kind: Option<Spanned<String>>,
    #[serde(default)]
    allow_origins: Vec<Spanned<String>>,
}

/// An auth kind as the job file names it: its own keys and how they are built.
struct AuthKind {
    name: &'static str,
    keys: &'static [&'static str],
    schema: fn(&mut SchemaGenerator) -> Schema,
    build: fn(&Cx, toml::Spanned<DeValue>) -> R<AuthPlan>,
}

impl AuthKind {
    fn of<S: Spec + JsonSchema>(name: &'static str) -> AuthKind {
        AuthKind {
            name,
            keys: keys_of::<S>(),
            schema: S::json_schema,
            build: |cx, keys| cx.section::<S>(keys)?.build(cx),
        }
    }
}

/// Every auth kind, in the order messages list them.
fn kinds() -> [AuthKind; 8] {
    [
        AuthKind::of::<NoneSpec>("none"),
        AuthKind::of::<BearerSpec>("bearer"),
        AuthKind::of::<BasicSpec>("basic"),
        AuthKind::of::<ApiKeySpec>("api_key"),
        AuthKind::of::<ClientCredentialsSpec>("oauth2_client_credentials"),
        AuthKind::of::<RefreshTokenSpec>("oauth2_refresh_token"),
        AuthKind::of::<JwtBearerSpec>("oauth2_jwt_bearer"),
        AuthKind::of::<SessionSpec>("session"),
    ]
}

/// The JSON Schema of the section: one shape per kind.
pub(super) fn schema(generator: &mut SchemaGenerator) -> Schema {
    let shared = SharedAuthKeys::json_schema(generator);
    let own = kinds().iter().map(|kind| (kind.name, (kind.schema)(generator))).collect();
    super::sections::kinds_schema(shared, own, Some("none"))
}

impl Cx<'_> {
    /// `[auth]`: the plan of its kind and the origins credentials may go to besides
    /// `request.url`'s.
    pub(super) fn auth(&self, section: Option<&toml::Spanned<DeValue>>) -> R<(AuthPlan, Vec<url::Origin>)> {
        let Some(section) = section else { return Ok((AuthPlan::None, Vec::new())) };
        let (shared, own): (SharedAuthKeys, _) = self.split_section(section, "auth")?;
        let kinds = kinds();
        let names: Vec<KindKeys> = kinds.iter().map(|k| (k.name, k.keys)).collect();
        let name = shared.kind.as_ref().map_or("none", |k| k.get_ref().as_str());
        let kind_span = shared.kind.as_ref().map_or(section.span(), |k| k.span());
        let kind = self.kind_named("auth", name, kind_span, &names)?;
        self.only_keys_of("auth", &own, kind, &names, keys_of::<SharedAuthKeys>())?;
        let plan = (kinds[kind].build)(self, toml::Spanned::new(section.span(), DeValue::Table(own)))?;
        let origins = shared
            .allow_origins
            .iter()
            .map(|o| {
                let text = self.string(o)?;
                let url = url::Url::parse(&text)
                    .map_err(|e| self.err(o.span(), format!("allow_origins entry {text:?} is not a URL: {e}")))?;
                Ok(url.origin())
            })
            .collect::<R<_>>()?;
        Ok((plan, origins))
    }
}
