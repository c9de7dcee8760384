//! `[request]` and `[auth]`: the URL, params, headers and body, their `{partition}`
//! placeholders checked, and the origins credentials may go to.

use super::*;

impl Cx<'_> {
    pub(super) fn request(&self, r: &RequestFile, keys: &[&str]) -> R<RequestPlan> {
        let url = self.interpolate(r.url.get_ref(), &r.url.span(), true)?;
        self.check_placeholders(&url, keys, r.url.span(), "request.url")?;
        let method = self.choice(&r.method, "method", &[("GET", Method::Get), ("POST", Method::Post)], Method::Get)?;
        let mut params = Vec::new();
        for (k, v, span) in entries(&r.params) {
            let values = match v {
                toml::Value::Array(items) => {
                    items.iter().map(|i| self.scalar(i, &span, &format!("params.{k}"))).collect::<R<Vec<_>>>()?
                }
                v => vec![self.scalar(v, &span, &format!("params.{k}"))?],
            };
            for value in values {
                self.check_placeholders(&value, keys, span.clone(), &format!("params.{k}"))?;
                params.push((k.clone(), value));
            }
        }
        let mut headers = Vec::new();
        for (k, v, span) in entries(&r.headers) {
            let value = self.scalar(v, &span, &format!("headers.{k}"))?;
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(self.err(span, format!("{k:?} is not a valid header name")));
            }
            if reqwest::header::HeaderValue::from_str(&value).is_err() {
                return Err(self.err(span, format!("the value of header {k} is not a valid header value")));
            }
            headers.push((k.clone(), value));
        }
        let body = match &r.body {
            Some(b) => {
                if method == Method::Get {
                    return Err(self.err(b.span(), "request.body needs method = \"POST\""));
                }
                Some(self.json(b.get_ref(), &b.span())?)
            }
            None => None,
        };
        let max_body = match &r.max_body {
            None => 64 << 20,
            Some(v) => match v.get_ref() {
                toml::Value::Integer(i) if *i > 0 => *i as u64,
                toml::Value::String(s) => parse_size(s).map_err(|e| self.err(v.span(), e))?,
                _ => return Err(self.err(v.span(), "max_body must be a size such as \"64MiB\" or a number of bytes")),
            },
        };
        let ca_cert = match &r.ca_cert {
            Some(p) => {
                let path = PathBuf::from(self.string(p)?);
                let path =
                    if path.is_relative() { self.file.parent().map(|d| d.join(&path)).unwrap_or(path) } else { path };
                if !path.is_file() {
                    return Err(self.err(p.span(), format!("ca_cert {} is not a readable file", path.display())));
                }
                Some(path)
            }
            None => None,
        };
        Ok(RequestPlan {
            url,
            method,
            params,
            headers,
            body,
            timeout: self.duration(&r.timeout, Duration::from_secs(30))?,
            connect_timeout: self.duration(&r.connect_timeout, Duration::from_secs(5))?,
            max_body,
            ca_cert,
            insecure_skip_verify: r.insecure_skip_verify.unwrap_or(false),
        })
    }

    /// `{name}` in a URL or parameter must name a partition key.
    pub(super) fn check_placeholders(&self, text: &str, keys: &[&str], span: Range<usize>, what: &str) -> R<()> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            if let Some(close) = after.find('}') {
                let name = &after[..close];
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !keys.contains(&name)
                {
                    let hint = match keys {
                        [] => "the job has no [partitions]".to_string(),
                        keys => format!("the partition keys are {}", keys.join(", ")),
                    };
                    return Err(self.err(span, format!("{what} uses {{{name}}}, but {hint}")));
                }
            }
            rest = after;
        }
        Ok(())
    }

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
