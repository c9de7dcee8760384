//! `harvest status` (where a job or a pipeline stands) and `harvest finalize` (a sharded
//! run's last step). Both read the output only: neither the job's secrets nor its API are
//! needed for status.

use harvest::job::{self, Overrides};
use harvest::pipeline;

use crate::cli::StatusArgs;

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
    if !pipeline::is_pipeline(&args.job) {
        say!("{}", harvest::status::report(&job::load_offline(&args.job, &overrides)?)?);
        return Ok(());
    }
    let pipeline = pipeline::load_offline(&args.job, &overrides)?;
    match pipeline::run::read_state(&pipeline)? {
        None => sayln!("pipeline {}: never run", pipeline.name),
        Some(state) => {
            let finished = match &state.finished_at {
                Some(at) => format!("complete at {at}"),
                None => "not complete: the next `harvest run` takes it up".to_string(),
            };
            sayln!("pipeline {}: run {} (started {}), {finished}", pipeline.name, state.run, state.started_at);
            say!("{}", pipeline::run::describe(&state));
        }
    }
    for step in &pipeline.jobs {
        say!("{}", harvest::status::report(&job::load_offline(&step.file, &overrides)?)?);
    }
    Ok(())
}

pub fn finalize(args: StatusArgs) -> anyhow::Result<()> {
    let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
    let plan = job::load(&args.job, &overrides)?;
    sayln!("{}", harvest::status::finalize(&plan)?);
    Ok(())
}
