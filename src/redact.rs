//! Redaction: the one place that decides what a log line, error, manifest or checkpoint may
//! show.
//!
//! A secret is any value that came from `${VAR}` in the job file (and the credentials of a
//! URL's userinfo, which reach the server as base64). It can turn up in text in any of the
//! forms a request gives it: raw, percent-encoded (either case of hex), form-encoded (`+`
//! for spaces), as the `url` crate writes a query, or as base64. Servers copy credentials
//! into the next links they send back, so all of these are looked for everywhere.
//!
//! Two ways to take a secret out of text:
//! - [`Redactor::redact`] masks it as `***`, for anything shown (logs, errors, `check`).
//! - [`Redactor::seal`] replaces it with a reference to where it came from,
//!   `${secret:VAR:form}`, for what harvest saves and reads back (a checkpoint's next
//!   request, incremental marks): [`Redactor::unseal`] fills the reference again with the
//!   value the job has *now*, in the same form, so a key rotated between a crash and its
//!   resume keeps working, and the file never holds the secret itself.
//!
//! Query parameters whose names say they carry credentials (`api_key`, `access_token`, ...)
//! and URL passwords are masked in shown URLs too, whatever their value.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use url::Url;

pub const MASK: &str = "***";

/// How a sealed reference starts: `${secret:NAME:form}`.
const REFERENCE: &str = "${secret:";

/// Why a sealed text cannot be filled in again.
#[derive(Debug, thiserror::Error)]
pub enum Unsealable {
    /// A reference to a secret the job no longer has: its name (`API_TOKEN`).
    #[error("${{{0}}}")]
    Gone(String),
    /// A reference in a form of spelling this harvest does not know (a newer one wrote it).
    #[error("an unknown form of secret in ${{secret:{0}}}")]
    UnknownForm(String),
}

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

/// Where a secret came from, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The variable's name (`API_KEY`), or what else names its source: a reference names it.
    pub name: String,
    pub value: String,
}

impl Secret {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Secret { name: name.into(), value: value.into() }
    }
}

/// A form a secret takes in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    Raw,
    /// Every byte but letters and digits escaped, upper-case hex.
    Percent,
    /// The same with lower-case hex, as some servers write it.
    PercentLower,
    /// `application/x-www-form-urlencoded`: `+` for spaces.
    FormUrlencoded,
    /// The way the `url` crate writes a path segment or query: more kept as is.
    Query,
    /// Standard base64, as HTTP Basic sends `user:password`; matched without its padding.
    Base64,
}

impl Spelling {
    const ALL: [Spelling; 6] = [
        Spelling::Raw,
        Spelling::Percent,
        Spelling::PercentLower,
        Spelling::FormUrlencoded,
        Spelling::Query,
        Spelling::Base64,
    ];

    fn name(self) -> &'static str {
        match self {
            Spelling::Raw => "raw",
            Spelling::Percent => "percent",
            Spelling::PercentLower => "percent-lower",
            Spelling::FormUrlencoded => "form",
            Spelling::Query => "query",
            Spelling::Base64 => "base64",
        }
    }

    fn named(name: &str) -> Option<Spelling> {
        Spelling::ALL.into_iter().find(|f| f.name() == name)
    }

    fn encode(self, value: &str) -> String {
        match self {
            Spelling::Raw => value.to_string(),
            Spelling::Percent => utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
            Spelling::PercentLower => lowercase_escapes(&utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()),
            Spelling::FormUrlencoded => url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
            Spelling::Query => utf8_percent_encode(value, QUERY_SET).to_string(),
            Spelling::Base64 => base64::engine::general_purpose::STANDARD_NO_PAD.encode(value),
        }
    }
}

/// One text to look for: a secret in one of its forms.
#[derive(Debug, Clone)]
struct Needle {
    secret: usize,
    form: Spelling,
}

/// The run's redactor. Clones share what they know: a secret learned anywhere during the run
/// (a token a server issued, a session cookie) is masked everywhere from then on, and treated
/// by the origin rule like a `${VAR}` value.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    known: Arc<RwLock<Arc<Known>>>,
}

/// The secrets known at one moment, and how to find them in text.
#[derive(Debug, Default)]
struct Known {
    secrets: Vec<Secret>,
    /// Every form of every secret, in the order `finder` knows them.
    needles: Vec<Needle>,
    /// Finds the leftmost, longest needle in one pass, so that a secret containing another
    /// is taken whole and nothing a replacement wrote is looked at again.
    finder: Option<AhoCorasick>,
}

impl Known {
    fn build(secrets: Vec<Secret>) -> Self {
        let secrets: Vec<Secret> = secrets.into_iter().filter(|s| !s.value.is_empty()).collect();
        let mut texts: Vec<String> = Vec::new();
        let mut needles = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            for form in Spelling::ALL {
                let text = form.encode(&secret.value);
                // Two forms that read the same (a secret of letters only) are one needle; a
                // short base64 text would match too much by chance.
                if texts.contains(&text) || (form == Spelling::Base64 && text.len() < 8) {
                    continue;
                }
                texts.push(text);
                needles.push(Needle { secret: index, form });
            }
        }
        let finder = (!texts.is_empty()).then(|| {
            AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&texts).expect("needles build")
        });
        Known { secrets, needles, finder }
    }

    /// True when `text` holds a secret in any of its forms.
    fn contains_secret(&self, text: &str) -> bool {
        self.finder.as_ref().is_some_and(|f| f.is_match(text))
    }

    /// `text` with every secret replaced by `***`.
    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.replace(text, |_| MASK.to_string())
    }

    /// `text` with every secret replaced by a reference to its source, `${secret:NAME:form}`,
    /// which [`Redactor::unseal`] turns back into the value in that form.
    fn seal<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.replace(text, |needle| format!("{REFERENCE}{}:{}}}", self.secrets[needle.secret].name, needle.form.name()))
    }

    /// `text` with every reference [`Redactor::seal`] wrote filled with the current value
    /// of its source. A reference to a source the job no longer has is an error naming it.
    fn unseal<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, Unsealable> {
        if !text.contains(REFERENCE) {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(REFERENCE) {
            out.push_str(&rest[..start]);
            let inner = &rest[start + REFERENCE.len()..];
            let Some(end) = inner.find('}') else { break };
            let (name, form) = inner[..end].rsplit_once(':').unwrap_or((&inner[..end], ""));
            let form = Spelling::named(form).ok_or_else(|| Unsealable::UnknownForm(inner[..end].to_string()))?;
            let secret =
                self.secrets.iter().find(|s| s.name == name).ok_or_else(|| Unsealable::Gone(name.to_string()))?;
            out.push_str(&form.encode(&secret.value));
            rest = &inner[end + 1..];
        }
        out.push_str(rest);
        Ok(Cow::Owned(out))
    }

    /// [`Redactor::seal`] every string (and object key) inside a JSON value.
    fn seal_json(&self, value: &mut serde_json::Value) {
        if self.finder.is_some() {
            map_strings(value, &mut |s| Ok::<_, ()>(self.seal(s).into_owned())).expect("sealing cannot fail");
        }
    }

    /// [`Redactor::unseal`] every string (and object key) inside a JSON value.
    fn unseal_json(&self, value: &mut serde_json::Value) -> Result<(), Unsealable> {
        map_strings(value, &mut |s| self.unseal(s).map(Cow::into_owned))
    }

    fn replace<'a>(&self, text: &'a str, with: impl Fn(&Needle) -> String) -> Cow<'a, str> {
        let Some(finder) = &self.finder else { return Cow::Borrowed(text) };
        let mut matches = finder.find_iter(text).peekable();
        if matches.peek().is_none() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for found in matches {
            out.push_str(&text[last..found.start()]);
            out.push_str(&with(&self.needles[found.pattern().as_usize()]));
            last = found.end();
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }
}

impl Redactor {
    pub fn new<I>(secrets: I) -> Self
    where
        I: IntoIterator<Item = Secret>,
    {
        Redactor { known: Arc::new(RwLock::new(Arc::new(Known::build(secrets.into_iter().collect())))) }
    }

    /// What is known now (a snapshot: a secret learned meanwhile is in the next one).
    fn now(&self) -> Arc<Known> {
        self.known.read().expect("redactor lock").clone()
    }

    /// A secret the run obtained (a token, a cookie, a session id): masked everywhere from
    /// now on, by every clone of this redactor.
    pub fn learn(&self, secret: Secret) {
        if secret.value.is_empty() {
            return;
        }
        let mut known = self.known.write().expect("redactor lock");
        if known.secrets.iter().any(|s| s.value == secret.value) {
            return;
        }
        let mut secrets = known.secrets.clone();
        secrets.push(secret);
        *known = Arc::new(Known::build(secrets));
    }

    /// True when the job has secrets at all.
    pub fn is_empty(&self) -> bool {
        self.now().secrets.is_empty()
    }

    /// True when `text` holds a secret in any of its forms.
    pub fn contains_secret(&self, text: &str) -> bool {
        self.now().contains_secret(text)
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.now().redact(text)
    }

    /// `text` with every secret replaced by a reference to its source, `${secret:NAME:form}`,
    /// which [`Redactor::unseal`] turns back into the value in that form.
    pub fn seal<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.now().seal(text)
    }

    /// `text` with every reference [`Redactor::seal`] wrote filled with the current value
    /// of its source. A reference to a source the job no longer has is an error naming it.
    pub fn unseal<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, Unsealable> {
        self.now().unseal(text)
    }

    /// [`Redactor::seal`] every string (and object key) inside a JSON value.
    pub fn seal_json(&self, value: &mut serde_json::Value) {
        self.now().seal_json(value)
    }

    /// [`Redactor::unseal`] every string (and object key) inside a JSON value.
    pub fn unseal_json(&self, value: &mut serde_json::Value) -> Result<(), Unsealable> {
        self.now().unseal_json(value)
    }

    /// [`Redactor::redact`] every string inside a JSON value but file names (`file`), which
    /// harvest makes itself: for a manifest, whose free text (partition labels, schema names)
    /// may hold what a run learned.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        let known = self.now();
        if known.finder.is_none() {
            return;
        }
        fn walk(known: &Known, value: &mut serde_json::Value) {
            use serde_json::Value;
            match value {
                Value::String(s) => {
                    if let Cow::Owned(masked) = known.redact(s) {
                        *s = masked;
                    }
                }
                Value::Array(items) => items.iter_mut().for_each(|item| walk(known, item)),
                Value::Object(map) => {
                    for (key, item) in map.iter_mut() {
                        if key != "file" {
                            walk(known, item);
                        }
                    }
                }
                _ => {}
            }
        }
        walk(&known, value);
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

/// Apply `f` to every string and object key inside `value`.
fn map_strings<E>(value: &mut serde_json::Value, f: &mut impl FnMut(&str) -> Result<String, E>) -> Result<(), E> {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = f(s)?,
        Value::Array(items) => {
            for item in items {
                map_strings(item, f)?;
            }
        }
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                map_strings(&mut item, f)?;
                map.insert(f(&key)?, item);
            }
        }
        _ => {}
    }
    Ok(())
}

/// True for query parameter names that carry credentials by convention.
pub fn is_sensitive_param(name: &str) -> bool {
    let folded: String = name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    SENSITIVE_PARAMS.contains(&folded.as_str())
}

const QUERY_SET: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>').add(b'\'');

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

    fn redactor(secrets: &[(&str, &str)]) -> Redactor {
        Redactor::new(secrets.iter().map(|(n, v)| Secret::new(*n, *v)))
    }

    #[test]
    fn masks_every_encoding_of_a_secret() {
        let r = redactor(&[("T", "s3cr+t/= x")]);
        assert_eq!(r.redact("token s3cr+t/= x here"), "token *** here");
        assert_eq!(r.redact("a=s3cr%2Bt%2F%3D%20x"), "a=***");
        assert_eq!(r.redact("a=s3cr%2bt%2f%3d%20x"), "a=***");
        assert_eq!(r.redact("a=s3cr%2Bt%2F%3D+x&b"), "a=***&b");
        assert_eq!(r.redact("a=s3cr+t/=%20x&b"), "a=***&b");
        let basic = base64::engine::general_purpose::STANDARD.encode("s3cr+t/= x");
        assert_eq!(r.redact(&format!("Basic {basic}")), "Basic ***==");
        assert!(!r.contains_secret("nothing"));
    }

    #[test]
    fn masks_credential_params_by_name() {
        let r = Redactor::default();
        let url = Url::parse("https://u:pw@api.example.com/x?page=2&api_key=abc&Access-Token=t").unwrap();
        let shown = r.url(&url);
        assert_eq!(shown, "https://u:***@api.example.com/x?page=2&api_key=***&Access-Token=***");
    }

    #[test]
    fn a_secret_containing_another_is_taken_whole() {
        let r = redactor(&[("SHORT", "abc"), ("LONG", "xxabcxx")]);
        assert_eq!(r.seal("1 xxabcxx 2 abc"), "1 ${secret:LONG:raw} 2 ${secret:SHORT:raw}");
        // A variable whose name holds the value is not sealed twice.
        let r = redactor(&[("K", "K")]);
        assert_eq!(r.seal("aKb"), "a${secret:K:raw}b");
        assert_eq!(r.unseal(&r.seal("aKb")).unwrap(), "aKb");
    }

    #[test]
    fn sealed_text_is_filled_again_with_the_current_value_in_its_form() {
        let old = redactor(&[("KEY", "old+key/=1"), ("TOKEN", "tok en")]);
        let url = "https://h/x?api_key=old%2Bkey%2F%3D1&q=old+key/=1&t=tok+en&u=tok%20en";
        let sealed = old.seal(url);
        assert!(!old.contains_secret(&sealed), "{sealed}");
        assert!(!sealed.contains("old") && !sealed.contains("tok"), "{sealed}");
        assert_eq!(old.unseal(&sealed).unwrap(), url);
        // The key was rotated: the new value goes where the old one was, encoded alike.
        let new = redactor(&[("KEY", "new&key 2"), ("TOKEN", "tok en")]);
        assert_eq!(new.unseal(&sealed).unwrap(), "https://h/x?api_key=new%26key%202&q=new&key 2&t=tok+en&u=tok%20en");
        // A source the job no longer has.
        let none = redactor(&[("TOKEN", "tok en")]);
        assert!(matches!(none.unseal(&sealed).unwrap_err(), Unsealable::Gone(name) if name == "KEY"));
        // A form of spelling this harvest does not know is not a secret's name.
        let unknown = old.unseal("a ${secret:KEY:rot13} b").unwrap_err();
        assert!(matches!(&unknown, Unsealable::UnknownForm(form) if form == "KEY:rot13"), "{unknown:?}");
    }

    #[test]
    fn a_secret_learned_mid_run_is_masked_by_every_clone() {
        let redactor = redactor(&[("KEY", "k3y-value")]);
        // The fetcher, the checkpointer and the plan each hold a clone.
        let (fetcher, plan) = (redactor.clone(), redactor.clone());
        let token = "tok_9f8e7d6c5b4a";
        assert!(!fetcher.contains_secret(token));
        plan.learn(Secret::new("the access token", token));
        // A log line, an error's URL, the manifest's free text: masked from now on.
        assert_eq!(fetcher.redact(&format!("renewed: {token}")), "renewed: ***");
        let url = Url::parse(&format!("https://api.example.com/items?t={token}&page=2")).unwrap();
        assert_eq!(fetcher.url(&url), "https://api.example.com/items?t=***&page=2");
        let error = format!("GET {url} returned 401 (body: \"bad token {token}\")");
        assert!(!redactor.redact(&error).contains("tok_9f8e"), "{error}");
        let mut manifest = serde_json::json!({
            "parts": [{"file": "part-20261130T000000Z-000001.ndjson", "partitions": [{"partition": format!("t={token}")}]}],
            "partitions": [{"partition": format!("t={token}"), "stop": {"reason": "no_next"}}],
        });
        redactor.redact_json(&mut manifest);
        assert_eq!(manifest["partitions"][0]["partition"], "t=***");
        assert_eq!(manifest["parts"][0]["partitions"][0]["partition"], "t=***");
        assert_eq!(manifest["parts"][0]["file"], "part-20261130T000000Z-000001.ndjson");
        // Sealed out of saved files like a variable's value, the ones before it still known.
        assert_eq!(redactor.seal(&format!("{token} k3y-value")), "${secret:the access token:raw} ${secret:KEY:raw}");
        // Learning it again changes nothing.
        redactor.learn(Secret::new("again", token));
        assert_eq!(redactor.seal(token), "${secret:the access token:raw}");
    }

    #[test]
    fn json_values_are_sealed_keys_and_all() {
        let r = redactor(&[("KEY", "s3cret-value")]);
        let original =
            serde_json::json!({"next": {"url": "https://h/?k=s3cret-value", "s3cret-value": [1, "xs3cret-value"]}});
        let mut value = original.clone();
        r.seal_json(&mut value);
        assert!(!value.to_string().contains("s3cret"), "{value}");
        r.unseal_json(&mut value).unwrap();
        assert_eq!(value, original);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Secrets as real ones are: letters, digits and the punctuation keys and tokens
        /// carry (no `*`, which a mask next to the text could spell again).
        fn secret() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    proptest::char::range('a', 'z'),
                    proptest::char::range('A', 'Z'),
                    proptest::char::range('0', '9'),
                    proptest::sample::select(vec!['+', '/', '=', ' ', '-', '_', '.', '%', '&', '?', ':', 'é', '€']),
                ],
                4..24,
            )
            .prop_map(|chars| chars.into_iter().collect())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn no_secret_survives_redaction_raw_or_percent_encoded(
                value in secret(),
                before in ".{0,40}",
                after in ".{0,40}",
                form in 0..4usize,
            ) {
                let redactor = Redactor::new([Secret::new("KEY", value.clone())]);
                let encoded = utf8_percent_encode(&value, NON_ALPHANUMERIC).to_string();
                let written = match form {
                    0 => value.clone(),
                    1 => encoded.clone(),
                    2 => lowercase_escapes(&encoded),
                    _ => url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
                };
                let text = format!("{before}{written}{after}");
                let redacted = redactor.redact(&text);
                prop_assert!(!redacted.contains(&value), "{value:?} in {redacted:?}");
                prop_assert!(!redacted.contains(&written), "{written:?} in {redacted:?}");
            }
        }
    }
}
