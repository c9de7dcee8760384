//! `kind = "session"`: log in once, then send what the login gave: the cookies it set (kept
//! for the run and sent only to the allowed origins, each origin with its port), or a token
//! taken from its response by JSONPath and sent as a header (`Authorization: Token <key>`, as
//! Django REST framework and many internal APIs do). `max_age` logs in again before that age;
//! a 401 or 403 logs in again once. The login body goes only to `login_url`, and the login's
//! response is never logged: servers put tokens in it.

use std::time::{Duration, Instant};

use crate::keys::Spanned;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::exchange::{read_answer, refusal, Retry, Retryable};
use super::fixed::{add, add_cookies, Place};
use super::renewal::Renewal;
use super::{AuthPlan, Credentials, JobCredentials, Outbound, Pending, Spec};
use crate::error::{FetchErrorKind, JobError};
use crate::jsonpath::{Document, JsonPath};
use crate::keys::KeyReader;
use crate::redact::{Redactor, Secret};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    login_url: Spanned<String>,
    #[schemars(with = "Option<serde_json::Value>")]
    login_body: Option<Spanned<toml::Value>>,
    /// `json` (default) or `form`.
    login_format: Option<Spanned<String>>,
    /// A JSONPath into the login's response; without it, the cookies the login sets.
    token: Option<Spanned<String>>,
    header: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
}

/// A login, resolved from the job file.
#[derive(Clone)]
pub struct Login {
    pub login_url: Url,
    pub body: Option<Value>,
    pub form: bool,
    /// Where the token is in the login's response, and how it is sent; `None`: cookies.
    pub token: Option<(JsonPath, String, String)>,
    pub max_age: Option<Duration>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("login_url", &self.login_url.as_str()).field("form", &self.form).finish()
    }
}

impl Login {
    pub fn describe(&self) -> String {
        let sends = match &self.token {
            Some((path, header, _)) => format!("the token at {path} of its response as the header {header}"),
            None => "the cookies it sets".into(),
        };
        let again = self.max_age.map(|a| format!(", again after {}", crate::human::duration(a))).unwrap_or_default();
        format!("session: logs in at {}{again} and sends {sends} to the allowed origins only", self.login_url)
    }
}

impl Spec for SessionSpec {
    fn build(self, keys: &dyn KeyReader) -> Result<AuthPlan, JobError> {
        let form = keys.choice(&self.login_format, "login_format", &["json", "form"])? == Some(1);
        let body = self.login_body.as_ref().map(|b| keys.json(b)).transpose()?;
        if let (true, Some(body), Some(given)) = (form, &body, &self.login_body) {
            if !body.as_object().is_some_and(|o| o.values().all(|v| !v.is_object() && !v.is_array())) {
                return Err(keys.error(given.span(), "a form login_body is a table of plain values".into()));
            }
        }
        let token = match &self.token {
            Some(path) => Some((
                keys.path(path)?,
                keys.text_or(&self.header, "Authorization")?,
                keys.text_or(&self.prefix, "Token ")?,
            )),
            None => None,
        };
        let max_age = match &self.max_age {
            Some(_) => Some(keys.duration(&self.max_age, Duration::ZERO)?),
            None => None,
        };
        let login_url = keys.url(&self.login_url, "login_url")?;
        Ok(AuthPlan::Session(Box::new(Login { login_url, body, form, token, max_age })))
    }
}

/// What a login gave.
#[derive(Debug)]
enum Session {
    Token(String),
    Cookies(String),
}

/// The run's credentials for `kind = "session"`.
#[derive(Debug)]
pub struct SessionCredentials {
    login: Login,
    client: reqwest::Client,
    retry: Retry,
    max_body: u64,
    secrets: Redactor,
    job: JobCredentials,
    sessions: Renewal<Session>,
}

impl SessionCredentials {
    pub fn new(login: Login, client: reqwest::Client, retry: Retry, max_body: u64, secrets: Redactor) -> Self {
        let job = JobCredentials::new(secrets.clone());
        SessionCredentials { login, client, retry, max_body, secrets, job, sessions: Renewal::default() }
    }

    async fn obtain(&self) -> Result<(Session, Option<Instant>), FetchErrorKind> {
        let what = format!("the login at {}", self.login.login_url);
        let session = self.retry.run(&what, || self.log_in()).await?;
        tracing::info!("session: logged in at {}", self.login.login_url);
        Ok((session, self.login.max_age.map(|age| Instant::now() + age)))
    }

    /// One login: a session, refused for good, or `Err` with what a retry may cure.
    async fn log_in(&self) -> Result<Result<Session, FetchErrorKind>, Retryable> {
        let login = &self.login;
        let mut request = self.client.post(login.login_url.clone()).header("Accept", "application/json");
        request = match (&login.body, login.form) {
            (Some(Value::Object(fields)), true) => {
                let text = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let pairs: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.clone(), text(v))).collect();
                let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
                request.header("Content-Type", "application/x-www-form-urlencoded").body(body)
            }
            (Some(body), _) => request.header("Content-Type", "application/json").body(body.to_string()),
            (None, _) => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| Retryable::Unanswered(self.secrets.redact(&e.to_string()).into_owned()))?;
        let cookies: Vec<String> = response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(|pair| pair.trim().to_string())
            .filter(|pair| pair.contains('='))
            .collect();
        let (status, bytes) = read_answer(response, self.max_body).await?;
        let refused = |why: String| Ok(Err(FetchErrorKind::Auth(format!("the login at {} {why}", login.login_url))));
        if !(200..300).contains(&status) {
            let said = refusal(&bytes).1.map(|e| format!(": {}", self.secrets.redact(&e)));
            return refused(format!("answered {status}{}", said.unwrap_or_default()));
        }
        match &login.token {
            Some((path, _, _)) => {
                let token = Document::parse(&bytes)
                    .ok()
                    .and_then(|doc| path.first(&doc).ok().flatten().and_then(|node| node.as_text()))
                    .filter(|t| !t.is_empty());
                match token {
                    Some(token) => {
                        self.secrets.learn(Secret::new("session token", token.clone()));
                        Ok(Ok(Session::Token(token)))
                    }
                    None => refused(format!("answered without a token at {path}")),
                }
            }
            None if cookies.is_empty() => {
                refused("set no cookie; if it answers with a token, give its JSONPath as token".into())
            }
            None => {
                for pair in &cookies {
                    let value = pair.split_once('=').map_or("", |(_, v)| v);
                    self.secrets.learn(Secret::new("session cookie", value));
                }
                Ok(Ok(Session::Cookies(cookies.join("; "))))
            }
        }
    }
}

impl Credentials for SessionCredentials {
    fn ready(&self) -> Pending<'_, ()> {
        Box::pin(self.sessions.ready(|| self.obtain()))
    }

    fn apply(&self, request: Outbound<'_>) -> Result<u64, FetchErrorKind> {
        if !request.trusted {
            return self.job.apply(request);
        }
        let held = self.sessions.current().ok_or_else(|| FetchErrorKind::Auth("not logged in yet".into()))?;
        match (&held.value, &self.login.token) {
            (Session::Token(token), Some((_, header, prefix))) => {
                add(request.url, request.headers, Place::Header, header, &format!("{prefix}{token}"))
            }
            (Session::Cookies(cookies), _) => add_cookies(request.headers, cookies),
            (Session::Token(_), None) => {}
        }
        Ok(held.generation)
    }

    fn renew(&self, used: u64, status: u16) -> Pending<'_, bool> {
        Box::pin(async move {
            if !matches!(status, 401 | 403) {
                return Ok(false);
            }
            self.sessions
                .renew_after(used, || async {
                    tracing::info!("session: the API answered {status}; logging in again");
                    self.obtain().await
                })
                .await?;
            Ok(true)
        })
    }

    fn report(&self) -> Option<String> {
        let held = self.sessions.current()?;
        let what = match &held.value {
            Session::Token(_) => "a token".to_string(),
            Session::Cookies(cookies) => format!("{} cookie(s)", cookies.split("; ").count()),
        };
        Some(format!("session: logged in at {}, {what} kept for the run", self.login.login_url))
    }
}
