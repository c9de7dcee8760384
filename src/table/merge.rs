//! `mode = "merge"`: a run's records upserted into the table by primary key, in one version,
//! through delta-rs's MERGE (DataFusion).
//!
//! A merge run's parts wait under `_harvest/staged/`, out of the table. At the commit they are
//! read in the run's order (parts in manifest order, rows in part order) and numbered, so that
//! "the later record" is exact; the run is reduced to one record per key (the highest
//! `[incremental]` field value, then the latest in the API's order) in bounded memory, the
//! sort spilling to disk, into a Parquet file of its own; then one MERGE of that file: a key
//! whose winning record is deleted (`deleted` is true) is deleted, a row whose record changed
//! is updated (with `[incremental]`, only by a record at least as new as the row), a new key
//! inserted. Rows that did not change are left alone, so the files holding only such rows are
//! not written again. The first run into no table writes the reduced records as its first
//! version. Either way the commit carries the run's `txn`, and a run that changed nothing is
//! a version too (holding its `txn` only), so that each complete run is one version.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType as ArrowType, Field, Schema, SchemaRef};
use deltalake::datafusion::catalog::streaming::StreamingTable;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::{SendableRecordBatchStream, TaskContext};
use deltalake::datafusion::functions::core::expr_ext::FieldAccessor;
use deltalake::datafusion::functions_window::expr_fn::row_number;
use deltalake::datafusion::logical_expr::{binary_expr, Expr, ExprFunctionExt, Operator};
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::streaming::PartitionStream;
use deltalake::datafusion::prelude::{lit, DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::operations::write::WriteBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

use super::schema::Target;
use crate::error::Error;
use crate::manifest::Completed;
use crate::output::{Layout, PartInfo};
use crate::plan::{MergePlan, Plan};
use crate::schema::Ty;

/// The column that numbers a run's records in the API's order while it is reduced.
const ORDINAL: &str = "_harvest_ordinal";
/// The rank of a record among its key's.
const RANK: &str = "_harvest_rank";

/// Merge run `run` into the table: the version it made, or `None` for a run without records
/// while there is no table yet (a table needs columns).
pub(super) async fn commit_run(
    plan: &Plan,
    layout: &Layout,
    table: DeltaTable,
    exists: bool,
    run: &Completed,
    target: &Target,
    properties: CommitProperties,
) -> Result<Option<u64>, Error> {
    let merge = plan.output.merge.as_ref().expect("a merge plan in merge mode");
    let failed = |e: DeltaTableError| super::fail(layout, &format!("merging run {} into", run.run), e);
    if run.records == 0 {
        return match exists {
            true => only_txn(table, properties).await.map(Some).map_err(failed),
            false => Ok(None),
        };
    }
    let ty = super::schema::stored(&target.ty);
    let table_ty = match exists {
        true => Some(super::schema::ty_of_table(&table.snapshot().map_err(failed)?.schema()).map_err(Error::Records)?),
        false => None,
    };
    let columns = Columns::of(plan, merge, &ty, table_ty.as_ref(), layout)?;
    let scratch = Scratch::new(layout, &run.run)?;
    let records = reduced(plan, layout, run, &ty, &columns, &scratch).await?;
    let writer = crate::sink::parquet::properties(plan.output.compression, plan.output.parquet.row_group_size);
    if !exists {
        let kept = match &columns.deleted {
            Some(deleted) => records.filter(deleted.at(None).is_not_true()).map_err(datafusion)?,
            None => records,
        };
        let written = WriteBuilder::new(table.log_store(), None)
            .with_input_plan(kept.logical_plan().clone())
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_writer_properties(writer)
            .with_commit_properties(properties)
            .await
            .map_err(failed)?;
        return Ok(Some(written.version().unwrap_or_default() as u64));
    }
    let before = table.version();
    let source = |name: &str| column("source", name);
    let target_col = |name: &str| column("target", name);
    let on = merge
        .primary_key
        .iter()
        .map(|key| target_col(key).eq(source(key)))
        .reduce(Expr::and)
        .expect("a primary key has a field");
    let newer = columns.cursor.as_ref().map(|path| {
        let (source, target) = (path.of("source"), path.of("target"));
        source.lt(target).is_not_true()
    });
    let deleted = columns.deleted.as_ref().map(|deleted| deleted.of("source").is_true());
    let changed = columns.changed();
    let all = columns.all.clone();
    let mut builder = table
        .merge(records, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true)
        .with_writer_properties(writer.clone())
        .with_commit_properties(properties.clone());
    if let Some(deleted) = &deleted {
        let when = with(deleted.clone(), newer.clone());
        builder = builder.when_matched_delete(|delete| delete.predicate(when)).map_err(failed)?;
    }
    let update_when = with(changed, newer.clone());
    builder = builder
        .when_matched_update(|update| {
            all.iter().fold(update.predicate(update_when), |update, name| {
                update.update(Column::new_unqualified(name), source(name))
            })
        })
        .map_err(failed)?;
    let insert_when = deleted.clone().map(|deleted| !deleted);
    builder = builder
        .when_not_matched_insert(|insert| {
            let insert = match insert_when {
                Some(when) => insert.predicate(when),
                None => insert,
            };
            all.iter().fold(insert, |insert, name| insert.set(Column::new_unqualified(name), source(name)))
        })
        .map_err(failed)?;
    let (merged, metrics) = builder.await.map_err(failed)?;
    tracing::info!(
        "run {}: {} row(s) inserted, {} updated, {} deleted, {} file(s) written, {} removed",
        run.run,
        metrics.num_target_rows_inserted,
        metrics.num_target_rows_updated,
        metrics.num_target_rows_deleted,
        metrics.num_target_files_added,
        metrics.num_target_files_removed
    );
    match merged.version() {
        Some(version) if Some(version) != before => Ok(Some(version)),
        // delta-rs makes no version when nothing changed: the run's version holds its txn.
        _ => only_txn(merged, properties).await.map(Some).map_err(failed),
    }
}

/// A version that holds the run's `txn` and changes no row: a run that brought nothing new.
async fn only_txn(table: DeltaTable, properties: CommitProperties) -> Result<u64, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let operation = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
    let done = CommitBuilder::from(properties)
        .build(Some(snapshot as &dyn TableReference), table.log_store(), operation)
        .await?;
    Ok(done.version() as u64)
}

/// `a AND b`, or `a` alone.
fn with(a: Expr, b: Option<Expr>) -> Expr {
    match b {
        Some(b) => a.and(b),
        None => a,
    }
}

/// Column `name` of the merge's `side` (`source` or `target`), taken as it is spelled.
fn column(side: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(side), name))
}

fn datafusion(e: deltalake::datafusion::error::DataFusionError) -> Error {
    Error::Records(format!("reducing the run to one record per key: {e}"))
}

/// A field of a record by names (`updated_at`, or `meta`, `deleted` for `$.meta.deleted`).
#[derive(Clone)]
struct FieldPath(Vec<String>);

impl FieldPath {
    /// The path of `path` in a record of type `ty`, if each name is there (a field only ever
    /// null is in no column).
    fn of_path(path: &crate::jsonpath::JsonPath, ty: &Ty) -> Option<(FieldPath, Ty)> {
        let names = path.field_names()?;
        let mut at = ty;
        for name in &names {
            let Ty::Struct(s) = at else { return None };
            at = &s.fields.iter().find(|f| f.name == *name)?.ty;
        }
        Some((FieldPath(names.iter().map(|n| n.to_string()).collect()), at.clone()))
    }

    /// The field in the table aliased `side` (`source` or `target`).
    fn of(&self, side: &str) -> Expr {
        self.at(Some(side))
    }

    /// The field in the table aliased `side`, or unqualified for `None`.
    fn at(&self, side: Option<&str>) -> Expr {
        let (first, rest) = self.0.split_first().expect("a path has a name");
        let top = Expr::Column(Column::new(side, first.as_str()));
        rest.iter().fold(top, |expr, name| expr.field(name.as_str()))
    }
}

/// The columns a merge reads and writes.
struct Columns {
    /// Every column of the table after the merge.
    all: Vec<String>,
    /// Columns a row's change is judged by (in the table before, in the same type).
    compared: Vec<String>,
    /// Columns new to the table, or of a type that grew.
    grown: Vec<String>,
    /// `[incremental]`'s field, where there is a column for it.
    cursor: Option<FieldPath>,
    /// `deleted`'s field, where there is a column for it.
    deleted: Option<FieldPath>,
}

impl Columns {
    fn of(plan: &Plan, merge: &MergePlan, ty: &Ty, table: Option<&Ty>, layout: &Layout) -> Result<Columns, Error> {
        let Ty::Struct(record) = ty else { unreachable!("a run's type is a record") };
        let refused = |problem: String| {
            Error::Usage(format!("job {} cannot merge into the table {}: {problem}", plan.name, layout.display("")))
        };
        for key in &merge.primary_key {
            let Some(field) = record.fields.iter().find(|f| f.name == *key) else {
                return Err(refused(format!("no record of the run has a value for {key:?} of primary_key")));
            };
            if !matches!(field.ty, Ty::Int { .. } | Ty::Str | Ty::Bool | Ty::Timestamp | Ty::Float) {
                return Err(refused(format!(
                    "{key:?} of primary_key holds {}, not a number, text or boolean",
                    field.ty.to_arrow()
                )));
            }
        }
        let all: Vec<String> = record.fields.iter().map(|f| f.name.clone()).collect();
        let cursor = plan
            .incremental
            .as_ref()
            .and_then(|incremental| FieldPath::of_path(&incremental.field, ty))
            .map(|(path, _)| path);
        let deleted = match &merge.deleted {
            Some(path) => match FieldPath::of_path(path, ty) {
                Some((field, Ty::Bool)) => Some(field),
                Some((_, other)) => {
                    return Err(refused(format!(
                        "deleted = {:?} holds {}, where a boolean (true for a deleted record) is wanted",
                        path.as_str(),
                        other.to_arrow()
                    )))
                }
                None => None,
            },
            None => None,
        };
        // A row's change is judged on the columns it had, in their type; a column new to the
        // table (or a struct that gained fields) changes a row where the record has a value.
        let before = |name: &str| match table {
            Some(Ty::Struct(table)) => table.fields.iter().find(|f| f.name == name).map(|f| f.ty.to_arrow()),
            _ => None,
        };
        let (compared, grown) = record
            .fields
            .iter()
            .partition::<Vec<_>, _>(|field| before(&field.name).is_some_and(|t| t == field.ty.to_arrow()));
        let names = |fields: Vec<&crate::schema::Field>| fields.iter().map(|f| f.name.clone()).collect();
        Ok(Columns { compared: names(compared), grown: names(grown), all, cursor, deleted })
    }

    /// A row whose record differs from it in any column.
    fn changed(&self) -> Expr {
        let compared = self
            .compared
            .iter()
            .map(|name| binary_expr(column("target", name), Operator::IsDistinctFrom, column("source", name)));
        let grown = self.grown.iter().map(|name| column("source", name).is_not_null());
        compared.chain(grown).reduce(Expr::or).unwrap_or(lit(true))
    }
}

/// The memory the reduction of a run to one record per key may hold: past it DataFusion's sort
/// spills to disk under `_harvest/open/`, so that a first merge of millions of records takes
/// about the memory of one of thousands.
const REDUCE_MEMORY: usize = 256 << 20;

/// A run's reduction's own folder under `_harvest/open/` (its spill files, then the reduced
/// records), removed when dropped; one a crash left is removed when the next reduction starts.
struct Scratch(PathBuf);

impl Scratch {
    fn new(layout: &Layout, run: &str) -> Result<Scratch, Error> {
        let dir = layout.open_dir().join(format!("merge-{run}"));
        let io = |e| Error::io(format!("making {} to reduce the run in", dir.display()), e);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        std::fs::create_dir_all(dir.join("spill")).map_err(io)?;
        Ok(Scratch(dir))
    }

    fn spill(&self) -> PathBuf {
        self.0.join("spill")
    }

    /// The file of the reduced records.
    fn reduced(&self) -> PathBuf {
        self.0.join("reduced.parquet")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The run's records, one per key, in the table's types: its staged parts read in the run's
/// order and numbered, then ranked per key by the `[incremental]` field (highest first) and
/// that number (latest first). The reduction runs in bounded memory and writes the records it
/// keeps into `scratch`; the frame returned reads them from there.
async fn reduced(
    plan: &Plan,
    layout: &Layout,
    run: &Completed,
    ty: &Ty,
    columns: &Columns,
    scratch: &Scratch,
) -> Result<DataFrame, Error> {
    let schema: SchemaRef = Arc::new(ty.arrow_schema());
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ORDINAL, ArrowType::UInt64, false));
    let numbered = Arc::new(Schema::new(fields));
    let staged = StagedParts { layout: layout.clone(), parts: run.parts.clone(), ty: ty.clone(), schema: numbered };
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(REDUCE_MEMORY)))
        .with_temp_file_path(scratch.spill())
        .build_arc()
        .map_err(datafusion)?;
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    let table = StreamingTable::try_new(staged.schema.clone(), vec![Arc::new(staged)]).map_err(datafusion)?;
    let records = ctx.read_table(Arc::new(table)).map_err(datafusion)?;
    let merge = plan.output.merge.as_ref().expect("a merge plan");
    let keys: Vec<Expr> = merge.primary_key.iter().map(|k| Expr::Column(Column::new_unqualified(k))).collect();
    let mut order = Vec::new();
    if let Some(cursor) = &columns.cursor {
        order.push(cursor.at(None).sort(false, false));
    }
    order.push(Expr::Column(Column::new_unqualified(ORDINAL)).sort(false, false));
    let rank = row_number().partition_by(keys).order_by(order).build().map_err(datafusion)?.alias(RANK);
    let kept = records
        .window(vec![rank])
        .and_then(|df| df.filter(Expr::Column(Column::new_unqualified(RANK)).eq(lit(1u64))))
        .and_then(|df| df.drop_columns(&[RANK, ORDINAL]))
        .map_err(datafusion)?;
    // Written here, not by DataFusion's Parquet sink, whose buffers count against the pool
    // the sort spills to stay within: the writer holds a row group.
    let path = scratch.reduced();
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| Error::Parquet {
        context: format!("writing the reduced run to {}", path.display()),
        source: e,
    };
    let mut records = kept.execute_stream().await.map_err(datafusion)?;
    let file = std::fs::File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let properties = crate::sink::parquet::properties(plan.output.compression, plan.output.parquet.row_group_size);
    let mut writer = ArrowWriter::try_new(file, records.schema(), Some(properties)).map_err(|e| failed(Box::new(e)))?;
    while let Some(batch) = records.next().await {
        writer.write(&batch.map_err(datafusion)?).map_err(|e| failed(Box::new(e)))?;
    }
    writer.close().map_err(|e| failed(Box::new(e)))?;
    let path = path.to_str().ok_or_else(|| Error::Output {
        path: path.display().to_string(),
        problem: "is no UTF-8 path, which DataFusion reads".into(),
    })?;
    SessionContext::new().read_parquet(path, ParquetReadOptions::default().schema(&schema)).await.map_err(datafusion)
}

/// A merge run's staged parts as a DataFusion source: read part by part in the run's order
/// (off the async threads, a few batches ahead), in the table's types, each row numbered.
#[derive(Debug)]
struct StagedParts {
    layout: Layout,
    parts: Vec<PartInfo>,
    ty: Ty,
    schema: SchemaRef,
}

impl PartitionStream for StagedParts {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let (layout, parts, ty, schema) =
            (self.layout.clone(), self.parts.clone(), self.ty.clone(), self.schema.clone());
        tokio::task::spawn_blocking(move || {
            let mut ordinal = 0u64;
            for part in &parts {
                let mut numbered = |(mut columns, rows): (Vec<ArrayRef>, usize)| {
                    columns.push(Arc::new(UInt64Array::from_iter_values(ordinal..ordinal + rows as u64)) as ArrayRef);
                    ordinal += rows as u64;
                    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Parquet {
                        context: format!("numbering the rows of {} to merge them", layout.display(&part.file)),
                        source: Box::new(e),
                    })
                };
                let batches = match super::conform::batches(&layout, part, &ty, "to merge it") {
                    Ok(batches) => batches,
                    Err(e) => return drop(sender.blocking_send(Err(external(e)))),
                };
                for batch in batches {
                    let batch = batch.and_then(&mut numbered).map_err(external);
                    let failed = batch.is_err();
                    if sender.blocking_send(batch).is_err() || failed {
                        return;
                    }
                }
            }
        });
        let batches = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches))
    }
}

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
