//! `harvest init`: a job written from one response, confirmed on a few pages.

use crate::cli::InitArgs;

pub async fn init(args: InitArgs, quiet: bool) -> anyhow::Result<()> {
    let options = harvest::init::InitOptions {
        url: args.url,
        method: args.method,
        body: args.body,
        headers: args.header,
        name: args.name,
        out: args.out.clone(),
        force: args.force,
    };
    let written = harvest::init::init(&options).await?;
    if args.out.is_none() {
        say!("{}", written.job);
    }
    if !quiet {
        eprintln!("{}", written.summary);
    }
    Ok(())
}
