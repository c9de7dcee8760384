//! How a section's keys are read once its struct is known: the job's reader implements
//! [`KeyReader`] (it substitutes `${VAR}`, compiles JSONPath and places an error at the key's
//! `file:line:col`), and a pagination strategy or an auth kind builds its configuration
//! through it, so the kinds need not know the job file's reader.

use std::borrow::Cow;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

use crate::error::JobError;
use crate::jsonpath::JsonPath;

/// A value of the job file and where it was written (toml's `Spanned`), which is also the JSON
/// Schema of the value it holds: the structs a job is read into are the schema `harvest
/// schema` prints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Spanned<T>(toml::Spanned<T>);

impl<T> Spanned<T> {
    pub fn new(span: Range<usize>, value: T) -> Self {
        Spanned(toml::Spanned::new(span, value))
    }

    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }

    pub fn get_ref(&self) -> &T {
        self.0.get_ref()
    }

    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

pub trait KeyReader {
    fn text(&self, value: &Spanned<String>) -> Result<String, JobError>;
    fn path(&self, value: &Spanned<String>) -> Result<JsonPath, JobError>;
    fn error(&self, span: Range<usize>, message: String) -> JobError;

    /// A credential: its text, a secret from now on whether it came from `${VAR}` or was
    /// written in the file (which `check` warns about); `what` names it in sealed files.
    fn secret(&self, value: &Spanned<String>, what: &str) -> Result<String, JobError>;

    /// The text of a file the job names (relative to the job file's folder): its path as
    /// resolved, and its content.
    fn file(&self, value: &Spanned<String>, key: &str) -> Result<(std::path::PathBuf, String), JobError>;

    /// A TOML value as JSON, `${VAR}` substituted in its strings (a login body).
    fn json(&self, value: &Spanned<toml::Value>) -> Result<serde_json::Value, JobError>;

    /// Treat `text` as a secret from now on (a value built of secrets: `user:password`).
    fn learn(&self, text: &str, what: &str);

    /// An identifier (a client id, a username, a token URL): shown in messages even when it
    /// came from `${VAR}`.
    fn identifier(&self, value: &Spanned<String>) -> Result<String, JobError>;

    /// A duration such as `"30m"`, or `default`.
    fn duration(
        &self,
        value: &Option<Spanned<String>>,
        default: std::time::Duration,
    ) -> Result<std::time::Duration, JobError>;

    /// The text given, or `default`.
    fn text_or(&self, value: &Option<Spanned<String>>, default: &str) -> Result<String, JobError> {
        match value {
            Some(v) => self.text(v),
            None => Ok(default.to_string()),
        }
    }

    /// A JSONPath if one is given; a blank value means none.
    fn optional_path(&self, value: &Option<Spanned<String>>) -> Result<Option<JsonPath>, JobError> {
        match value {
            Some(v) if !v.get_ref().trim().is_empty() => Ok(Some(self.path(v)?)),
            _ => Ok(None),
        }
    }

    /// The path given, or `default`.
    fn path_or(&self, value: &Option<Spanned<String>>, default: &str) -> Result<JsonPath, JobError> {
        match value {
            Some(v) => self.path(v),
            None => Ok(JsonPath::parse(default).expect("a valid default path")),
        }
    }

    /// Which of `names` the value is (case-insensitive); `None` when not given.
    fn choice(&self, value: &Option<Spanned<String>>, key: &str, names: &[&str]) -> Result<Option<usize>, JobError> {
        let Some(value) = value else { return Ok(None) };
        let text = self.text(value)?;
        match names.iter().position(|n| n.eq_ignore_ascii_case(text.trim())) {
            Some(i) => Ok(Some(i)),
            None => {
                let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                Err(self.error(value.span(), format!("{key} = {text:?} is not one of {}", names.join(", "))))
            }
        }
    }

    /// An http or https URL.
    fn url(&self, value: &Spanned<String>, key: &str) -> Result<url::Url, JobError> {
        let text = self.identifier(value)?;
        match url::Url::parse(text.trim()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
            Ok(url) => Err(self.error(value.span(), format!("{key} must be http or https, not {}", url.scheme()))),
            Err(e) => Err(self.error(value.span(), format!("{key} {text:?} is not a URL: {e}"))),
        }
    }
}

/// The JSON Schemas of values the job file reads as raw TOML (a table of parameters, a body),
/// for `harvest schema`: never built, only described.
#[allow(dead_code)]
pub mod shapes {
    use std::collections::BTreeMap;

    use schemars::JsonSchema;

    /// A string, number or boolean.
    #[derive(JsonSchema)]
    #[schemars(untagged)]
    pub enum Scalar {
        Text(String),
        Integer(i64),
        Number(f64),
        Bool(bool),
    }

    /// A query parameter: one value, or a list sent as the parameter repeated.
    #[derive(JsonSchema)]
    #[schemars(untagged)]
    pub enum Param {
        One(Scalar),
        Many(Vec<Scalar>),
    }

    pub type Params = BTreeMap<String, Param>;

    /// Where a pagination fact is read: a JSONPath into the body, or a response header.
    #[derive(JsonSchema)]
    #[schemars(untagged)]
    pub enum Fact {
        /// A JSONPath into the body: `"$.total"`.
        Path(String),
        Header(HeaderFact),
    }

    /// `{ header = "X-Total-Count" }` (its value; a count from `Content-Range` is its complete
    /// length) or `{ header = "X-Pagination", path = "$.total" }` (a JSONPath into a header
    /// whose value is JSON).
    #[derive(JsonSchema)]
    #[schemars(deny_unknown_fields)]
    pub struct HeaderFact {
        pub header: String,
        pub path: Option<String>,
    }
    pub type Scalars = BTreeMap<String, Scalar>;

    /// A size: `"64MiB"` or a number of bytes.
    #[derive(JsonSchema)]
    #[schemars(untagged)]
    pub enum Size {
        Text(String),
        Bytes(u64),
    }

    /// A partition source: a list of values, a date range cut into windows, values in a
    /// file, or a field of another job's output; under the name `check`, what a batch's
    /// records are checked against.
    #[derive(JsonSchema)]
    #[schemars(untagged)]
    pub enum Source {
        Values(#[schemars(length(min = 1))] Vec<Scalar>),
        Dates(DateRange),
        File(FileSource),
        Job(JobSource),
        Check(Check),
    }

    /// `{ file = "ids.csv", column = "id" }` (CSV), `{ file = "ids.txt" }` (one value a
    /// line), `{ file = "ids.ndjson", field = "$.id" }`; relative to the job file.
    #[derive(JsonSchema)]
    #[schemars(deny_unknown_fields)]
    pub struct FileSource {
        pub file: String,
        /// A CSV file's column, by its header.
        pub column: Option<String>,
        /// An NDJSON file's value: a JSONPath in each line.
        pub field: Option<String>,
        /// Up to this many values in one request, joined into the placeholder.
        #[schemars(range(min = 1))]
        pub batch: Option<u64>,
        /// What joins a batch's values (`,` unless given).
        pub join: Option<String>,
    }

    /// `{ from = "repos", field = "$.full_name", include = { repo_id = "$.id" } }`: the
    /// values of a field in job `from`'s latest complete run in the same output folder.
    #[derive(JsonSchema)]
    #[schemars(deny_unknown_fields)]
    pub struct JobSource {
        #[schemars(regex(pattern = r"^[a-z0-9_-]+$"))]
        pub from: String,
        pub field: String,
        /// Fields of the parent record carried into each child record as `_parent`.
        pub include: Option<BTreeMap<String, String>>,
        #[schemars(range(min = 1))]
        pub batch: Option<u64>,
        pub join: Option<String>,
    }

    /// `[partitions.check] field = "$.id"`: where a record holds the value it answers.
    #[derive(JsonSchema)]
    #[schemars(deny_unknown_fields)]
    pub struct Check {
        pub field: String,
    }

    /// `{ start = "2024-01-01", end = "2024-02-01", step = "1d" }`: dates or RFC 3339
    /// date-times; `end` excluded; `step` a duration, one day by default.
    #[derive(JsonSchema)]
    #[schemars(deny_unknown_fields)]
    pub struct DateRange {
        pub start: String,
        pub end: String,
        pub step: Option<String>,
    }
}
