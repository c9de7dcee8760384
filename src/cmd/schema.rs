//! What editors and shells are given: `harvest schema` (the JSON Schema of job files) and
//! `harvest completions`.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

pub fn schema() -> anyhow::Result<()> {
    sayln!("{}", serde_json::to_string_pretty(&harvest::pipeline::json_schema()).expect("a schema serializes"));
    Ok(())
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    // Written whole here: clap_complete panics on a write that fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "harvest", &mut script);
    say!("{}", String::from_utf8_lossy(&script));
    Ok(())
}
