//! `harvest check`: what a job (or each job of a pipeline) will do, and with `--probe` its
//! first pages.

use harvest::job::{self, Overrides};
use harvest::pipeline;

use crate::cli::CheckArgs;

pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    if pipeline::is_pipeline(&args.job) {
        let pipeline = pipeline::load(&args.job, &Overrides::default())?;
        sayln!("pipeline {} ({}): {} jobs", pipeline.name, pipeline.file.display(), pipeline.jobs.len());
        for step in &pipeline.jobs {
            let after: Vec<&str> = step.after.iter().map(|&i| pipeline.jobs[i].name.as_str()).collect();
            if !after.is_empty() {
                sayln!("job {} runs after {}", step.name, after.join(", "));
            }
            say!("{}", harvest::check::describe(&job::load(&step.file, &Overrides::default())?));
        }
        return Ok(());
    }
    let plan = job::load(&args.job, &Overrides::default())?;
    say!("{}", harvest::check::describe(&plan));
    if args.probe {
        say!("{}", harvest::check::probe(&plan).await?);
    }
    Ok(())
}
