//! `[auth]`: the origins credentials may go to; every kind but `none` is refused for now.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthFile {
    kind: Option<Spanned<String>>,
    #[serde(default)]
    allow_origins: Vec<Spanned<String>>,
    token: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    value: Option<Spanned<String>>,
    #[serde(rename = "in")]
    in_: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<String>>>,
    client_auth: Option<Spanned<String>>,
    login_url: Option<Spanned<String>>,
    login_body: Option<Spanned<toml::Value>>,
    login_format: Option<Spanned<String>>,
}

impl Cx<'_> {
    pub(super) fn auth(&self, auth: Option<&Spanned<AuthFile>>) -> R<Vec<url::Origin>> {
        let Some(auth) = auth else { return Ok(Vec::new()) };
        let a = auth.get_ref();
        if let Some(kind) = &a.kind {
            if kind.get_ref() != "none" {
                let known = ["none", "bearer", "basic", "api_key", "oauth2_client_credentials", "session"];
                if !known.contains(&kind.get_ref().as_str()) {
                    return Err(self.err(
                        kind.span(),
                        format!("auth kind {:?} is not one of {}", kind.get_ref(), known.join(", ")),
                    ));
                }
                return Err(self.err(
                    kind.span(),
                    format!(
                        "[auth] kind = {:?} is not supported by this version of harvest yet; send the credential as a header instead, e.g. headers = {{ Authorization = \"Bearer ${{API_TOKEN}}\" }}",
                        kind.get_ref()
                    ),
                ));
            }
        }
        let stray = [
            a.token.as_ref().map(|v| ("token", v.span())),
            a.username.as_ref().map(|v| ("username", v.span())),
            a.password.as_ref().map(|v| ("password", v.span())),
            a.name.as_ref().map(|v| ("name", v.span())),
            a.value.as_ref().map(|v| ("value", v.span())),
            a.in_.as_ref().map(|v| ("in", v.span())),
            a.token_url.as_ref().map(|v| ("token_url", v.span())),
            a.client_id.as_ref().map(|v| ("client_id", v.span())),
            a.client_secret.as_ref().map(|v| ("client_secret", v.span())),
            a.scopes.as_ref().map(|v| ("scopes", v.span())),
            a.client_auth.as_ref().map(|v| ("client_auth", v.span())),
            a.login_url.as_ref().map(|v| ("login_url", v.span())),
            a.login_body.as_ref().map(|v| ("login_body", v.span())),
            a.login_format.as_ref().map(|v| ("login_format", v.span())),
        ];
        if let Some((key, span)) = stray.into_iter().flatten().next() {
            return Err(self.err(span, format!("`{key}` does not apply to auth kind \"none\"")));
        }
        a.allow_origins
            .iter()
            .map(|o| {
                let text = self.string(o)?;
                let url = url::Url::parse(&text)
                    .map_err(|e| self.err(o.span(), format!("allow_origins entry {text:?} is not a URL: {e}")))?;
                Ok(url.origin())
            })
            .collect()
    }
}
