//! The job file as written, and its validation into a [`Plan`].
//!
//! The TOML is read into structs that mirror the file (`deny_unknown_fields`, every value
//! `Spanned`), then checked once: errors name `file:line:col` and unknown keys get a
//! did-you-mean hint. `[pagination]` is read in two steps, `kind` first and then the keys of
//! that kind from the same positioned table (serde's tagged enums would buffer the content
//! and lose positions); `[auth]` is one flat struct of every kind's keys. A key that belongs
//! to another kind is reported at its own position. `${VAR}` and
//! `${VAR:-default}` are substituted from the environment and `.env` files; values that came
//! from the environment are secrets from then on.
//!
//! This file is the reader (the whole file's structs, `${VAR}`, positions, did-you-mean) and
//! the validation's outline; each section is checked in its own file.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keys::Spanned;
use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::JobError;
use crate::jsonpath::JsonPath;
use crate::paginate::{cursor, link_header, next_url, offset, page_number, PaginationPlan, Style};
use crate::plan::{
    CachePlan, Compression, Format, IncrementalPlan, Limits, MergePlan, Method, Mode, OutputPlan, ParquetPlan, Plan,
    RecordsPlan, RequestPlan, RetryPlan,
};
use crate::redact::{Redactor, Secret};

mod auth;
mod env;
mod incremental;
mod limits;
mod notify;
mod output;
mod overrides;
mod pagination;
mod partitions;
mod records;
mod request;
mod retry;
mod sections;

pub use env::Env;

use sections::keys_of;

use incremental::IncrementalFile;
use limits::LimitsFile;
use notify::NotifyFile;
use output::OutputFile;
use records::RecordsFile;
use request::RequestFile;
use retry::RetryFile;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "harvest job file", description = "A harvest job: see docs/REFERENCE.md of harvest for every key.")]
pub(crate) struct JobFile {
    /// Names the output folder: letters a-z, digits, `_` and `-`.
    #[schemars(regex(pattern = r"^[a-z0-9_-]+$"))]
    name: Spanned<String>,
    request: Spanned<RequestFile>,
    records: Spanned<RecordsFile>,
    // Read by `pagination.rs` from its positioned table, once `kind` is known.
    #[schemars(schema_with = "pagination::schema")]
    pagination: Spanned<serde::de::IgnoredAny>,
    // Read by `auth.rs` from its positioned table, once `kind` is known (named here so that
    // `deny_unknown_fields` takes it).
    #[allow(dead_code)]
    #[serde(default)]
    #[schemars(schema_with = "auth::schema")]
    auth: Option<Spanned<serde::de::IgnoredAny>>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    retry: RetryFile,
    #[serde(default)]
    #[schemars(with = "IndexMap<String, crate::keys::shapes::Source>")]
    partitions: IndexMap<String, Spanned<toml::Value>>,
    incremental: Option<Spanned<IncrementalFile>>,
    #[serde(default)]
    output: OutputFile,
    notify: Option<Spanned<NotifyFile>>,
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
    /// `run --cache`: keep responses this long.
    pub cache: Option<Duration>,
    /// `--shard I/N` (or the scheduler's variables): this worker's share of the run.
    pub shard: Option<crate::shard::ShardPlan>,
}

/// Read, parse and validate a job file.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, JobError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobError::new(path, None, format!("cannot read the job file: {e}")))?;
    parse(path, &text, &Env::for_job(path), overrides)
}

/// Load a job to read its output folder only (`harvest status`): a `${VAR}` that is not set
/// reads as a stand-in, so the job's credentials and API address need not be at hand. A plan
/// loaded so must never be run.
pub fn load_offline(path: &Path, overrides: &Overrides) -> Result<Plan, JobError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobError::new(path, None, format!("cannot read the job file: {e}")))?;
    parse(path, &text, &Env::for_job(path).missing_ok(), overrides)
}

/// Parse and validate job text; `path` names the file in messages.
pub fn parse(path: &Path, text: &str, env: &Env, overrides: &Overrides) -> Result<Plan, JobError> {
    let cx = Cx { file: path, text, env, secrets: Default::default(), warnings: Default::default() };
    let root = toml::de::DeTable::parse(text).map_err(|e| cx.toml_error(&e))?;
    let pagination = root.get_ref().get("pagination").cloned();
    let auth = root.get_ref().get("auth").cloned();
    let file = JobFile::deserialize(toml::de::Deserializer::from(root)).map_err(|e| cx.toml_error(&e))?;
    let pagination = pagination.expect("a JobFile has [pagination]");
    cx.validate(file, &pagination, auth.as_ref(), overrides)
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    env: &'a Env,
    secrets: std::cell::RefCell<Vec<Secret>>,
    /// What `check` should say about the file (a credential written in it).
    warnings: std::cell::RefCell<Vec<String>>,
}

type R<T> = Result<T, JobError>;

impl Cx<'_> {
    /// A path the job file names, as written when absolute, else relative to the job file's
    /// folder (the current folder for a bare `job.toml`).
    fn beside_job(&self, given: impl Into<PathBuf>) -> PathBuf {
        crate::store::fs::beside(self.file, given.into())
    }

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
                (None, None) if self.env.missing_ok => {
                    if origin_ok && at_start {
                        out.push_str("http://unset.invalid");
                    } else {
                        let stand_in = format!("${{{name}}}");
                        self.secrets.borrow_mut().push(Secret::new(name, stand_in.as_str()));
                        out.push_str(&stand_in);
                    }
                }
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

    fn validate(
        &self,
        file: JobFile,
        pagination: &toml::Spanned<toml::de::DeValue>,
        auth: Option<&toml::Spanned<toml::de::DeValue>>,
        overrides: &Overrides,
    ) -> R<Plan> {
        let name = self.name(&file.name)?;
        let mut incremental = file.incremental.as_ref().map(|i| self.incremental(i.get_ref())).transpose()?;
        let output = self.output(&file.output, overrides.format, incremental.is_some())?;
        let output_at = partitions::OutputAt {
            dir: overrides.output_dir.as_deref().unwrap_or(&output.dir),
            store: &output.store,
            url: file.request.get_ref().url.get_ref(),
        };
        let partitions = self.partitions(&file.partitions, &output_at)?;
        let mut keys = partitions.placeholders();
        // The incremental parameter may be placed as a placeholder too.
        keys.extend(incremental.as_ref().map(|i: &IncrementalPlan| i.param.clone()));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let request = self.request(file.request.get_ref(), &keys)?;
        if let Some(incremental) = &mut incremental {
            incremental.placeholder = request.uses_placeholder(&incremental.param);
        }
        let records = self.records(file.records.get_ref())?;
        let pagination = self.pagination(pagination)?;
        if request.method == Method::Get && pagination.style.sends_in_body() {
            return Err(self.err(
                file.pagination.span(),
                "params_in = \"body\" (or cursor_in = \"body\") needs request.method = \"POST\"",
            ));
        }
        let (auth, allow_origins) = self.auth(auth)?;
        let limits = self.limits(&file.limits)?;
        let retry = self.retry(&file.retry)?;
        let notify = file.notify.as_ref().map(|n| self.notify(n.get_ref())).transpose()?;

        let mut request = request;
        self.cache(&mut request, &file, overrides, incremental.is_some())?;
        let redactor = Redactor::new(self.secrets.borrow().iter().cloned());
        let mut plan = Plan {
            name: name.clone(),
            job_file: self.file.to_path_buf(),
            request,
            records,
            pagination,
            limits,
            retry,
            partitions,
            output,
            incremental,
            redactor,
            allowed_origins: Vec::new(),
            auth,
            warnings: Vec::new(),
            notify,
            shard: None,
        };
        plan.allowed_origins = self.origins(&plan, allow_origins, file.request.get_ref().url.span())?;
        plan.warnings = self.warnings.take();
        plan.redactor = Redactor::new(self.secrets.borrow().iter().cloned());
        overrides::apply(&mut plan, overrides).map_err(|m| JobError::new(self.file, None, m))?;
        Ok(plan)
    }

    /// The job's name, which names its output folder.
    fn name<'n>(&self, name: &'n crate::keys::Spanned<String>) -> R<&'n String> {
        let named = name.get_ref();
        let fits = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if named.is_empty() || !named.chars().all(fits) {
            let message = format!("name {named:?} must match [a-z0-9_-]+ (it names the output folder)");
            return Err(self.err(name.span(), message));
        }
        Ok(named)
    }

    /// The response cache (`[request] cache` or `--cache`), keyed by the job's credentials:
    /// refused with `[incremental]`.
    fn cache(&self, request: &mut RequestPlan, file: &JobFile, overrides: &Overrides, incremental: bool) -> R<()> {
        if let Some(ttl) = overrides.cache {
            request.cache = Some(CachePlan { ttl, account: String::new() });
        }
        let Some(cache) = &mut request.cache else { return Ok(()) };
        if incremental {
            let span = file.request.get_ref().cache.as_ref().map(|c| c.span());
            let message = "a response cache (--cache or [request] cache) cannot go with [incremental]: \
                           a sync must see what changed since the last";
            return Err(match span {
                Some(span) => self.err(span, message),
                None => JobError::new(self.file, None, message),
            });
        }
        // Two accounts never share an entry: the key holds a digest of every credential value.
        let mut values: Vec<String> = self.secrets.borrow().iter().map(|s| s.value.clone()).collect();
        values.sort();
        cache.account = crate::cache::sha256_hex(values.join("\n").as_bytes());
        Ok(())
    }

    /// Every origin the job's requests may go to: the request URL's for each partition whose
    /// values fill it (never its host from outside the job file), and `allow_origins`. A
    /// password in the URL becomes a secret.
    fn origins(
        &self,
        plan: &Plan,
        mut origins: Vec<url::Origin>,
        url_span: std::ops::Range<usize>,
    ) -> R<Vec<url::Origin>> {
        for key in plan.partitions.listed_placeholders() {
            if partitions::in_authority(&plan.request.url, &key) {
                return Err(self.err(
                    url_span,
                    format!("{{{key}}} comes from outside the job file: it may fill the path or query, not the host"),
                ));
            }
        }
        // Only the partitions' values that go into the URL can change its origin.
        let template = &plan.request.url;
        for partition in plan.partitions.over(|key| template.contains(&format!("{{{key}}}"))) {
            let url = plan.url_for(&partition).map_err(|e| self.err(url_span.clone(), e.to_string()))?;
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
        Ok(origins)
    }
}

fn entries(table: &Option<Spanned<toml::Table>>) -> impl Iterator<Item = (&String, &toml::Value, Range<usize>)> {
    table.iter().flat_map(|t| t.get_ref().iter().map(move |(k, v)| (k, v, t.span())))
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

pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
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
    Some((key.to_string(), key_hint(key, &candidates)))
}

/// For an unknown key: the one it was probably meant to be, else the keys that are allowed.
fn key_hint(key: &str, candidates: &[&str]) -> String {
    let hint = did_you_mean(key, candidates);
    if hint.is_empty() && !candidates.is_empty() {
        format!("; the keys here are {}", candidates.join(", "))
    } else {
        hint
    }
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
