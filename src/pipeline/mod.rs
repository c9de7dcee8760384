//! Pipeline files: several jobs in one file (`[[job]]` tables, each run `after` others), read
//! in [`file`] (the file as written, every job file it names loaded, cycles refused) and run in
//! [`run`] (each job once the jobs it runs after completed, independent ones side by side, the
//! pipeline's state kept between runs). One job's engine is [`crate::harvest`].

pub mod file;
mod json_schema;
pub mod run;

pub use file::{is_pipeline, load, load_offline, PipelinePlan};
pub use json_schema::json_schema;
