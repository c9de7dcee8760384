//! `harvest run`: a job, or a pipeline of jobs.

use std::sync::Arc;

use harvest::error::Error;
use harvest::job::{self, Overrides};
use harvest::pipeline;
use harvest::run::{self, RunOptions};

use super::{display, interrupt_token};
use crate::cli::{FormatArg, RunArgs};

pub async fn run(args: RunArgs, quiet: bool) -> anyhow::Result<()> {
    if pipeline::is_pipeline(&args.job) {
        return run_pipeline(args, quiet).await;
    }
    let asked =
        harvest::shard::ShardAsked { shard: args.shard.clone(), shards: args.shards, run_id: args.run_id.clone() };
    let shard = harvest::shard::resolve(&asked, &|name| std::env::var(name).ok()).map_err(Error::Usage)?;
    let plan = Arc::new(job::load(&args.job, &overrides(&args, shard))?);
    let options = RunOptions { progress: display(args.progress, quiet), cancel: interrupt_token(), fresh: args.fresh };
    let (result, report) = run::run_reported(plan, options).await;
    if let (Some(report), false) = (&report, quiet) {
        eprint!("{}", report.text());
    }
    sayln!("{}", result?);
    Ok(())
}

async fn run_pipeline(args: RunArgs, quiet: bool) -> anyhow::Result<()> {
    if args.shard.is_some() || args.shards.is_some() || args.run_id.is_some() {
        let why = "a pipeline runs each of its jobs whole: shard a job by running its own file with --shard";
        return Err(Error::Usage(why.into()).into());
    }
    let overrides = overrides(&args, None);
    let pipeline = pipeline::load(&args.job, &overrides)?;
    let options = RunOptions { progress: display(args.progress, quiet), cancel: interrupt_token(), fresh: args.fresh };
    let outcome = pipeline::run::run(&pipeline, &overrides, options, |_, report| {
        if !quiet {
            eprint!("{}", report.text());
        }
    })
    .await?;
    let words = pipeline::run::describe(&outcome.state);
    let (name, run) = (&pipeline.name, &outcome.state.run);
    match outcome.code {
        0 => {
            sayln!("pipeline {name} complete (run {run}):\n{words}");
            Ok(())
        }
        code => {
            let again = args.job.display();
            let message = format!(
                "pipeline {name} did not complete (run {run}; `harvest run {again}` takes it up again):\n{}",
                words.trim_end()
            );
            Err(Error::Pipeline { code, message }.into())
        }
    }
}

/// What `run`'s flags change in each job it runs.
fn overrides(args: &RunArgs, shard: Option<harvest::shard::ShardPlan>) -> Overrides {
    Overrides {
        output_dir: args.output_dir.clone(),
        format: args.format.map(|f| match f {
            FormatArg::Ndjson => harvest::plan::Format::Ndjson,
            FormatArg::Parquet => harvest::plan::Format::Parquet,
        }),
        max_pages: args.max_pages,
        concurrency: args.concurrency,
        requests_per_second: args.rps,
        cache: args.cache,
        shard,
    }
}
