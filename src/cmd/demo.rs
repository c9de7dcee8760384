//! `harvest demo`: the mock API started in-process and jobs/demo.toml harvested from it.

use std::path::Path;
use std::sync::Arc;

use harvest::error::Error;
use harvest::job::{self, Env, Overrides};
use harvest::run::{self, RunOptions};
use harvest_mock::{MockConfig, MockServer};

use super::{display, interrupt_token};
use crate::cli::DemoArgs;

/// The demo job, for when `harvest demo` runs outside the repository.
const DEMO_JOB: &str = include_str!("../../jobs/demo.toml");

pub async fn demo(args: DemoArgs, quiet: bool) -> anyhow::Result<()> {
    let records = args.records;
    let server = MockServer::start(MockConfig { records, ..Default::default() })
        .await
        .map_err(|e| Error::io("starting the mock API on 127.0.0.1", e))?;
    let path = Path::new("jobs/demo.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| DEMO_JOB.to_string());
    let mut env = Env::for_job(path);
    env.set("HARVEST_MOCK_URL", &server.url());
    let overrides = Overrides { output_dir: args.output_dir, ..Default::default() };
    let plan = Arc::new(job::parse(path, &text, &env, &overrides)?);
    tracing::info!("mock API serving {records} records at {}", server.url());
    let options = RunOptions { progress: display(args.progress, quiet), cancel: interrupt_token(), fresh: false };
    let summary = run::run(plan, options).await?;
    let files: Vec<String> = summary.parts.iter().map(|p| p.display().to_string()).collect();
    sayln!(
        "demo: harvested {} records ({} pages, {} requests) in {:.2}s\n  files: {}\n  manifest: {}",
        summary.records,
        summary.pages,
        summary.requests,
        summary.seconds,
        files.join(", "),
        summary.manifest.display()
    );
    Ok(())
}
