//! The runtime form of a job: everything resolved, compiled and checked once.
//!
//! [`crate::job`] turns a job file into a `Plan`; nothing after that re-checks input. Durations
//! are `Duration`s, paths are compiled, limits are non-zero, `${VAR}`s are substituted and the
//! values that came from them are known to the [`Redactor`].

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::jsonpath::JsonPath;
use crate::paginate::PaginationPlan;
use crate::redact::Redactor;

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// The job file, for messages ("`harvest run jobs/x.toml` resumes").
    pub job_file: PathBuf,
    pub request: RequestPlan,
    pub records: RecordsPlan,
    pub pagination: PaginationPlan,
    pub limits: Limits,
    pub retry: RetryPlan,
    pub partitions: Vec<Partition>,
    pub output: OutputPlan,
    pub incremental: Option<IncrementalPlan>,
    pub redactor: Redactor,
    /// Origins that may receive credentials: `request.url`'s and `[auth] allow_origins`.
    pub allowed_origins: Vec<url::Origin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestPlan {
    /// The URL with `{partition}` placeholders still in it.
    pub url: String,
    pub method: Method,
    /// Query parameters; values may hold placeholders. A list value repeats the parameter.
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body: u64,
    pub ca_cert: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone)]
pub struct RecordsPlan {
    pub path: JsonPath,
    pub errors: Option<JsonPath>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub concurrency: usize,
    pub requests_per_second: Option<f64>,
    pub burst: u32,
    pub respect_server_limits: bool,
    pub max_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct RetryPlan {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub on_status: Vec<u16>,
}

/// One combination of partition values; each is its own pagination stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    pub values: Vec<(String, String)>,
}

impl Partition {
    /// `repo=rust,day=2024-01-01`; empty for a job without partitions.
    pub fn label(&self) -> String {
        self.values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// ` of partition repo=rust` for messages; nothing for a job without partitions.
pub fn partition_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" of partition {label}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    /// Parquet only.
    Snappy,
}

impl Compression {
    /// What NDJSON part names end with.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None | Compression::Snappy => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Replace,
    Append,
}

#[derive(Debug, Clone)]
pub struct OutputPlan {
    pub format: Format,
    /// `<dir>`; files go to `<dir>/<name>/`.
    pub dir: PathBuf,
    pub compression: Compression,
    pub mode: Mode,
    pub rows_per_file: u64,
    /// A checkpoint at least this often (at a page boundary).
    pub checkpoint_interval: Duration,
    pub parquet: ParquetPlan,
}

/// `[incremental]`: each run asks only for what changed since the last complete one.
#[derive(Debug, Clone)]
pub struct IncrementalPlan {
    /// Where the high-water mark is in a record.
    pub field: crate::jsonpath::JsonPath,
    /// The parameter (or `{param}` placeholder) the mark is sent as.
    pub param: String,
    /// Sent when there is no mark yet.
    pub start: Option<String>,
    /// A margin taken off time marks, for late updates.
    pub lookback: Option<Duration>,
}

/// `[output]` keys that only Parquet reads.
#[derive(Debug, Clone)]
pub struct ParquetPlan {
    /// A declared schema (from `schema = "file.json"`); inferred when absent.
    pub schema: Option<crate::schema::Ty>,
    /// The file it came from, for messages.
    pub schema_file: Option<PathBuf>,
    pub row_group_size: u64,
    /// RFC 3339 strings become timestamps (`timestamps = "infer"`).
    pub infer_timestamps: bool,
    /// A record that does not fit the declared schema keeps the misfits in `_rejected`
    /// (`on_mismatch = "json"`) instead of stopping the run.
    pub reject_to_json: bool,
    /// Records read before the schema is inferred.
    pub infer_sample: u64,
}

impl Default for ParquetPlan {
    fn default() -> Self {
        ParquetPlan {
            schema: None,
            schema_file: None,
            row_group_size: 122_880,
            infer_timestamps: false,
            reject_to_json: false,
            infer_sample: 1000,
        }
    }
}

impl Plan {
    /// `<dir>/<name>`.
    pub fn output_root(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }

    /// The job's URL for one partition, placeholders filled in and percent-encoded.
    pub fn url_for(&self, partition: &Partition) -> Result<Url, String> {
        let filled = fill(&self.request.url, partition, Encoding::PathSegment);
        Url::parse(&filled)
            .map_err(|e| format!("request.url {} is not a valid URL: {e}", self.redactor.redact(&filled)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encode everything but unreserved characters: for URL templates.
    PathSegment,
    /// Insert as is: query values are encoded once when the URL is built, bodies are JSON.
    Raw,
}

/// The windows of a date-range partition `{ start, end, step }`: `[start, end)` cut into
/// `step`s, the last one clipped. Dates (`2024-01-01`) step in whole days and are written back
/// as dates; date-times (RFC 3339) step by any duration and are written back in UTC with `Z`.
pub fn date_windows(range: &toml::Table) -> Result<Vec<(String, String)>, String> {
    use chrono::{DateTime, NaiveDate, Utc};
    for key in range.keys() {
        if !matches!(key.as_str(), "start" | "end" | "step") {
            return Err(format!("unknown key `{key}` in a date range (it takes start, end and step)"));
        }
    }
    let text = |key: &str| -> Result<String, String> {
        match range.get(key) {
            Some(toml::Value::String(s)) => Ok(s.clone()),
            Some(toml::Value::Datetime(d)) => Ok(d.to_string()),
            Some(other) => Err(format!("{key} must be a date or date-time, not {}", other.type_str())),
            None => Err(format!("a date range needs {key}")),
        }
    };
    let (start, end) = (text("start")?, text("end")?);
    let step = match range.get("step") {
        None => std::time::Duration::from_secs(86_400),
        Some(toml::Value::String(s)) => humantime::parse_duration(s)
            .map_err(|e| format!("step {s:?} is not a duration ({e}); write e.g. \"1d\""))?,
        Some(_) => return Err("step must be a duration such as \"1d\"".into()),
    };
    let step = chrono::Duration::from_std(step).map_err(|e| e.to_string())?;
    if step <= chrono::Duration::zero() {
        return Err("step must be positive".into());
    }
    const MAX_WINDOWS: usize = 1_000_000;
    let mut windows = Vec::new();
    if let (Ok(from), Ok(to)) =
        (NaiveDate::parse_from_str(&start, "%Y-%m-%d"), NaiveDate::parse_from_str(&end, "%Y-%m-%d"))
    {
        if step.num_seconds() % 86_400 != 0 {
            return Err("dates step in whole days; give start and end as date-times for shorter steps".into());
        }
        let mut at = from;
        while at < to && windows.len() < MAX_WINDOWS {
            let next = (at + step).min(to);
            windows.push((at.format("%Y-%m-%d").to_string(), next.format("%Y-%m-%d").to_string()));
            at = next;
        }
    } else {
        let parse = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|e| format!("{s:?} is neither a date (2024-01-01) nor an RFC 3339 date-time: {e}"))
        };
        let (from, to) = (parse(&start)?, parse(&end)?);
        let mut at = from;
        while at < to && windows.len() < MAX_WINDOWS {
            let next = (at + step).min(to);
            let show = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            windows.push((show(at), show(next)));
            at = next;
        }
    }
    if windows.is_empty() {
        return Err(format!("the range from {start} to {end} is empty"));
    }
    Ok(windows)
}

/// Replace `{key}` placeholders naming partition keys; other braces are left alone (a
/// GraphQL query in a body is full of them).
pub fn fill(template: &str, partition: &Partition, encoding: Encoding) -> String {
    if partition.values.is_empty() || !template.contains('{') {
        return template.to_string();
    }
    let mut out = template.to_string();
    for (key, value) in &partition.values {
        let placeholder = format!("{{{key}}}");
        if out.contains(&placeholder) {
            let value = match encoding {
                Encoding::PathSegment => {
                    percent_encoding::utf8_percent_encode(value, UNRESERVED_COMPLEMENT).to_string()
                }
                Encoding::Raw => value.clone(),
            };
            out = out.replace(&placeholder, &value);
        }
    }
    out
}

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const UNRESERVED_COMPLEMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Fill placeholders in every string of a JSON value.
pub fn fill_json(value: &Value, partition: &Partition) -> Value {
    match value {
        Value::String(s) => Value::String(fill(s, partition, Encoding::Raw)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_json(v, partition)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill_json(v, partition))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_ranges_cut_into_windows() {
        let table = |text: &str| -> toml::Table { toml::from_str(text).unwrap() };
        let days = date_windows(&table("start = 2024-01-30\nend = 2024-02-02\nstep = \"1d\"")).unwrap();
        assert_eq!(
            days,
            vec![
                ("2024-01-30".into(), "2024-01-31".into()),
                ("2024-01-31".into(), "2024-02-01".into()),
                ("2024-02-01".into(), "2024-02-02".into())
            ]
        );
        let weeks = date_windows(&table("start = \"2024-01-01\"\nend = \"2024-01-10\"\nstep = \"1w\"")).unwrap();
        assert_eq!(weeks[1], ("2024-01-08".into(), "2024-01-10".into()), "the last window is clipped");
        let hours = date_windows(&table(
            "start = \"2024-01-01T00:00:00+01:00\"\nend = \"2024-01-01T01:00:00Z\"\nstep = \"1h\"",
        ))
        .unwrap();
        assert_eq!(
            hours,
            vec![
                ("2023-12-31T23:00:00Z".into(), "2024-01-01T00:00:00Z".into()),
                ("2024-01-01T00:00:00Z".into(), "2024-01-01T01:00:00Z".into())
            ]
        );
        assert!(date_windows(&table("start = 2024-01-01\nend = 2024-01-02\nstep = \"1h\"")).is_err());
        assert!(date_windows(&table("start = 2024-01-02\nend = 2024-01-01")).is_err());
        assert!(date_windows(&table("start = 2024-01-01\nend = 2024-01-02\nstride = \"1d\"")).is_err());
    }

    #[test]
    fn placeholders_are_encoded_in_urls_and_raw_elsewhere() {
        let p = Partition { values: vec![("repo".into(), "a b/ü".into())] };
        assert_eq!(fill("http://h/{repo}/x", &p, Encoding::PathSegment), "http://h/a%20b%2F%C3%BC/x");
        assert_eq!(fill("{repo} { query }", &p, Encoding::Raw), "a b/ü { query }");
    }
}
