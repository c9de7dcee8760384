//! `[request]`: the URL, params, headers and body, with their `{partition}` placeholders checked.

use super::*;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestFile {
    pub(super) url: Spanned<String>,
    method: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::keys::shapes::Params>")]
    params: Option<Spanned<toml::Table>>,
    #[schemars(with = "Option<crate::keys::shapes::Scalars>")]
    headers: Option<Spanned<toml::Table>>,
    #[schemars(with = "Option<serde_json::Value>")]
    body: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    #[schemars(with = "Option<crate::keys::shapes::Size>")]
    max_body: Option<Spanned<toml::Value>>,
    ca_cert: Option<Spanned<String>>,
    insecure_skip_verify: Option<bool>,
    /// Keep each response this long (`"10m"`) while a job is being written; see `run --cache`.
    pub(super) cache: Option<Spanned<String>>,
}

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
                let path = self.beside_job(self.string(p)?);
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
            // The account it is kept for is known once every section is read.
            cache: match &r.cache {
                Some(_) => Some(CachePlan { ttl: self.duration(&r.cache, Duration::ZERO)?, account: String::new() }),
                None => None,
            },
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
}
