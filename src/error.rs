//! Typed errors of the library.
//!
//! Each variant carries what a user needs to act: the file position of a bad job key, the
//! method, redacted URL, status and body excerpt of a failed request, the partition and page
//! a failure happened on. Every URL and excerpt in here has already passed through
//! [`crate::redact::Redactor`]; nothing downstream needs to redact again.

use std::path::PathBuf;

/// A problem with a job file, located at `file:line:col` when the position is known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct JobError {
    pub file: PathBuf,
    /// 1-based line and column; `None` for problems of the file as a whole.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl JobError {
    pub fn new(file: impl Into<PathBuf>, position: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        JobError { file: file.into(), position, message: message.into() }
    }

    fn render(&self) -> String {
        match self.position {
            Some((line, col)) => format!("{}:{line}:{col}: {}", self.file.display(), self.message),
            None => format!("{}: {}", self.file.display(), self.message),
        }
    }
}

/// Why one HTTP exchange failed, after retries where the cause was retryable.
#[derive(Debug, Clone)]
pub enum FetchErrorKind {
    Status {
        status: u16,
        excerpt: String,
        /// The server's `WWW-Authenticate`, on a 401 or 403.
        challenge: Option<String>,
    },
    Transport(String),
    Timeout(std::time::Duration),
    BodyTooLarge {
        limit: u64,
    },
    NotJson {
        reason: String,
        content_type: String,
        excerpt: String,
    },
    TooManyRedirects(usize),
    /// Credentials could not be had: a token endpoint or a login refused or failed.
    Auth(String),
}

impl FetchErrorKind {
    /// What happened, in a few words: "returned 503".
    fn summary(&self) -> String {
        match self {
            FetchErrorKind::Status { status, .. } => format!("returned {status}"),
            FetchErrorKind::Transport(message) => format!("failed: {message}"),
            FetchErrorKind::Timeout(after) => format!("timed out after {}", crate::human::duration(*after)),
            FetchErrorKind::BodyTooLarge { limit } => format!(
                "returned a body larger than max_body ({}); raise request.max_body if this is expected",
                crate::human::bytes(*limit)
            ),
            FetchErrorKind::NotJson { reason, content_type, .. } => {
                format!("returned a body that is not valid JSON ({reason}; content-type {content_type})")
            }
            FetchErrorKind::TooManyRedirects(n) => format!("redirected more than {n} times"),
            FetchErrorKind::Auth(message) => format!("could not get credentials: {message}"),
        }
    }

    /// The body excerpt, if any: " (last body: ...)", and the server's challenge.
    fn excerpt(&self) -> String {
        if let FetchErrorKind::Status { challenge: Some(challenge), .. } = self {
            return format!("{}; WWW-Authenticate: {challenge}", self.body_excerpt());
        }
        self.body_excerpt()
    }

    fn body_excerpt(&self) -> String {
        match self {
            FetchErrorKind::Status { excerpt, .. } | FetchErrorKind::NotJson { excerpt, .. } if excerpt.is_empty() => {
                " (with an empty body)".to_string()
            }
            FetchErrorKind::Status { excerpt, .. } | FetchErrorKind::NotJson { excerpt, .. } => {
                format!(" (body: {excerpt:?})")
            }
            _ => String::new(),
        }
    }
}

impl std::fmt::Display for FetchErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.summary(), self.excerpt())
    }
}

/// An HTTP request that failed for good: "GET <url> returned 503 after 6 attempts (body: ...)".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} {url} {}{}{}", .kind.summary(), attempts_suffix(*.attempts), .kind.excerpt())]
pub struct FetchError {
    pub method: String,
    /// Already redacted.
    pub url: String,
    pub kind: FetchErrorKind,
    pub attempts: u32,
}

fn attempts_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

/// A response that arrived but cannot be used as a page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PageError {
    #[error("records.path {path} expects an array at {at}, but the response has {found} there")]
    NotAnArray { path: String, at: String, found: &'static str },
    #[error("the response reports errors at {path} (HTTP {status}): {messages}")]
    ApiErrors { path: String, status: u16, messages: String },
    #[error("the server sent the {what} {value} a second time; stopping instead of looping")]
    Repeated { what: &'static str, value: String },
    #[error("{0}")]
    Pagination(String),
    /// `mode = "merge"`: a record without a value for a primary key field.
    #[error("record {record} of the page has no value for {field:?}, a field of primary_key: mode = \"merge\" needs it in every record to know its row")]
    Keyless { record: u64, field: String },
    /// `include` appends `_parent` to each record: a record that has one, or is no object.
    #[error("{0}")]
    Parent(String),
}

/// Where a failure happened in the harvest.
#[derive(Debug, Clone)]
pub struct Location {
    /// `repo=rust,day=2024-01-01`, or empty for a job without partitions.
    pub partition: String,
    /// 0-based page index within the partition.
    pub page: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "page {}", self.page + 1)?;
        if !self.partition.is_empty() {
            write!(f, " of partition {}", self.partition)?;
        }
        Ok(())
    }
}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Job(#[from] JobError),
    /// A page that could not be had; `hint` says what may be wrong, `kept` what the run kept.
    #[error("{source} ({location}){}{}", then(.hint), then(.kept))]
    Fetch { source: FetchError, location: Location, hint: Option<String>, kept: Option<Kept> },
    #[error("{method} {url} ({location}): {source}")]
    Page { method: String, url: String, source: PageError, location: Location },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("another harvest of job {name} is running ({holder}; it holds {lock})")]
    Locked { name: String, lock: String, holder: String },
    /// Object storage: this worker's lease on the job was taken over by another (exit 3).
    #[error("{0}")]
    LeaseLost(String),
    /// The unfinished run's checkpoint cannot be used as it is.
    #[error("{0}")]
    Checkpoint(String),
    #[error("interrupted{}", then(.kept))]
    Interrupted { kept: Option<Kept> },
    /// The command line asks for something that cannot be (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A pipeline whose jobs did not all complete: the exit code its jobs' errors come to.
    #[error("{message}")]
    Pipeline { code: u8, message: String },
    /// Records the output cannot take as they are (Parquet needs objects, a declared schema).
    #[error("{0}")]
    Records(String),
    /// The Parquet writer failed on a part.
    #[error("{context}: {source}")]
    Parquet { context: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// A file of the output that was there a moment ago, or is not what harvest wrote.
    #[error("{path} {problem}")]
    Output { path: String, problem: String },
    /// The partitions' values could not be read (a file, another job's output), or one does
    /// not fit the job's request.
    #[error("{0}")]
    Partitions(String),
    /// A Delta table could not be read or committed to (delta-rs's error).
    #[error("{doing} the table {table}: {}", crate::error::chain(source.as_ref()))]
    Table { table: String, doing: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// The HTTP client cannot be built as the job asks.
    #[error("{context}: {source}")]
    Client { context: String, source: reqwest::Error },
    /// The writer went away while pages were still coming (its own error says why).
    #[error("the writer stopped")]
    WriterStopped,
    /// `harvest init` could not write a job: what it asked and what the API answered.
    #[error("{0}")]
    Init(String),
    /// A sharded run asked to finish before all its shards did.
    #[error("{0}")]
    Unfinished(String),
    /// One of the run's tasks or threads panicked or was cancelled.
    #[error("{task} failed: {cause}")]
    Task { task: &'static str, cause: String },
}

/// What a failed or interrupted run kept, said where it is known (the run, which holds the
/// position its checkpoint saved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub records: u64,
    /// The output folder, as the user knows it.
    pub folder: String,
    pub job_file: std::path::PathBuf,
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} record(s) written so far are kept under {} with a checkpoint; `harvest run {}` resumes from there",
            self.records,
            self.folder,
            self.job_file.display()
        )
    }
}

/// `; {text}`, when there is something to say.
fn then(text: &Option<impl std::fmt::Display>) -> String {
    text.as_ref().map_or(String::new(), |text| format!("; {text}"))
}

impl Error {
    /// The process's exit code for this error: 2 for a job file or command line that cannot
    /// be (or a checkpoint that cannot be used), 3 for a lock or lease another worker holds,
    /// 130 for an interrupt, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Job(_) | Error::Checkpoint(_) | Error::Usage(_) => 2,
            Error::Locked { .. } | Error::LeaseLost(_) => 3,
            Error::Interrupted { .. } => 130,
            Error::Pipeline { code, .. } => *code,
            _ => 1,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// An interrupt, before the run says what it kept.
    pub fn interrupted() -> Self {
        Error::Interrupted { kept: None }
    }

    /// Say what the run kept, on the errors that end a run with its data and checkpoint kept
    /// (a page that could not be had, an interrupt).
    pub fn keeping(self, what: Kept) -> Self {
        match self {
            Error::Fetch { source, location, hint, .. } => Error::Fetch { source, location, hint, kept: Some(what) },
            Error::Interrupted { .. } => Error::Interrupted { kept: Some(what) },
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources in one line, each source once: a source whose words the message
/// already holds is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}
