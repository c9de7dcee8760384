//! The job file as written, and its validation into a [`Plan`].
//!
//! The TOML is read into structs that mirror the file (`deny_unknown_fields`, every value
//! `Spanned`), then checked once: errors name `file:line:col` and unknown keys get a
//! did-you-mean hint. `[pagination]` and `[auth]` are read as flat structs holding every key of
//! every kind, not as serde tagged enums, which buffer their content and lose positions; a key
//! that belongs to another kind is reported at its own position. `${VAR}` and
//! `${VAR:-default}` are substituted from the environment and `.env` files; values that came
//! from the environment are secrets from then on.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::error::JobError;
use crate::jsonpath::JsonPath;
use crate::paginate::{cursor, link_header, next_url, offset, page, PaginationPlan, ParamsIn, Style};
use crate::plan::{
    Compression, Format, IncrementalPlan, Limits, Method, Mode, OutputPlan, ParquetPlan, Partition, Plan, RecordsPlan,
    RequestPlan, RetryPlan,
};
use crate::redact::{Redactor, Secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    name: Spanned<String>,
    request: Spanned<RequestFile>,
    records: Spanned<RecordsFile>,
    pagination: Spanned<PaginationFile>,
    auth: Option<Spanned<AuthFile>>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    retry: RetryFile,
    #[serde(default)]
    partitions: IndexMap<String, Spanned<toml::Value>>,
    incremental: Option<Spanned<IncrementalFile>>,
    #[serde(default)]
    output: OutputFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementalFile {
    field: Spanned<String>,
    param: Spanned<String>,
    start: Option<Spanned<String>>,
    lookback: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    url: Spanned<String>,
    method: Option<Spanned<String>>,
    params: Option<Spanned<toml::Table>>,
    headers: Option<Spanned<toml::Table>>,
    body: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    max_body: Option<Spanned<toml::Value>>,
    ca_cert: Option<Spanned<String>>,
    insecure_skip_verify: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsFile {
    path: Spanned<String>,
    errors: Option<Spanned<String>>,
}

/// Every key of every pagination kind; which apply is checked against `kind`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaginationFile {
    kind: Spanned<String>,
    page_size: Option<Spanned<u64>>,
    max_pages: Option<Spanned<u64>>,
    max_records: Option<Spanned<u64>>,
    params_in: Option<Spanned<String>>,
    offset_param: Option<Spanned<String>>,
    limit_param: Option<Spanned<String>>,
    start: Option<Spanned<u64>>,
    total: Option<Spanned<String>>,
    page_param: Option<Spanned<String>>,
    size_param: Option<Spanned<String>>,
    total_pages: Option<Spanned<String>>,
    cursor_param: Option<Spanned<String>>,
    cursor_in: Option<Spanned<String>>,
    next: Option<Spanned<String>>,
    next_header: Option<Spanned<String>>,
    has_more: Option<Spanned<String>>,
}

impl PaginationFile {
    /// The keys present, with their positions, for the per-kind check.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut keys = Vec::new();
        macro_rules! key {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field { keys.push((stringify!($field), v.span())); }
            )*};
        }
        key!(params_in, offset_param, limit_param, start, total, page_param, size_param, total_pages);
        key!(cursor_param, cursor_in, next, next_header, has_more);
        keys
    }
}

const KIND_KEYS: &[(&str, &[&str])] = &[
    ("offset", &["offset_param", "limit_param", "start", "total", "params_in"]),
    ("page", &["page_param", "size_param", "start", "total_pages", "total", "params_in"]),
    ("cursor", &["cursor_param", "cursor_in", "next", "next_header", "has_more", "limit_param", "params_in"]),
    ("next_url", &["next", "limit_param"]),
    ("link_header", &["limit_param"]),
    ("none", &[]),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    concurrency: Option<Spanned<u64>>,
    requests_per_second: Option<Spanned<f64>>,
    burst: Option<Spanned<u64>>,
    respect_server_limits: Option<bool>,
    max_wait: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryFile {
    max_attempts: Option<Spanned<u64>>,
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    on_status: Option<Spanned<Vec<u16>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OutputFile {
    format: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    compression: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    rows_per_file: Option<Spanned<u64>>,
    checkpoint_interval: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
    row_group_size: Option<Spanned<u64>>,
    timestamps: Option<Spanned<String>>,
    on_mismatch: Option<Spanned<String>>,
    infer_sample: Option<Spanned<u64>>,
}

/// Command-line flags that override the job file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub output_dir: Option<PathBuf>,
    /// `--format`: the job's Parquet keys apply when it is `Parquet`.
    pub format: Option<Format>,
    pub max_pages: Option<u64>,
    pub concurrency: Option<usize>,
    pub requests_per_second: Option<f64>,
}

/// Where `${VAR}` values come from: the process environment first, then `.env` next to the
/// job file, then `.env` in the working directory.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn for_job(job_file: &Path) -> Self {
        let mut vars = HashMap::new();
        let mut dotenv_files = vec![PathBuf::from(".env")];
        if let Some(dir) = job_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            dotenv_files.push(dir.join(".env"));
        }
        // Later files win, so read the working directory's first.
        for file in dotenv_files {
            if let Ok(iter) = dotenvy::from_path_iter(&file) {
                for (k, v) in iter.flatten() {
                    vars.insert(k, v);
                }
            }
        }
        vars.extend(std::env::vars());
        Env { vars }
    }

    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Env { vars: pairs.into_iter().collect() }
    }

    /// Set a variable for this job only (the demo points jobs at its mock API this way).
    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_string(), value.to_string());
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Read, parse and validate a job file.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, JobError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobError::new(path, None, format!("cannot read the job file: {e}")))?;
    parse(path, &text, &Env::for_job(path), overrides)
}

/// Parse and validate job text; `path` names the file in messages.
pub fn parse(path: &Path, text: &str, env: &Env, overrides: &Overrides) -> Result<Plan, JobError> {
    let cx = Cx { file: path, text, env, secrets: Default::default() };
    let file: JobFile = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    cx.validate(file, overrides)
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    env: &'a Env,
    secrets: std::cell::RefCell<Vec<Secret>>,
}

type R<T> = Result<T, JobError>;

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> JobError {
        JobError::new(self.file, Some(line_col(self.text, span.start)), message)
    }

    fn toml_error(&self, e: &toml::de::Error) -> JobError {
        let message = e.message().trim().to_string();
        let span = e.span();
        let position = span.as_ref().map(|s| line_col(self.text, s.start));
        let message = if let Some((key, hint)) = unknown_key(&message) {
            let section = span.and_then(|s| section_at(self.text, s.start));
            let place = section.map(|s| format!(" in [{s}]")).unwrap_or_default();
            format!("unknown key `{key}`{place}{hint}")
        } else if let Some(key) = message.strip_prefix("missing field ") {
            let section = span.and_then(|s| header_at(self.text, s.start));
            let place = section.map(|s| format!(" in [{s}]")).unwrap_or_default();
            format!("missing required key {key}{place}")
        } else {
            message
        };
        JobError::new(self.file, position, message)
    }

    /// Substitute `${VAR}` and `${VAR:-default}`; environment values become secrets unless
    /// `origin_ok` and the variable is the whole origin at the start of a URL.
    fn interpolate(&self, value: &str, span: &Range<usize>, origin_ok: bool) -> R<String> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(start) = rest.find('$') {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            if let Some(stripped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = stripped;
                continue;
            }
            let Some(inner_start) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let Some(close) = inner_start.find('}') else {
                return Err(self.err(span.clone(), format!("unclosed ${{ in {value:?}; write $${{ for a literal ${{")));
            };
            let inner = &inner_start[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(span.clone(), format!("${{{inner}}} is not a valid variable reference")));
            }
            let at_start = out.is_empty() && start == 0 && rest.len() == value.len();
            match (self.env.get(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => {
                    let is_origin = origin_ok && at_start && is_bare_origin(v);
                    if !is_origin {
                        self.secrets.borrow_mut().push(Secret::new(name, v));
                    }
                    out.push_str(v);
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(self.err(
                        span.clone(),
                        format!("environment variable {name} is not set; set it, put it in a .env file, or write ${{{name}:-default}}"),
                    ))
                }
            }
            rest = &inner_start[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn string(&self, value: &Spanned<String>) -> R<String> {
        self.interpolate(value.get_ref(), &value.span(), false)
    }

    fn duration(&self, value: &Option<Spanned<String>>, default: Duration) -> R<Duration> {
        let Some(value) = value else { return Ok(default) };
        let text = self.string(value)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            self.err(value.span(), format!("{text:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"15m\""))
        })
    }

    fn path(&self, value: &Spanned<String>) -> R<JsonPath> {
        let text = self.string(value)?;
        JsonPath::parse(text.trim()).map_err(|e| self.err(value.span(), e))
    }

    fn choice<T: Copy>(&self, value: &Option<Spanned<String>>, key: &str, options: &[(&str, T)], default: T) -> R<T> {
        let Some(value) = value else { return Ok(default) };
        let text = self.string(value)?;
        options.iter().find(|(name, _)| name.eq_ignore_ascii_case(text.trim())).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
            self.err(value.span(), format!("{key} = {text:?} is not one of {}", names.join(", ")))
        })
    }

    fn scalar(&self, value: &toml::Value, span: &Range<usize>, what: &str) -> R<String> {
        match value {
            toml::Value::String(s) => self.interpolate(s, span, false),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            _ => Err(self.err(span.clone(), format!("{what} must be a string, number or boolean"))),
        }
    }

    fn json(&self, value: &toml::Value, span: &Range<usize>) -> R<serde_json::Value> {
        use serde_json::Value as J;
        Ok(match value {
            toml::Value::String(s) => J::String(self.interpolate(s, span, false)?),
            toml::Value::Integer(i) => J::from(*i),
            toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            toml::Value::Boolean(b) => J::Bool(*b),
            toml::Value::Datetime(d) => J::String(d.to_string()),
            toml::Value::Array(items) => J::Array(items.iter().map(|v| self.json(v, span)).collect::<R<_>>()?),
            toml::Value::Table(t) => J::Object(
                t.iter().map(|(k, v)| Ok((k.clone(), self.json(v, span)?))).collect::<R<serde_json::Map<_, _>>>()?,
            ),
        })
    }

    fn validate(&self, file: JobFile, overrides: &Overrides) -> R<Plan> {
        let name = file.name.get_ref();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(self
                .err(file.name.span(), format!("name {name:?} must match [a-z0-9_-]+ (it names the output folder)")));
        }
        let incremental = file.incremental.as_ref().map(|i| self.incremental(i.get_ref())).transpose()?;
        let partitions = self.partitions(&file.partitions)?;
        let mut keys: Vec<String> =
            partitions.first().map(|p| p.values.iter().map(|(k, _)| k.clone()).collect()).unwrap_or_default();
        // The incremental parameter may be placed as a placeholder too.
        keys.extend(incremental.as_ref().map(|i: &IncrementalPlan| i.param.clone()));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let request = self.request(file.request.get_ref(), &keys)?;
        let records = file.records.get_ref();
        let records = RecordsPlan {
            path: self.path(&records.path)?,
            errors: match &records.errors {
                Some(e) if e.get_ref().trim().is_empty() => None,
                Some(e) => Some(self.path(e)?),
                None => Some(JsonPath::parse("$.errors").expect("a valid path")),
            },
        };
        let mut pagination = self.pagination(file.pagination.get_ref())?;
        if request.method == Method::Get && sends_in_body(&pagination.style) {
            return Err(self.err(
                file.pagination.span(),
                "params_in = \"body\" (or cursor_in = \"body\") needs request.method = \"POST\"",
            ));
        }
        let allow_origins = self.auth(file.auth.as_ref())?;
        let limits = self.limits(&file.limits)?;
        let retry = self.retry(&file.retry)?;
        let mut output = self.output(&file.output, overrides.format)?;
        if incremental.is_some() && file.output.mode.is_none() {
            // Each sync adds what changed: earlier runs' parts are kept.
            output.mode = Mode::Append;
        }

        let redactor = Redactor::new(self.secrets.borrow().iter().cloned());
        let mut plan = Plan {
            name: name.clone(),
            job_file: self.file.to_path_buf(),
            request,
            records,
            pagination: PaginationPlan { style: Style::None, max_pages: None, max_records: None },
            limits,
            retry,
            partitions,
            output,
            incremental,
            redactor,
            allowed_origins: Vec::new(),
        };
        std::mem::swap(&mut plan.pagination, &mut pagination);
        let url_span = file.request.get_ref().url.span();
        let mut origins = allow_origins;
        for partition in &plan.partitions {
            let url = plan.url_for(partition).map_err(|e| self.err(url_span.clone(), e))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(
                    self.err(url_span.clone(), format!("request.url must be http or https, not {}", url.scheme()))
                );
            }
            if !origins.contains(&url.origin()) {
                origins.push(url.origin());
            }
            if let Some(password) = url.password() {
                // The client sends these as HTTP Basic: `user:password` in base64.
                let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
                let credentials = format!("{}:{}", decode(url.username()), decode(password));
                self.secrets.borrow_mut().push(Secret::new("request.url userinfo", credentials));
            }
        }
        plan.allowed_origins = origins;
        plan.redactor = Redactor::new(self.secrets.borrow().iter().cloned());
        apply(&mut plan, overrides).map_err(|m| JobError::new(self.file, None, m))?;
        Ok(plan)
    }

    fn incremental(&self, i: &IncrementalFile) -> R<IncrementalPlan> {
        let field = JsonPath::parse(i.field.get_ref())
            .map_err(|e| self.err(i.field.span(), format!("incremental.field is not a valid JSONPath: {e}")))?;
        let param = i.param.get_ref().trim().to_string();
        if param.is_empty() {
            return Err(self.err(i.param.span(), "incremental.param names the parameter the mark is sent as"));
        }
        let start = match &i.start {
            Some(s) => Some(self.interpolate(s.get_ref(), &s.span(), false)?),
            None => None,
        };
        let lookback = match &i.lookback {
            Some(_) => Some(self.duration(&i.lookback, Duration::ZERO)?),
            None => None,
        };
        Ok(IncrementalPlan { field, param, start, lookback })
    }

    fn request(&self, r: &RequestFile, keys: &[&str]) -> R<RequestPlan> {
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
    fn check_placeholders(&self, text: &str, keys: &[&str], span: Range<usize>, what: &str) -> R<()> {
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

    fn pagination(&self, p: &PaginationFile) -> R<PaginationPlan> {
        let kind = p.kind.get_ref().as_str();
        let Some((_, allowed)) = KIND_KEYS.iter().find(|(k, _)| *k == kind) else {
            let kinds: Vec<&str> = KIND_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(self.err(
                p.kind.span(),
                format!("pagination kind {kind:?} is not one of {}{}", kinds.join(", "), did_you_mean(kind, &kinds)),
            ));
        };
        for (key, span) in p.present() {
            if !allowed.contains(&key) {
                let owners: Vec<&str> =
                    KIND_KEYS.iter().filter(|(_, keys)| keys.contains(&key)).map(|(k, _)| *k).collect();
                return Err(self.err(
                    span,
                    format!(
                        "`{key}` does not apply to pagination kind {kind:?} (it is for kind {})",
                        owners.join(" or ")
                    ),
                ));
            }
        }
        let text = |v: &Option<Spanned<String>>, default: &str| -> R<String> {
            Ok(match v {
                Some(v) => self.string(v)?,
                None => default.to_string(),
            })
        };
        let opt_path = |v: &Option<Spanned<String>>| -> R<Option<JsonPath>> {
            match v {
                Some(v) if !v.get_ref().trim().is_empty() => Ok(Some(self.path(v)?)),
                _ => Ok(None),
            }
        };
        let params_in = self.choice(
            &p.params_in,
            "params_in",
            &[("query", ParamsIn::Query), ("body", ParamsIn::Body)],
            ParamsIn::Query,
        )?;
        let page_size = match &p.page_size {
            Some(s) if *s.get_ref() == 0 => return Err(self.err(s.span(), "page_size must be at least 1")),
            Some(s) => Some(*s.get_ref()),
            None => None,
        };
        let explicit_limit = p.limit_param.is_some() || page_size.is_some();
        let limit_param = if explicit_limit { Some(text(&p.limit_param, "limit")?) } else { None };
        let style = match kind {
            "offset" => Style::Offset(offset::Config {
                offset_param: text(&p.offset_param, "offset")?,
                limit_param: text(&p.limit_param, "limit")?,
                start: p.start.as_ref().map(|s| *s.get_ref()).unwrap_or(0),
                page_size: page_size.unwrap_or(100),
                total: opt_path(&p.total)?,
                params_in,
            }),
            "page" => Style::Page(page::Config {
                page_param: text(&p.page_param, "page")?,
                size_param: match &p.size_param {
                    Some(s) if s.get_ref().is_empty() => None,
                    other => Some(text(other, "per_page")?),
                },
                start: p.start.as_ref().map(|s| *s.get_ref()).unwrap_or(1),
                page_size: Some(page_size.unwrap_or(100)),
                total_pages: opt_path(&p.total_pages)?,
                total: opt_path(&p.total)?,
                params_in,
            }),
            "cursor" => {
                let next = match (&p.next, &p.next_header) {
                    (Some(n), Some(_)) => return Err(self.err(n.span(), "give either next or next_header, not both")),
                    (Some(n), None) => cursor::NextCursor::Body(self.path(n)?),
                    (None, Some(h)) => cursor::NextCursor::Header(self.string(h)?),
                    (None, None) => cursor::NextCursor::Body(JsonPath::parse("$.next_cursor").expect("a valid path")),
                };
                let cursor_in = self.choice(
                    &p.cursor_in,
                    "cursor_in",
                    &[("query", ParamsIn::Query), ("body", ParamsIn::Body), ("header", ParamsIn::Header)],
                    params_in,
                )?;
                cursor::Config {
                    cursor_param: text(&p.cursor_param, "cursor")?,
                    cursor_in,
                    next,
                    has_more: opt_path(&p.has_more)?,
                    limit_param,
                    page_size,
                    params_in,
                }
                .into()
            }
            "next_url" => Style::NextUrl(next_url::Config {
                next: match &p.next {
                    Some(n) => self.path(n)?,
                    None => JsonPath::parse("$.next").expect("a valid path"),
                },
                limit_param,
                page_size,
            }),
            "link_header" => Style::LinkHeader(link_header::Config { limit_param, page_size }),
            _ => Style::None,
        };
        Ok(PaginationPlan {
            style,
            max_pages: p.max_pages.as_ref().map(|v| *v.get_ref()),
            max_records: p.max_records.as_ref().map(|v| *v.get_ref()),
        })
    }

    fn auth(&self, auth: Option<&Spanned<AuthFile>>) -> R<Vec<url::Origin>> {
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

    fn partitions(&self, table: &IndexMap<String, Spanned<toml::Value>>) -> R<Vec<Partition>> {
        let mut combos = vec![Partition::default()];
        for (key, values) in table {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(values.span(), format!("partition key {key:?} must be letters, digits and _")));
            }
            // Each choice is the (placeholder, value) pairs one partition gets from this key.
            let choices: Vec<Vec<(String, String)>> = match values.get_ref() {
                toml::Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|v| Ok(vec![(key.clone(), self.scalar(v, &values.span(), &format!("partition {key}"))?)]))
                    .collect::<R<_>>()?,
                toml::Value::Array(_) => return Err(self.err(values.span(), format!("partition {key} has no values"))),
                toml::Value::Table(range) => crate::plan::date_windows(range)
                    .map_err(|e| self.err(values.span(), format!("partition {key}: {e}")))?
                    .into_iter()
                    .map(|(start, end)| vec![(key.clone(), start), (format!("{key}_end"), end)])
                    .collect(),
                _ => {
                    return Err(
                        self.err(values.span(), format!("partition {key} must be a list of values or a date range"))
                    )
                }
            };
            combos = combos
                .into_iter()
                .flat_map(|p| {
                    choices.iter().map(move |pairs| {
                        let mut p = p.clone();
                        p.values.extend(pairs.iter().cloned());
                        p
                    })
                })
                .collect();
        }
        Ok(combos)
    }

    fn limits(&self, l: &LimitsFile) -> R<Limits> {
        let concurrency = match &l.concurrency {
            Some(c) if *c.get_ref() == 0 => return Err(self.err(c.span(), "concurrency must be at least 1")),
            Some(c) => *c.get_ref() as usize,
            None => 8,
        };
        let requests_per_second = match &l.requests_per_second {
            Some(r) if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) => {
                return Err(self.err(r.span(), "requests_per_second must be a positive number"))
            }
            Some(r) => Some(*r.get_ref()),
            None => None,
        };
        let burst = match &l.burst {
            Some(b) if *b.get_ref() == 0 => return Err(self.err(b.span(), "burst must be at least 1")),
            Some(b) => u32::try_from(*b.get_ref()).unwrap_or(u32::MAX),
            None => concurrency as u32,
        };
        Ok(Limits {
            concurrency,
            requests_per_second,
            burst,
            respect_server_limits: l.respect_server_limits.unwrap_or(true),
            max_wait: self.duration(&l.max_wait, Duration::from_secs(15 * 60))?,
        })
    }

    fn retry(&self, r: &RetryFile) -> R<RetryPlan> {
        let max_attempts = match &r.max_attempts {
            Some(m) if *m.get_ref() == 0 => return Err(self.err(m.span(), "max_attempts must be at least 1")),
            Some(m) => u32::try_from(*m.get_ref()).unwrap_or(u32::MAX),
            None => 6,
        };
        let initial_backoff = self.duration(&r.initial_backoff, Duration::from_millis(500))?;
        let max_backoff = self.duration(&r.max_backoff, Duration::from_secs(60))?;
        let on_status = match &r.on_status {
            Some(codes) => {
                if let Some(bad) = codes.get_ref().iter().find(|c| !(100..=599).contains(*c)) {
                    return Err(self.err(codes.span(), format!("{bad} is not an HTTP status")));
                }
                codes.get_ref().clone()
            }
            None => vec![408, 425, 429, 500, 502, 503, 504],
        };
        Ok(RetryPlan { max_attempts, initial_backoff, max_backoff: max_backoff.max(initial_backoff), on_status })
    }

    /// `[output]`; `format_flag` is `--format`, which decides which keys apply.
    fn output(&self, o: &OutputFile, format_flag: Option<Format>) -> R<OutputPlan> {
        let format = self.choice(
            &o.format,
            "format",
            &[("ndjson", Format::Ndjson), ("parquet", Format::Parquet)],
            Format::Ndjson,
        )?;
        let checkpoint_interval = self.duration(&o.checkpoint_interval, Duration::from_secs(60))?;
        let compression = match format {
            Format::Ndjson => self.choice(
                &o.compression,
                "compression",
                &[("none", Compression::None), ("gzip", Compression::Gzip), ("zstd", Compression::Zstd)],
                Compression::None,
            )?,
            Format::Parquet => self.choice(
                &o.compression,
                "compression",
                &[("zstd", Compression::Zstd), ("snappy", Compression::Snappy), ("none", Compression::None)],
                Compression::Zstd,
            )?,
        };
        let mode =
            self.choice(&o.mode, "mode", &[("replace", Mode::Replace), ("append", Mode::Append)], Mode::Replace)?;
        let rows_per_file = self.at_least_one(&o.rows_per_file, "rows_per_file")?.unwrap_or(1_000_000);
        let dir = match &o.dir {
            Some(d) => PathBuf::from(self.string(d)?),
            None => PathBuf::from("output"),
        };
        let parquet = self.parquet(o)?;
        if format == Format::Ndjson && format_flag != Some(Format::Parquet) {
            let parquet_only = [
                o.schema.as_ref().map(|v| ("schema", v.span())),
                o.row_group_size.as_ref().map(|v| ("row_group_size", v.span())),
                o.timestamps.as_ref().map(|v| ("timestamps", v.span())),
                o.on_mismatch.as_ref().map(|v| ("on_mismatch", v.span())),
                o.infer_sample.as_ref().map(|v| ("infer_sample", v.span())),
            ];
            if let Some((key, span)) = parquet_only.into_iter().flatten().next() {
                return Err(self.err(span, format!("{key} applies to format = \"parquet\" only")));
            }
        }
        Ok(OutputPlan { format, dir, compression, mode, rows_per_file, checkpoint_interval, parquet })
    }

    fn at_least_one(&self, value: &Option<Spanned<u64>>, key: &str) -> R<Option<u64>> {
        match value {
            Some(v) if *v.get_ref() == 0 => Err(self.err(v.span(), format!("{key} must be at least 1"))),
            Some(v) => Ok(Some(*v.get_ref())),
            None => Ok(None),
        }
    }

    fn parquet(&self, o: &OutputFile) -> R<ParquetPlan> {
        let defaults = ParquetPlan::default();
        let (schema, schema_file) = match &o.schema {
            Some(p) => {
                let path = PathBuf::from(self.string(p)?);
                let path =
                    if path.is_relative() { self.file.parent().map(|d| d.join(&path)).unwrap_or(path) } else { path };
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| self.err(p.span(), format!("schema file {} cannot be read: {e}", path.display())))?;
                let ty = crate::schema::parse_schema_file(&text)
                    .map_err(|e| self.err(p.span(), format!("schema file {}: {e}", path.display())))?;
                (Some(ty), Some(path))
            }
            None => (None, None),
        };
        let infer_timestamps = self.choice(&o.timestamps, "timestamps", &[("keep", false), ("infer", true)], false)?;
        let reject_to_json = self.choice(&o.on_mismatch, "on_mismatch", &[("error", false), ("json", true)], false)?;
        if let (Some(v), None) = (&o.on_mismatch, &schema) {
            return Err(self.err(v.span(), "on_mismatch needs a declared schema (schema = \"file.json\")"));
        }
        Ok(ParquetPlan {
            schema,
            schema_file,
            row_group_size: self.at_least_one(&o.row_group_size, "row_group_size")?.unwrap_or(defaults.row_group_size),
            infer_timestamps,
            reject_to_json,
            infer_sample: self.at_least_one(&o.infer_sample, "infer_sample")?.unwrap_or(defaults.infer_sample),
        })
    }
}

impl From<cursor::Config> for Style {
    fn from(c: cursor::Config) -> Self {
        Style::Cursor(c)
    }
}

/// True when the strategy puts parameters in a JSON body.
fn sends_in_body(style: &Style) -> bool {
    match style {
        Style::Offset(c) => c.params_in == ParamsIn::Body,
        Style::Page(c) => c.params_in == ParamsIn::Body,
        Style::Cursor(c) => c.params_in == ParamsIn::Body || c.cursor_in == ParamsIn::Body,
        _ => false,
    }
}

fn entries(table: &Option<Spanned<toml::Table>>) -> impl Iterator<Item = (&String, &toml::Value, Range<usize>)> {
    table.iter().flat_map(|t| t.get_ref().iter().map(move |(k, v)| (k, v, t.span())))
}

/// Apply command-line overrides to a validated plan.
fn apply(plan: &mut Plan, o: &Overrides) -> Result<(), String> {
    if let Some(dir) = &o.output_dir {
        plan.output.dir = dir.clone();
    }
    match o.format {
        Some(format) if format != plan.output.format => {
            // The job's compression was chosen for its own format: the other format's default.
            plan.output.format = format;
            plan.output.compression = match format {
                Format::Ndjson => Compression::None,
                Format::Parquet => Compression::Zstd,
            };
        }
        _ => {}
    }
    if let Some(pages) = o.max_pages {
        plan.pagination.max_pages = Some(pages);
    }
    if let Some(c) = o.concurrency {
        if c == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        plan.limits.concurrency = c;
    }
    if let Some(rps) = o.requests_per_second {
        if !(rps > 0.0 && rps.is_finite()) {
            return Err("--rps must be a positive number".into());
        }
        plan.limits.requests_per_second = Some(rps);
    }
    Ok(())
}

/// True for a value like `http://127.0.0.1:8080` or `https://api.example.com/`: an origin
/// (no credentials, query or path), which names a host rather than holding a secret.
fn is_bare_origin(value: &str) -> bool {
    match url::Url::parse(value) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none()
                && matches!(u.path(), "" | "/")
        }
        Err(_) => false,
    }
}

/// "64MiB", "10 MB", "512k", "1048576".
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a size; write e.g. \"64MiB\""))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size: unknown unit {unit:?} (use B, KB, KiB, MB, MiB, GB, GiB)")),
    };
    Ok((number * multiplier as f64) as u64)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// The `[section]` header governing byte `offset`, if any.
fn section_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    if text[line_start..].trim_start().starts_with('[') {
        // The error is about a table header itself: a top-level key.
        return None;
    }
    text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.contains(']'))
        .map(|l| l.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string())
}

/// The `[table]` header on the line of byte `offset`, if that line is one.
fn header_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?.trim();
    let name = line.strip_prefix('[')?.split(']').next()?.trim();
    Some(name.to_string())
}

/// toml says "unknown field `x`, expected one of `a`, `b`": the key and a did-you-mean hint.
fn unknown_key(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let hint = did_you_mean(key, &candidates);
    let hint = if hint.is_empty() && !candidates.is_empty() {
        format!("; the keys here are {}", candidates.join(", "))
    } else {
        hint
    };
    Some((key.to_string(), hint))
}

fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("10 kb"), Ok(10_000));
        assert!(parse_size("ten").is_err());
    }

    #[test]
    fn format_flag_decides_which_output_keys_apply() {
        let text = "name = \"t\"\n[request]\nurl = \"http://h/\"\n[records]\npath = \"$[*]\"\n\
                    [pagination]\nkind = \"none\"\n[output]\nrow_group_size = 500\ncompression = \"gzip\"\n";
        let path = Path::new("t.toml");
        assert!(parse(path, text, &Env::default(), &Overrides::default()).is_err());
        let flag = Overrides { format: Some(Format::Parquet), ..Default::default() };
        let plan = parse(path, text, &Env::default(), &flag).unwrap();
        assert_eq!(plan.output.format, Format::Parquet);
        assert_eq!(plan.output.compression, Compression::Zstd, "the job's gzip was for NDJSON");
        assert_eq!(plan.output.parquet.row_group_size, 500);
    }

    #[test]
    fn origins_from_env_are_not_secrets() {
        assert!(is_bare_origin("http://127.0.0.1:8080"));
        assert!(!is_bare_origin("http://h/?key=1"));
        assert!(!is_bare_origin("s3cr3t"));
    }
}
