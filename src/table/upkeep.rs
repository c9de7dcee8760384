//! Keeping a table in shape: `harvest optimize` (small files compacted, delta-rs's OPTIMIZE),
//! `harvest vacuum` (files no version within the retention refers to removed), and what
//! `harvest status` says of the table.

use std::time::Duration;

use futures::TryStreamExt;

use super::{at, fail, load};
use crate::error::Error;
use crate::output::{Layout, Lock};
use crate::plan::{Format, Plan};

/// The table of `plan`'s output, loaded; a job that writes no table, or a table not made yet,
/// is refused by name.
async fn table_of(plan: &Plan, layout: &Layout) -> Result<deltalake::DeltaTable, Error> {
    if plan.output.format != Format::Delta {
        return Err(Error::Usage(format!(
            "job {} writes {} files, not a table: only format = \"delta\" has one",
            plan.name,
            serde_json::to_value(plan.output.format).expect("a format serializes").as_str().unwrap_or("?")
        )));
    }
    let mut table = at(layout)?;
    if !load(&mut table, layout).await? {
        return Err(Error::Usage(format!(
            "{} is no table yet: no run of job {} completed",
            layout.display(""),
            plan.name
        )));
    }
    Ok(table)
}

/// Compact the table's small files into larger ones, in one version (readers of earlier
/// versions still see theirs until `vacuum`).
pub async fn optimize(plan: &Plan) -> Result<String, Error> {
    let layout = Layout::for_reading(plan)?;
    table_of(plan, &layout).await?;
    optimize_at(&layout).await
}

/// Compact the small files of the table at `layout`'s output.
pub async fn optimize_at(layout: &Layout) -> Result<String, Error> {
    let mut table = at(layout)?;
    load(&mut table, layout).await?;
    let (table, metrics) = table.optimize().await.map_err(|e| fail(layout, "optimizing", e))?;
    if metrics.num_files_removed == 0 {
        return Ok(format!("{}: nothing to compact", layout.display("")));
    }
    Ok(format!(
        "{}: compacted {} files into {} (version {})",
        layout.display(""),
        metrics.num_files_removed,
        metrics.num_files_added,
        table.version().unwrap_or_default()
    ))
}

/// Remove the files no version younger than `retain` refers to: files earlier versions
/// removed, and files no version ever had (a crashed run's). Refused while a run holds the
/// job or an unfinished run waits to be resumed: its parts are in no version yet.
pub async fn vacuum(plan: &Plan, retain: Duration, dry_run: bool) -> Result<String, Error> {
    let layout = Layout::for_reading(plan)?;
    let table = table_of(plan, &layout).await?;
    let _lock: Lock = match layout.lock(plan.output.store.lease_ttl)? {
        Ok(lock) => lock,
        Err(crate::output::HeldBy(holder)) => {
            return Err(Error::Locked { name: plan.name.clone(), lock: layout.display(&layout.lock_rel()), holder })
        }
    };
    if layout.exists(&layout.checkpoint_rel()).map_err(|e| Error::io("reading the checkpoint", e))? {
        return Err(Error::Usage(format!(
            "job {} has an unfinished run whose parts are in no version yet: `harvest run {}` completes it \
             (or `--fresh` discards it) before a vacuum",
            plan.name,
            plan.job_file.display()
        )));
    }
    let retention = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| fail(&layout, "vacuuming", e))?;
    let files = metrics.files_deleted.len();
    Ok(match dry_run {
        true => format!("{}: {files} file(s) would be removed", layout.display("")),
        false => format!("{}: removed {files} file(s)", layout.display("")),
    })
}

/// The data files of the table's current version with their rows, in the log's order; `None`
/// when there is no table. What another job reads of a Delta job's output: its table as it
/// stands, not its last run's parts (a merge's are staged and gone; optimize replaces them).
pub async fn files(layout: &Layout) -> Result<Option<Vec<(String, u64)>>, Error> {
    let mut table = at(layout)?;
    if !load(&mut table, layout).await? {
        return Ok(None);
    }
    let snapshot = table.snapshot().map_err(|e| fail(layout, "reading", e))?;
    let log_store = table.log_store();
    let mut views = snapshot.snapshot().file_views(log_store.as_ref(), None);
    let mut files = Vec::new();
    while let Some(file) = views.try_next().await.map_err(|e| fail(layout, "reading", e))? {
        files.push((file.path().into_owned(), file.num_records().unwrap_or_default() as u64));
    }
    Ok(Some(files))
}

/// The table's lines of `harvest status`: its version, files and rows, and its newest versions.
pub async fn describe(plan: &Plan, layout: &Layout) -> Result<Option<String>, Error> {
    let mut table = at(layout)?;
    if !load(&mut table, layout).await? {
        return Ok(None);
    }
    let snapshot = table.snapshot().map_err(|e| fail(layout, "reading", e))?;
    let version = snapshot.version();
    let (mut files, mut rows) = (0u64, 0u64);
    let log_store = table.log_store();
    let mut views = snapshot.snapshot().file_views(log_store.as_ref(), None);
    while let Some(file) = views.try_next().await.map_err(|e| fail(layout, "reading", e))? {
        files += 1;
        rows += file.num_records().unwrap_or_default() as u64;
    }
    drop(views);
    let mut out = format!("table: Delta Lake, version {version}, {files} file(s), {rows} rows\n");
    let history: Vec<_> = table.history(Some(5)).try_collect().await.map_err(|e| fail(layout, "reading", e))?;
    for (back, commit) in history.iter().enumerate() {
        let operation = commit.operation.as_deref().unwrap_or("?");
        let run = commit.info.get("harvest").filter(|h| h["job"] == plan.name.as_str());
        let what = match run {
            Some(run) => {
                format!("run {} ({} records, {operation})", run["run"].as_str().unwrap_or("?"), run["records"])
            }
            None => operation.to_string(),
        };
        out.push_str(&format!("  version {}: {what}\n", version.saturating_sub(back as u64)));
    }
    Ok(Some(out))
}
