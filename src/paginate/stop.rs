//! Why a partition ended, as the log, the manifest and the run report say it.

use serde::{Deserialize, Serialize};

/// Why a partition ended: logged, and written to the run manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// A page held no records.
    NoRecords,
    /// The records (or pages) the server announced have all been fetched.
    TotalReached {
        total: u64,
    },
    /// The server said there is no more.
    HasMoreFalse,
    /// The response carried no next cursor, URL or link.
    NoNext,
    /// A short page was followed by an empty page, 404, 400 or 422.
    EndConfirmed {
        status: u16,
    },
    MaxPages {
        pages: u64,
    },
    MaxRecords {
        records: u64,
    },
    /// `kind = "none"`: one request.
    SinglePage,
    /// `kind = "none"` with values from a file or a job's output: the server has nothing for
    /// them (404); they are reported as asked but not returned.
    NotFound,
}

impl StopReason {
    /// Its name as the manifest writes it (`total_reached`).
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::NoRecords => "no_records",
            StopReason::TotalReached { .. } => "total_reached",
            StopReason::HasMoreFalse => "has_more_false",
            StopReason::NoNext => "no_next",
            StopReason::EndConfirmed { .. } => "end_confirmed",
            StopReason::MaxPages { .. } => "max_pages",
            StopReason::MaxRecords { .. } => "max_records",
            StopReason::SinglePage => "single_page",
            StopReason::NotFound => "not_found",
        }
    }

    /// A few words for a report line: "no next link", "short page confirmed".
    pub fn words(&self) -> &'static str {
        match self {
            StopReason::NoRecords => "empty page",
            StopReason::TotalReached { .. } => "total reached",
            StopReason::HasMoreFalse => "has_more false",
            StopReason::NoNext => "no next link",
            StopReason::EndConfirmed { .. } => "short page confirmed",
            StopReason::MaxPages { .. } => "max_pages reached",
            StopReason::MaxRecords { .. } => "max_records reached",
            StopReason::SinglePage => "single page",
            StopReason::NotFound => "not found (404)",
        }
    }

    /// One of each reason (their numbers are placeholders).
    pub const EVERY: [StopReason; 9] = [
        StopReason::NoRecords,
        StopReason::TotalReached { total: 0 },
        StopReason::HasMoreFalse,
        StopReason::NoNext,
        StopReason::EndConfirmed { status: 0 },
        StopReason::MaxPages { pages: 0 },
        StopReason::MaxRecords { records: 0 },
        StopReason::SinglePage,
        StopReason::NotFound,
    ];

    /// The words for a stop reason known by its manifest name (`end_confirmed`).
    pub fn words_named(name: &str) -> &str {
        Self::EVERY.iter().find(|stop| stop.name() == name).map_or(name, |stop| stop.words())
    }

    /// Ended by a limit of the job's rather than by the API's own end: there may be more.
    pub fn cut_short(&self) -> bool {
        matches!(self, StopReason::MaxPages { .. } | StopReason::MaxRecords { .. })
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::NoRecords => f.write_str("a page held no records"),
            StopReason::TotalReached { total } => write!(f, "the announced total ({total}) was reached"),
            StopReason::HasMoreFalse => f.write_str("the server said there are no more pages"),
            StopReason::NoNext => f.write_str("the last page named no next page"),
            StopReason::EndConfirmed { status: 200 } => f.write_str("the page after a short page was empty"),
            StopReason::EndConfirmed { status } => write!(f, "the page after a short page returned {status}"),
            StopReason::MaxPages { pages } => write!(f, "max_pages ({pages}) was reached"),
            StopReason::MaxRecords { records } => write!(f, "max_records ({records}) was reached"),
            StopReason::SinglePage => f.write_str("the job asks for a single page"),
            StopReason::NotFound => f.write_str("the server has nothing for it (404)"),
        }
    }
}
