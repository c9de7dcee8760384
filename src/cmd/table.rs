//! `harvest optimize` and `harvest vacuum`: upkeep of a job's Delta table.

use harvest::job::{self, Overrides};

use crate::cli::{StatusArgs, VacuumArgs};

pub async fn optimize(args: StatusArgs) -> anyhow::Result<()> {
    let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
    let plan = job::load_offline(&args.job, &overrides)?;
    sayln!("{}", harvest::table::optimize(&plan).await?);
    Ok(())
}

pub async fn vacuum(args: VacuumArgs) -> anyhow::Result<()> {
    let overrides = Overrides { output_dir: args.output_dir, ..Overrides::default() };
    let plan = job::load_offline(&args.job, &overrides)?;
    sayln!("{}", harvest::table::vacuum(&plan, args.retain, args.dry_run).await?);
    Ok(())
}
