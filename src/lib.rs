//! harvest pulls every record out of a paginated JSON HTTP API into NDJSON or Parquet files,
//! and never loses or duplicates one after a crash.
//!
//! The `harvest` command line is a thin layer over this library; a program can embed the
//! same harvest. A job is read from its TOML file (docs/REFERENCE.md lists every key) into a
//! [`Job`], the validated plan, and run:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! let job = harvest::load("jobs/demo.toml".as_ref(), &harvest::Overrides::default())?;
//! let summary = harvest::run(Arc::new(job), harvest::RunOptions::default()).await?;
//! println!("{summary}");
//! # Ok(())
//! # }
//! ```
//!
//! A run resumes where an interrupted one stopped, keeps its checkpoint and output as the
//! command line does, and stops, saving what it fetched, when its [`RunOptions::cancel`] token
//! is cancelled. `docs/examples/embed.rs` is a whole program; `docs/ARCHITECTURE.md` the map
//! of the modules below.
//!
//! Errors here are the rare path and carry context for people; their size does not matter.
#![allow(clippy::result_large_err)]

pub use error::{Error, JobError};
pub use job::{load, parse, Env, Overrides};
pub use plan::Plan as Job;
pub use progress::Display;
pub use run::{run, run_reported, RunOptions, RunSummary};

// What the command line's commands call.
pub mod cache;
pub mod check;
pub mod error;
pub mod init;
pub mod job;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod run;
pub mod shard;
pub mod status;

// Open for the benchmarks, which time these parts alone.
pub mod fetch;
pub mod jsonpath;
pub mod paginate;
pub mod schema;

mod auth;
mod checkpoint;
mod detect;
mod harvest;
mod human;
mod incremental;
mod job_output;
mod keys;
mod manifest;
mod notify;
mod partition;
mod redact;
mod report;
mod request;
mod scan;
mod sink;
mod store;
pub mod table;
