//! Redaction: the one place that decides what a log line, error or manifest may show.
//!
//! A secret is any value that came from `${VAR}` in the job file. It is replaced by `***`
//! wherever it appears: raw, percent-encoded or form-encoded (servers copy credentials into
//! the next links they send back). Query parameters whose names say they carry credentials
//! (`api_key`, `access_token`, ...) and URL passwords are masked too, whatever their value.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use url::Url;

pub const MASK: &str = "***";

/// Query parameter names that carry credentials by convention, compared case-insensitively
/// with `-` and `_` ignored.
const SENSITIVE_PARAMS: &[&str] = &[
    "apikey",
    "key",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "auth",
    "authorization",
    "password",
    "passwd",
    "secret",
    "clientsecret",
    "signature",
    "sig",
    "session",
    "sessionid",
    "xapikey",
];

/// Header names whose values are never shown.
const SENSITIVE_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"];

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Every form a secret can take in text, longest first so that a secret containing
    /// another is masked whole.
    needles: Vec<String>,
}

impl Redactor {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut needles = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            needles.push(secret.to_string());
            let encoded = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
            needles.push(encoded.clone());
            needles.push(form_urlencoded_value(secret));
            // The way the `url` crate encodes a path segment or query keeps more as is.
            needles.push(utf8_percent_encode(secret, QUERY_SET).to_string());
            // Lowercase hex escapes, as some servers write them.
            needles.push(lowercase_escapes(&encoded));
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Redactor { needles }
    }

    /// True when the job has secrets at all.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// True when `text` holds a secret in any of its forms.
    pub fn contains_secret(&self, text: &str) -> bool {
        self.needles.iter().any(|n| text.contains(n.as_str()))
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.contains_secret(text) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        Cow::Owned(out)
    }

    /// A URL fit for a log line: secrets masked, credential-like query values masked by name,
    /// and the password of any userinfo masked.
    pub fn url(&self, url: &Url) -> String {
        let mut shown = url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some(MASK));
        }
        if shown.query().is_some() && shown.query_pairs().any(|(k, _)| is_sensitive_param(&k)) {
            let pairs: Vec<(String, String)> = shown
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_sensitive_param(&k) { MASK.to_string() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        // `***` gets percent-encoded by the query serializer; show it plainly.
        let text = shown.as_str().replace("%2A%2A%2A", MASK);
        self.redact(&text).into_owned()
    }

    /// A header value fit for display.
    pub fn header<'a>(&self, name: &str, value: &'a str) -> Cow<'a, str> {
        if SENSITIVE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            Cow::Borrowed(MASK)
        } else {
            self.redact(value)
        }
    }
}

/// True for query parameter names that carry credentials by convention.
pub fn is_sensitive_param(name: &str) -> bool {
    let folded: String = name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    SENSITIVE_PARAMS.contains(&folded.as_str())
}

const QUERY_SET: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>').add(b'\'');

fn form_urlencoded_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_encoding_of_a_secret() {
        let r = Redactor::new(["s3cr+t/="]);
        assert_eq!(r.redact("token s3cr+t/= here"), "token *** here");
        assert_eq!(r.redact("a=s3cr%2Bt%2F%3D"), "a=***");
        assert_eq!(r.redact("a=s3cr%2bt%2f%3d"), "a=***");
        assert!(!r.contains_secret("nothing"));
    }

    #[test]
    fn masks_credential_params_by_name() {
        let r = Redactor::default();
        let url = Url::parse("https://u:pw@api.example.com/x?page=2&api_key=abc&Access-Token=t").unwrap();
        let shown = r.url(&url);
        assert_eq!(shown, "https://u:***@api.example.com/x?page=2&api_key=***&Access-Token=***");
    }
}
