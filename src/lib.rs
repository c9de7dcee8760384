//! Errors here are the rare path and carry context for people; their size does not matter.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod cache;
pub mod check;
pub mod checkpoint;
pub mod demo;
pub mod detect;
pub mod error;
pub mod fetch;
pub mod harvest;
pub mod human;
pub mod incremental;
pub mod init;
pub mod job;
pub mod jsonpath;
pub mod keys;
pub mod mock;
pub mod notify;
pub mod output;
pub mod paginate;
pub mod partition;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod redact;
pub mod report;
pub mod request;
pub mod run;
pub mod scan;
pub mod schema;
pub mod shard;
pub mod sink;
pub mod status;
pub mod store;
