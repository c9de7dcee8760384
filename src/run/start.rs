//! Before a run: resume the unfinished run from its checkpoint, cutting away what a crash wrote
//! past it, or start fresh, removing what a run that never completed left.

use super::shard_words;
use crate::checkpoint::{self, Checkpoint, Fingerprint};
use crate::error::Error;
use crate::output::{complete_runs, manifest_of, Layout, PartName};
use crate::plan::{Format, Mode, Plan};

/// Before a run: `--fresh` discards an unfinished run; a checkpoint of a run that completed
/// but died before tidying up is dropped; a usable checkpoint (the same job) is returned, with
/// what its process wrote past it cut away; without one, parts no manifest lists are removed
/// and, in replace mode, a replacement that died half way is finished.
pub(super) fn resume_or_start(
    plan: &Plan,
    layout: &Layout,
    fingerprint: &Fingerprint,
    fresh: bool,
    claimed: Option<&str>,
) -> Result<Option<Checkpoint>, Error> {
    if fresh {
        discard_unfinished(layout)?;
    }
    let mut resumed = checkpoint::load(layout, &plan.job_file, &plan.redactor)?;
    let completed = match &resumed {
        Some(saved) => {
            layout.exists(&layout.manifest(&saved.run)).map_err(|e| Error::io("reading the manifests", e))?
        }
        None => false,
    };
    if completed {
        // That run completed (its manifest is durable) and died before tidying up.
        checkpoint::remove(layout)?;
        resumed = None;
    }
    if let (Some(saved), Some(run)) = (&resumed, claimed) {
        if saved.run != run {
            // This shard's place in an earlier run that never completed: the new run id
            // starts over, and what that run wrote here goes.
            tracing::warn!(
                "{} of run {} stopped unfinished; run {run} starts over without it",
                shard_words(layout),
                saved.run
            );
            discard_unfinished(layout)?;
            resumed = None;
        }
    }
    if let Some(saved) = resumed.as_ref().filter(|saved| saved.shard != layout.shard) {
        return Err(Error::Checkpoint(format!(
            "{} belongs to {}, not to {}; `harvest run {} --fresh` discards it",
            layout.display(&layout.checkpoint_rel()),
            saved.shard.map_or("an unsharded run".into(), |s| format!("shard {} of {}", s.index, s.count)),
            shard_words(layout),
            plan.job_file.display()
        )));
    }
    match &resumed {
        Some(saved) => {
            let changes = saved.fingerprint.changes(fingerprint);
            if !changes.is_empty() {
                return Err(Error::Checkpoint(format!(
                    "the job changed since its run {} stopped unfinished ({} differ{}); \
                     `harvest run {} --fresh` discards that run and starts over",
                    saved.run,
                    changes.join(", "),
                    if changes.len() == 1 { "s" } else { "" },
                    plan.job_file.display()
                )));
            }
            tidy_for_resume(layout, saved)?;
        }
        None => {
            // A run that died before its first checkpoint left nothing to go on from.
            discard_unfinished(layout)?;
            // A table keeps replaced files for time travel: `vacuum` removes them.
            if plan.output.mode == Mode::Replace && plan.output.format != Format::Delta && layout.shard.is_none() {
                finish_replacing(layout)?;
            }
        }
    }
    Ok(resumed)
}

/// Before a resume: whatever the crashed process wrote past its checkpoint goes. On the local
/// filesystem the open part is cut back to its checkpointed length (moved back first if it was
/// already published); in object storage a checkpoint closes its part, so there is none. Other
/// parts being written, and parts of the run that the checkpoint does not list, are removed.
fn tidy_for_resume(layout: &Layout, saved: &Checkpoint) -> Result<(), Error> {
    let io = |what: &str, e| Error::io(format!("{what} before resuming"), e);
    let open = saved.position.open.as_ref();
    if let Some(open) = open {
        let temp = layout.open_dir().join(crate::output::file_name(&open.file));
        let published = layout.root.join(&open.file);
        if !temp.exists() && published.exists() {
            std::fs::rename(&published, &temp).map_err(|e| io("taking back the open part", e))?;
        }
        let file = std::fs::OpenOptions::new().write(true).open(&temp).map_err(|e| io("opening the open part", e))?;
        file.set_len(open.len).map_err(|e| io("truncating the open part", e))?;
        file.sync_all().map_err(|e| io("syncing the open part", e))?;
    }
    let prefix = layout.part_rel(&format!("part-{}-", layout.unit(&saved.run)));
    let listed =
        |name: &str| saved.position.parts.iter().any(|p| p.file == name) || open.is_some_and(|o| o.file == name);
    for (name, in_open) in layout.parts().map_err(|e| io("listing the output", e))? {
        let stray = match in_open {
            // Parts of this run (or shard) being written: all but the open one.
            true => {
                PartName::parse(&name).is_some_and(|part| layout.is_own(&part)) && open.is_none_or(|o| o.file != name)
            }
            // Published: this run's parts the checkpoint does not list.
            false => name.starts_with(&prefix) && !listed(&name),
        };
        if stray {
            tracing::debug!("removing {name} (written after the checkpoint)");
            layout.remove_part(&name, in_open).map_err(|e| io("removing a stray part", e))?;
        }
    }
    sync(layout).map_err(|e| io("syncing the output", e))
}

/// Remove the checkpoint and every part of a run that has no manifest: an unfinished run
/// (`--fresh`), or one that died before its first checkpoint. A shard removes only its own.
pub(super) fn discard_unfinished(layout: &Layout) -> Result<(), Error> {
    let io = |e| Error::io("discarding the unfinished run", e);
    checkpoint::remove(layout)?;
    for (name, in_open) in layout.parts().map_err(io)? {
        let Some(part) = PartName::parse(&name).filter(|part| layout.is_own(part)) else { continue };
        if !layout.exists(&manifest_of(&part.unit())).map_err(io)? {
            tracing::info!("removing {name} (its run never completed)");
            layout.remove_part(&name, in_open).map_err(io)?;
        }
    }
    sync(layout).map_err(io)
}

/// Replace mode: a run that completed but died before removing the parts it replaces; its
/// manifest is durable, so the removal is finished now.
fn finish_replacing(layout: &Layout) -> Result<(), Error> {
    let complete = complete_runs(layout).map_err(|e| Error::io("listing the run manifests", e))?;
    if let Some(newest) = complete.last() {
        let removed = layout.remove_other_runs(newest).map_err(|e| Error::io("removing replaced parts", e))?;
        if removed > 0 {
            tracing::info!("removed {removed} part file(s) that run {newest} replaced");
        }
    }
    Ok(())
}

/// The local folders are synced once their files are removed.
fn sync(layout: &Layout) -> std::io::Result<()> {
    if layout.store.is_local() {
        crate::output::fsync_dir(&layout.parts_root())?;
    }
    crate::output::fsync_dir(&layout.open_dir())
}
