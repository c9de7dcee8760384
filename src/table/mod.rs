//! Delta Lake tables (`format = "delta"`): the job's output folder is a Delta table whose data
//! files are the Parquet parts harvest writes, and each completed run is one version of it.
//!
//! A run writes its parts and its manifest as any Parquet run does; then [`commit`] puts the
//! newest complete run into the table in one commit through delta-rs: its parts added (in
//! replace mode every earlier file removed, which time travel keeps), the table's schema
//! merged with the run's, and a Delta transaction identifier (`txn`: app id `harvest/<job>`,
//! version the run's name as a number, [`txn_version`]). Run names only grow (each is later
//! than every manifest), so a table whose `txn` for the job is at or past a run's version
//! holds that run: a commit retried after a crash, or raced by a second worker, is recognised
//! and never applied twice. A run that died between its manifest and its commit is committed
//! by the next run before it starts.
//!
//! delta-rs gets harvest's own object store (the local filesystem, or the job's bucket), not
//! its cloud features; commits are conditional puts of `_delta_log/<version>.json`, so
//! several writers never overwrite one another.

mod conform;
pub mod failpoints;
mod merge;
mod schema;
mod upkeep;

pub use upkeep::{describe, files, optimize, optimize_at, vacuum};

use std::sync::Arc;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, MetadataExt, Transaction};
use deltalake::logstore::{default_logstore, StorageConfig};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

use crate::error::Error;
use crate::manifest::{self, Completed};
use crate::output::Layout;
use crate::plan::{Format, Mode, Plan};
use crate::store::Store;

/// Run a table call to completion from synchronous code (`status`, `finalize`), on harvest's
/// multi-threaded runtime.
pub fn blocking<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// The table's `txn` application id for job `name`.
pub fn app_id(name: &str) -> String {
    format!("harvest/{name}")
}

/// The Delta transaction version of run `run`: its sortable name as a number
/// (`20261127T221500Z` is 20261127221500), growing from run to run.
pub fn txn_version(run: &str) -> Option<i64> {
    let digits: String = run.chars().filter(|c| *c != 'T' && *c != 'Z').collect();
    match digits.len() == 14 && digits.bytes().all(|b| b.is_ascii_digit()) {
        true => digits.parse().ok(),
        false => None,
    }
}

/// The Delta table at `layout`'s output, not loaded yet: delta-rs on harvest's store.
pub fn at(layout: &Layout) -> Result<DeltaTable, Error> {
    let (root, location): (Arc<dyn ObjectStore>, url::Url) = match &layout.store {
        Store::Local(folder) => {
            let folder = std::path::absolute(folder).map_err(|e| Error::io("finding the output folder", e))?;
            let url = url::Url::from_directory_path(&folder)
                .map_err(|()| Error::Usage(format!("{} cannot be a table's location", folder.display())))?;
            (Arc::new(object_store::local::LocalFileSystem::new()), url)
        }
        Store::Object(bucket) => bucket.table_location().map_err(Error::Usage)?,
    };
    let root: Arc<dyn ObjectStore> = Arc::new(failpoints::Failpoints::new(root));
    let prefix = object_store::path::Path::from_url_path(location.path())
        .map_err(|e| Error::Usage(format!("{location} cannot be a table's location: {e}")))?;
    let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(root.clone(), prefix));
    Ok(DeltaTable::new(default_logstore(prefixed, root, &location, &StorageConfig::default())))
}

/// Load the table's newest version; `false` when there is no table yet.
pub async fn load(table: &mut DeltaTable, layout: &Layout) -> Result<bool, Error> {
    let failed = |e| fail(layout, "reading", e);
    if !table.log_store().is_delta_table_location().await.map_err(failed)? {
        return Ok(false);
    }
    table.load().await.map_err(failed)?;
    Ok(true)
}

/// The run version the table holds for job `name` (its `txn`), if any.
pub async fn committed(table: &DeltaTable, layout: &Layout, name: &str) -> Result<Option<i64>, Error> {
    let snapshot = table.snapshot().map_err(|e| fail(layout, "reading", e))?;
    snapshot.transaction_version(&table.log_store(), app_id(name)).await.map_err(|e| fail(layout, "reading", e))
}

fn fail(layout: &Layout, doing: &str, e: DeltaTableError) -> Error {
    Error::Table { table: layout.display(""), doing: doing.to_string(), source: Box::new(e) }
}

/// Before a run starts: a table that is there must take what harvest writes (a protocol
/// delta-rs can write, and in append mode columns in types harvest writes), so that a table
/// made by another tool is refused before any request, untouched.
pub async fn check_writable(plan: &Plan, layout: &Layout) -> Result<(), Error> {
    let mut table = at(layout)?;
    if !load(&mut table, layout).await? {
        return Ok(());
    }
    let snapshot = table.snapshot().map_err(|e| fail(layout, "reading", e))?;
    deltalake::kernel::transaction::PROTOCOL
        .can_write_to(snapshot)
        .map_err(|e| fail(layout, "writing to", DeltaTableError::from(e)))?;
    if plan.output.mode != Mode::Replace {
        schema::ty_of_table(&snapshot.schema()).map_err(|problem| {
            Error::Records(format!("job {} cannot append to the table {}: {problem}", plan.name, layout.display("")))
        })?;
    }
    Ok(())
}

/// How a run went into the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// This commit made it the table's version `version`.
    Now { run: String, version: u64 },
    /// An earlier commit holds it already (the table's `txn` for the job is at or past it).
    Before { run: String },
}

/// Commit the newest complete run of `plan`'s output into its table, in one version, unless
/// the table holds it already. Nothing to do when that run is no Delta run (a job that wrote
/// Parquet files before) or there is none.
pub async fn commit(plan: &Plan, layout: &Layout) -> Result<Option<Committed>, Error> {
    let Some(run) = manifest::latest(layout)? else { return Ok(None) };
    if run.format != Some(Format::Delta) {
        return Ok(None);
    }
    let version = txn_version(&run.run).ok_or_else(|| Error::Output {
        path: layout.display(crate::output::RUNS),
        problem: format!("names run {:?}, which is not a run name harvest gives", run.run),
    })?;
    // A second worker may commit the same run at the same moment: delta-rs refuses the
    // later commit (the same txn app id), and the table is read again.
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let mut table = at(layout)?;
        let exists = load(&mut table, layout).await?;
        if exists && committed(&table, layout, &plan.name).await?.is_some_and(|v| v >= version) {
            tracing::info!("run {} is in the table already", run.run);
            settle(plan, layout, &run)?;
            return Ok(Some(Committed::Before { run: run.run }));
        }
        layout.confirm_lease()?;
        let target = target(plan, layout, &table, exists, &run)?;
        let committed = match plan.output.mode {
            Mode::Merge => {
                let properties = properties(plan, &run, version);
                match merge::commit_run(plan, layout, table, exists, &run, &target, properties).await {
                    Ok(None) => {
                        tracing::info!("run {} brought no records, and there is no table yet", run.run);
                        settle(plan, layout, &run)?;
                        return Ok(None);
                    }
                    Ok(Some(version)) => Ok(version),
                    Err(e) => Err(e),
                }
            }
            Mode::Append | Mode::Replace => {
                let parts = conformed(plan, layout, &run, &target)?;
                commit_run(plan, table, exists, &run, version, target, parts)
                    .await
                    .map_err(|e| fail(layout, &format!("committing run {} to", run.run), e))
            }
        };
        match committed {
            Ok(table_version) => {
                tracing::info!("run {} is version {table_version} of the table {}", run.run, layout.display(""));
                settle(plan, layout, &run)?;
                return Ok(Some(Committed::Now { run: run.run, version: table_version }));
            }
            Err(Error::Table { source, .. }) if attempt < ATTEMPTS && raced(&*source) => {
                tracing::info!("another commit came first ({source}); reading the table again");
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last attempt returns")
}

/// `run --fresh` on a Delta job: a complete run its table does not hold (a commit refused for
/// good, a key whose type changed) is discarded, its manifests first, then its parts. Its
/// incremental marks were never saved (see [`settle`]), so the run after asks for its records
/// again: nothing is lost.
pub async fn discard_uncommitted(plan: &Plan, layout: &Layout) -> Result<(), Error> {
    let io = |e| Error::io("discarding a run its table does not hold", e);
    let Some((name, manifests)) = crate::output::latest_complete(layout).map_err(io)? else { return Ok(()) };
    let Some(run) = manifest::latest(layout)?.filter(|run| run.format == Some(Format::Delta)) else { return Ok(()) };
    let Some(version) = txn_version(&name) else { return Ok(()) };
    let mut table = at(layout)?;
    if load(&mut table, layout).await? && committed(&table, layout, &plan.name).await?.is_some_and(|v| v >= version) {
        return Ok(());
    }
    for rel in &manifests {
        layout.store.delete(rel).map_err(io)?;
    }
    for part in &run.parts {
        layout.remove_part(&part.file, false).map_err(io)?;
    }
    tracing::warn!(
        "--fresh: discarded run {name} ({} records), which the table {} does not hold; its records are fetched again",
        run.records,
        layout.display("")
    );
    Ok(())
}

/// What follows once the table holds `run` (or a run brought nothing to a table not made
/// yet): its incremental marks are saved (not before, so that a run whose commit is refused
/// leaves the marks where they were), and its staged parts go.
fn settle(plan: &Plan, layout: &Layout, run: &Completed) -> Result<(), Error> {
    if plan.incremental.is_some() && !run.marks.is_empty() {
        crate::incremental::Marks::save_committed(layout, &plan.redactor, &run.marks)?;
    }
    unstage(plan, layout, &run.run)
}

/// A merge run's staged parts, and every earlier run's, go once the table holds the run:
/// their records are in the table's own files now.
fn unstage(plan: &Plan, layout: &Layout, run: &str) -> Result<(), Error> {
    if plan.output.mode != Mode::Merge {
        return Ok(());
    }
    let io = |e| Error::io("removing the merged parts from _harvest/staged", e);
    for (name, open) in layout.parts().map_err(io)? {
        if open || crate::output::PartName::parse(&name).is_none_or(|part| part.run > run) {
            continue;
        }
        layout.remove_part(&name, false).map_err(io)?;
        crate::output::failpoint("unstage");
    }
    Ok(())
}

/// What a run's commit carries: its `txn`, and what harvest says of it in the commit's info.
fn properties(plan: &Plan, run: &Completed, version: i64) -> CommitProperties {
    let now = chrono::Utc::now().timestamp_millis();
    CommitProperties::default()
        .with_application_transaction(Transaction::new_with_last_update(app_id(&plan.name), version, Some(now)))
        .with_metadata([(
            "harvest".to_string(),
            serde_json::json!({ "job": plan.name, "run": run.run, "records": run.records, "pages": run.pages }),
        )])
}

/// A commit that lost a race with another writer's commit of the same version or app id.
fn raced(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let Some(e) = e.downcast_ref::<DeltaTableError>() else { return false };
    use deltalake::kernel::transaction::TransactionError;
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// The table's schema after run `run`, and the types its records are written in. In replace
/// mode the version holds the run's files only: the run's own schema is the table's. In
/// merge mode a primary key field must keep its type.
fn target(
    plan: &Plan,
    layout: &Layout,
    table: &DeltaTable,
    exists: bool,
    run: &Completed,
) -> Result<schema::Target, Error> {
    let refused = |problem: String| {
        Error::Records(format!(
            "run {} cannot go into the table {}: {problem}; the table is untouched, the run's parts are kept",
            run.run,
            layout.display("")
        ))
    };
    let table_schema = match (exists, plan.output.mode) {
        (true, Mode::Append | Mode::Merge) => Some(table.snapshot().map_err(|e| fail(layout, "reading", e))?.schema()),
        _ => None,
    };
    let run_ty = schema::of_parts(&run.parts).map_err(refused)?;
    if let (Some(table), Some(merge)) = (&table_schema, &plan.output.merge) {
        schema::same_keys(table, &run_ty, &merge.primary_key).map_err(|problem| {
            Error::Usage(format!(
                "run {} cannot be merged into the table {}: {problem}; the table is untouched, the run's parts are kept",
                run.run,
                layout.display("")
            ))
        })?;
    }
    schema::target(table_schema.as_deref(), &run_ty).map_err(refused)
}

/// The run's parts, each in the target's types (a part written before the run's schema
/// widened is written again).
fn conformed(
    plan: &Plan,
    layout: &Layout,
    run: &Completed,
    target: &schema::Target,
) -> Result<Vec<crate::output::PartInfo>, Error> {
    let mut parts = Vec::with_capacity(run.parts.len());
    for part in &run.parts {
        let own = schema::of_part(part).map_err(|problem| Error::Records(format!("run {}: {problem}", run.run)))?;
        match schema::differs(&own, &target.ty) {
            true => parts.push(conform::rewrite(layout, &plan.output, part, &target.ty)?),
            false => parts.push(part.clone()),
        }
    }
    Ok(parts)
}

/// One commit of `run`: its parts added, the schema `target`'s, in replace mode every file of
/// the table's current version removed. Returns the table version it made.
async fn commit_run(
    plan: &Plan,
    table: DeltaTable,
    exists: bool,
    run: &Completed,
    version: i64,
    target: schema::Target,
    parts: Vec<crate::output::PartInfo>,
) -> Result<u64, DeltaTableError> {
    let now = chrono::Utc::now().timestamp_millis();
    let adds: Vec<Action> = parts.iter().map(|part| Action::Add(add(&part.file, part.bytes, part.rows, now))).collect();
    let properties = properties(plan, run, version);
    if !exists {
        let created = CreateBuilder::new()
            .with_log_store(table.log_store())
            .with_columns(target.schema.fields().cloned())
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_actions(adds)
            .with_commit_properties(properties)
            .await?;
        return Ok(created.version().unwrap_or_default() as u64);
    }
    let snapshot = table.snapshot()?;
    let mut actions = Vec::new();
    if target.changed {
        actions.push(Action::Metadata(snapshot.metadata().clone().with_schema(&target.schema)?));
    }
    let mode = match plan.output.mode {
        Mode::Replace => {
            let log_store = table.log_store();
            let removes: Vec<Action> = snapshot
                .snapshot()
                .file_views(log_store.as_ref(), None)
                .map_ok(|file| Action::Remove(file.remove_action(true)))
                .try_collect()
                .await?;
            actions.extend(removes);
            SaveMode::Overwrite
        }
        Mode::Append => SaveMode::Append,
        Mode::Merge => unreachable!("a merge run is committed by merge::commit_run"),
    };
    actions.extend(adds);
    let operation = DeltaOperation::Write { mode, partition_by: None, predicate: None };
    let done = CommitBuilder::from(properties)
        .with_actions(actions)
        .build(Some(snapshot as &dyn TableReference), table.log_store(), operation)
        .await?;
    Ok(done.version() as u64)
}

/// The Add action of part `file`: its size, and its row count as the file's statistics.
fn add(file: &str, bytes: u64, rows: u64, now: i64) -> Add {
    Add {
        path: file.to_string(),
        size: bytes as i64,
        modification_time: now,
        data_change: true,
        stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
        ..Default::default()
    }
}
