//! Integration tests: real HTTP over loopback against the built-in mock API (and a second
//! instance of it as "another origin"). One test binary, so linking stays fast.

mod architecture;
mod auth;
mod cache;
mod cli;
mod concurrency;
mod delta;
mod deploy;
mod editor;
mod endpoints;
mod examples;
mod http;
mod incremental;
mod init;
mod interrupts;
mod job_errors;
mod limits;
mod merge;
mod notify;
mod object_store;
mod pagination;
mod parquet;
mod polite;
mod progress;
mod quirks;
mod report;
mod responses;
mod resume;
mod retries;
mod secrets;
mod shards;
mod support;
mod tls;
mod tour;
