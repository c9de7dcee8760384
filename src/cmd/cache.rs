//! `harvest cache clear`: the response cache of `run --cache`.

use harvest::error::Error;

use crate::cli::CacheCommand;

pub fn cache(command: CacheCommand) -> anyhow::Result<()> {
    match command {
        CacheCommand::Clear => {
            let (dir, removed) = harvest::cache::clear().map_err(|e| Error::io("clearing the response cache", e))?;
            let plural = if removed == 1 { "" } else { "s" };
            sayln!("removed {removed} cached response{plural} from {}", dir.display());
        }
    }
    Ok(())
}
