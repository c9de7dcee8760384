//! The runtime form of a job: everything resolved, compiled and checked once.
//!
//! [`crate::job`] turns a job file into a `Plan`; nothing after that re-checks input. Durations
//! are `Duration`s, paths are compiled, limits are non-zero, `${VAR}`s are substituted and the
//! values that came from them are known to the [`Redactor`].

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::auth::AuthPlan;
use crate::jsonpath::JsonPath;
use crate::paginate::PaginationPlan;
use crate::partition::{Partition, Partitions};
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
    pub partitions: Partitions,
    pub output: OutputPlan,
    pub incremental: Option<IncrementalPlan>,
    pub redactor: Redactor,
    /// Origins that may receive credentials: `request.url`'s and `[auth] allow_origins`.
    pub allowed_origins: Vec<url::Origin>,
    /// `[auth]`: how requests prove who sends them.
    pub auth: AuthPlan,
    /// What `check` should say about the job file (a credential written in it).
    pub warnings: Vec<String>,
    /// `[notify]`: the webhook told when a run ends.
    pub notify: Option<NotifyPlan>,
    /// `--shard I/N`: this worker's share of a run split among several.
    pub shard: Option<crate::shard::ShardPlan>,
}

/// `[notify]`: where the run report goes when a run ends, and how it is signed.
#[derive(Debug, Clone)]
pub struct NotifyPlan {
    pub url: Url,
    pub secret: Option<String>,
    pub on_success: bool,
    pub on_failure: bool,
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
    /// `[request] cache` or `run --cache`: responses kept while a job is being written.
    pub cache: Option<CachePlan>,
}

/// The response cache of a run: how long an entry lasts, and a digest of the job's credential
/// values that is part of every entry's key.
#[derive(Debug, Clone)]
pub struct CachePlan {
    pub ttl: Duration,
    pub account: String,
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

/// ` of partition repo=rust` for messages; nothing for a job without partitions.
pub fn partition_suffix(label: &str) -> String {
    if label.is_empty() {
        String::new()
    } else {
        format!(" of partition {label}")
    }
}

/// `partition repo=rust` for a job with partitions, `the job` without: what a message that
/// starts with its subject calls a partition.
pub fn partition_named(label: &str) -> String {
    match label.is_empty() {
        true => "the job".to_string(),
        false => format!("partition {label}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Parquet,
    /// A Delta Lake table: Parquet parts, one table version a completed run.
    Delta,
}

impl Format {
    /// Parquet parts are written: `parquet`, and `delta`'s data files.
    pub fn writes_parquet(self) -> bool {
        matches!(self, Format::Parquet | Format::Delta)
    }
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
    /// A Delta table's rows upserted by primary key.
    Merge,
}

/// `mode = "merge"`: how a run's records are folded into a Delta table's rows.
#[derive(Debug, Clone)]
pub struct MergePlan {
    /// Top-level fields that name a row; a record without them fails its page.
    pub primary_key: Vec<String>,
    /// A record whose value here is `true` deletes its key's row (soft deletes).
    pub deleted: Option<JsonPath>,
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
    /// Object storage: how to reach it and how long a lease lasts.
    pub store: StorePlan,
    /// A Delta table's small files are compacted after every this many complete runs.
    pub optimize_every: Option<u64>,
    /// `mode = "merge"`: the primary key and the soft-delete field.
    pub merge: Option<MergePlan>,
}

/// `[output]` keys for object storage (`dir = "s3://bucket/prefix"`).
#[derive(Debug, Clone)]
pub struct StorePlan {
    /// An S3-compatible store's URL (else `AWS_ENDPOINT_URL`, else AWS).
    pub endpoint: Option<String>,
    /// Plain HTTP to the endpoint (else `AWS_ALLOW_HTTP`).
    pub allow_http: bool,
    /// A lease not renewed for this long may be taken over by another worker.
    pub lease_ttl: Duration,
}

impl Default for StorePlan {
    fn default() -> Self {
        StorePlan { endpoint: None, allow_http: false, lease_ttl: Duration::from_secs(120) }
    }
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
    /// The request has a `{param}` placeholder for the mark; else it goes as a query parameter.
    pub placeholder: bool,
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

impl RequestPlan {
    /// True when `{name}` appears in the URL, a parameter or the body.
    pub fn uses_placeholder(&self, name: &str) -> bool {
        let placeholder = format!("{{{name}}}");
        self.url.contains(&placeholder)
            || self.params.iter().any(|(_, v)| v.contains(&placeholder))
            || self.body.as_ref().is_some_and(|b| b.to_string().contains(&placeholder))
    }
}

impl Plan {
    /// `<dir>/<name>`.
    pub fn output_root(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }

    /// True when `[output] dir` is object storage (`s3://`, `gs://`, `az://`).
    pub fn in_object_storage(&self) -> bool {
        crate::store::object::is_url(&self.output.dir.to_string_lossy())
    }

    /// The job's URL for one partition, placeholders filled in and percent-encoded.
    pub fn url_for(&self, partition: &Partition) -> Result<Url, Unfillable> {
        fill_url(&self.request.url, partition).map_err(|e| e.redacted(&self.redactor))
    }
}

/// A URL template with a partition's values in it, each value one path segment whatever it
/// holds. A value that is `.` or `..` where a whole segment is would be a dot segment, which
/// every URL parser removes (`%2E` too): refused rather than sent to another path.
pub fn fill_url(template: &str, partition: &Partition) -> Result<Url, Unfillable> {
    let filled = fill(template, partition, Encoding::PathSegment);
    let url = match Url::parse(&filled) {
        Ok(url) => url,
        Err(cause) => return Err(Unfillable::Invalid { filled, cause }),
    };
    let segments = |u: &Url| u.path_segments().map_or(0, |s| s.count());
    if let Ok(unfilled) = Url::parse(template) {
        if segments(&unfilled) != segments(&url) {
            let values = partition.values.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", ");
            return Err(Unfillable::DotSegment { template: template.to_string(), values });
        }
    }
    Ok(url)
}

/// Why a partition's values do not make a URL of the job's template.
#[derive(Debug, thiserror::Error)]
pub enum Unfillable {
    #[error("request.url {filled} is not a valid URL: {cause}")]
    Invalid { filled: String, cause: url::ParseError },
    #[error("request.url {template} with {values} has a path segment `.` or `..`, which no URL can send as a value")]
    DotSegment { template: String, values: String },
}

impl Unfillable {
    /// The same, with the job's secrets masked in the URL and the values it names.
    fn redacted(self, secrets: &Redactor) -> Unfillable {
        let mask = |text: String| secrets.redact(&text).into_owned();
        match self {
            Unfillable::Invalid { filled, cause } => Unfillable::Invalid { filled: mask(filled), cause },
            Unfillable::DotSegment { template, values } => {
                Unfillable::DotSegment { template: mask(template), values: mask(values) }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Percent-encode everything but unreserved characters: for URL templates.
    PathSegment,
    /// Insert as is: query values are encoded once when the URL is built, bodies are JSON.
    Raw,
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
    fn placeholders_are_encoded_in_urls_and_raw_elsewhere() {
        let p = Partition { values: vec![("repo".into(), "a b/ü".into())], ..Partition::default() };
        assert_eq!(fill("http://h/{repo}/x", &p, Encoding::PathSegment), "http://h/a%20b%2F%C3%BC/x");
        assert_eq!(fill("{repo} { query }", &p, Encoding::Raw), "a b/ü { query }");
    }

    #[test]
    fn a_url_that_cannot_be_filled_names_no_secret() {
        let secrets = Redactor::new([crate::redact::Secret::new("TOKEN", "s3cr3t-t0ken".to_string())]);
        let dots = Partition { values: vec![("v".into(), "..".into())], ..Partition::default() };
        let refused = fill_url("http://h/s3cr3t-t0ken/{v}", &dots).unwrap_err();
        assert!(refused.to_string().contains("s3cr3t-t0ken"), "{refused}");
        let masked = refused.redacted(&secrets).to_string();
        assert!(!masked.contains("s3cr3t-t0ken") && masked.contains("`.` or `..`"), "{masked}");
        let invalid = Partition { values: vec![("v".into(), "s3cr3t-t0ken".into())], ..Partition::default() };
        let masked = fill_url("http://[{v}]/x", &invalid).unwrap_err().redacted(&secrets).to_string();
        assert!(!masked.contains("s3cr3t-t0ken") && masked.contains("not a valid URL"), "{masked}");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            /// Any value fills a URL template as one path segment that decodes back to it, except
            /// `.` and `..`, which would be dot segments and are refused.
            #[test]
            fn any_value_fills_a_path_segment_and_decodes_back(value in prop_oneof![".{0,60}", "[./]{1,3}"]) {
                let partition = Partition { values: vec![("v".into(), value.clone())], ..Partition::default() };
                match fill_url("http://h/a/{v}/b?x={v}", &partition) {
                    Ok(url) => {
                        prop_assert_eq!(url.path_segments().unwrap().count(), 3, "the value stays one segment");
                        let segment = url.path_segments().unwrap().nth(1).unwrap().to_string();
                        let decoded = percent_encoding::percent_decode_str(&segment).decode_utf8().unwrap();
                        prop_assert_eq!(decoded, value.as_str());
                    }
                    Err(e) => {
                        prop_assert!(value == "." || value == "..", "{value:?} refused: {e}");
                        prop_assert!(e.to_string().contains("`.` or `..`"), "{e}");
                    }
                }
            }
        }
    }
}
