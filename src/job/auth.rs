//! `[auth]`: `kind` picks how requests prove who sends them, and the kind reads its own keys
//! (its `Spec`, in its file under `auth/`); `allow_origins` is read here for every kind. A
//! key of another kind is an error at its line that names the kind it belongs to.

use toml::de::{DeTable, DeValue};

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
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shared {
    kind: Option<Spanned<String>>,
    #[serde(default)]
    allow_origins: Vec<Spanned<String>>,
}

/// An auth kind as the job file names it: its own keys and how they are built.
struct Kind {
    name: &'static str,
    keys: &'static [&'static str],
    build: fn(&Cx, Spanned<DeValue>) -> R<AuthPlan>,
}

impl Kind {
    fn of<S: Spec>(name: &'static str) -> Kind {
        Kind { name, keys: keys_of::<S>(), build: |cx, keys| cx.section::<S>(keys)?.build(cx) }
    }
}

/// Every auth kind, in the order messages list them.
fn kinds() -> [Kind; 8] {
    [
        Kind::of::<NoneSpec>("none"),
        Kind::of::<BearerSpec>("bearer"),
        Kind::of::<BasicSpec>("basic"),
        Kind::of::<ApiKeySpec>("api_key"),
        Kind::of::<ClientCredentialsSpec>("oauth2_client_credentials"),
        Kind::of::<RefreshTokenSpec>("oauth2_refresh_token"),
        Kind::of::<JwtBearerSpec>("oauth2_jwt_bearer"),
        Kind::of::<SessionSpec>("session"),
    ]
}

impl Cx<'_> {
    /// `[auth]`: the plan of its kind and the origins credentials may go to besides
    /// `request.url`'s.
    pub(super) fn auth(&self, section: Option<&Spanned<DeValue>>) -> R<(AuthPlan, Vec<url::Origin>)> {
        let Some(section) = section else { return Ok((AuthPlan::None, Vec::new())) };
        let span = section.span();
        let Some(table) = section.get_ref().as_table() else {
            return Err(self.err(span, "[auth] must be a table"));
        };
        let shared_keys = keys_of::<Shared>();
        let (shared, own): (DeTable, DeTable) = table
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| shared_keys.contains(&k.get_ref().as_ref()));
        let shared: Shared = self.section(Spanned::new(span.clone(), DeValue::Table(shared)))?;
        let kinds = kinds();
        let name = shared.kind.as_ref().map_or("none", |k| k.get_ref().as_str());
        let kind_span = shared.kind.as_ref().map_or(span.clone(), |k| k.span());
        let Some(kind) = kinds.iter().find(|k| k.name == name) else {
            let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
            return Err(self.err(
                kind_span,
                format!("auth kind {name:?} is not one of {}{}", names.join(", "), did_you_mean(name, &names)),
            ));
        };
        if let Some((key, value)) = own.iter().find(|(k, _)| !kind.keys.contains(&k.get_ref().as_ref())) {
            let key_name = key.get_ref();
            let owners: Vec<&str> =
                kinds.iter().filter(|k| k.keys.contains(&key_name.as_ref())).map(|k| k.name).collect();
            return Err(if owners.is_empty() {
                // A misspelt key of any kind is worth naming; otherwise list this kind's.
                let every: Vec<&str> = shared_keys.iter().chain(kinds.iter().flat_map(|k| k.keys)).copied().collect();
                let allowed: Vec<&str> = shared_keys.iter().chain(kind.keys).copied().collect();
                let hint = Some(did_you_mean(key_name, &every)).filter(|h| !h.is_empty());
                let hint = hint.unwrap_or_else(|| key_hint(key_name, &allowed));
                self.err(key.span(), format!("unknown key `{key_name}` in [auth]{hint}"))
            } else {
                let owners = owners.join(" or ");
                self.err(
                    value.span(),
                    format!("`{key_name}` does not apply to auth kind {name:?} (it is for kind {owners})"),
                )
            });
        }
        let plan = (kind.build)(self, Spanned::new(span, DeValue::Table(own)))?;
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
