//! `harvest demo`: the mock API in-process, jobs/demo.toml harvested from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::job::{self, Env, Overrides};
use crate::mock::{MockConfig, MockServer};
use crate::progress::Display;
use crate::run::{self, RunOptions};

/// The demo job, for when `harvest demo` runs outside the repository.
const DEMO_JOB: &str = include_str!("../jobs/demo.toml");

/// Start the mock API with `records` records, harvest the demo job from it, and say what
/// was written.
pub async fn run(
    records: u64,
    output_dir: Option<PathBuf>,
    progress: Display,
    cancel: CancellationToken,
) -> Result<String, Error> {
    let server = MockServer::start(MockConfig { records, ..Default::default() })
        .await
        .map_err(|e| Error::io("starting the mock API on 127.0.0.1", e))?;
    let path = Path::new("jobs/demo.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| DEMO_JOB.to_string());
    let mut env = Env::for_job(path);
    env.set("HARVEST_MOCK_URL", &server.url());
    let overrides = Overrides { output_dir, ..Default::default() };
    let plan = Arc::new(job::parse(path, &text, &env, &overrides)?);
    tracing::info!("mock API serving {records} records at {}", server.url());
    let summary = run::run(plan, RunOptions { progress, cancel, fresh: false }).await?;
    let files: Vec<String> = summary.parts.iter().map(|p| p.display().to_string()).collect();
    Ok(format!(
        "demo: harvested {} records ({} pages, {} requests) in {:.2}s\n  files: {}\n  manifest: {}",
        summary.records,
        summary.pages,
        summary.requests,
        summary.seconds,
        files.join(", "),
        summary.manifest.display()
    ))
}
