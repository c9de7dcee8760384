//! Parts written before a run's schema widened (a column of integers that later held a float,
//! a field null at first) hold narrower types than the table: Delta wants each file in the
//! table's types (Polars refuses an Int64 file under a Float64 column), so such a part is
//! written again in the run's types before it is committed. The widenings are the ones schema
//! inference makes: null to any type, integer to float, timestamp to text, any value to JSON
//! text; a struct gains the fields it lacked (as nulls). Rare: most runs commit their parts as
//! they are.

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, ListArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::error::Error;
use crate::output::{Layout, PartInfo};
use crate::plan::OutputPlan;
use crate::schema::Ty;

/// The name a conformed copy of part `file` is published under: fixed, so that a commit
/// retried after a crash writes the same file again.
fn conformed_name(file: &str) -> String {
    match file.strip_suffix(".parquet") {
        Some(stem) => format!("{stem}-conformed.parquet"),
        None => format!("{file}-conformed"),
    }
}

/// Part `part` written again in `to`'s types and published beside it; the copy's name and
/// size.
pub fn rewrite(layout: &Layout, output: &OutputPlan, part: &PartInfo, to: &Ty) -> Result<PartInfo, Error> {
    const PURPOSE: &str = "in the table's types";
    let failed = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| Error::Parquet {
        context: format!("{what} {} {PURPOSE}", layout.display(&part.file)),
        source: e,
    };
    let read = batches(layout, part, to, PURPOSE)?;
    let name = conformed_name(&part.file);
    let local = layout.open_dir().join(&name);
    let file = std::fs::File::create(&local).map_err(|e| Error::io(format!("creating {}", local.display()), e))?;
    let schema = Arc::new(to.arrow_schema());
    let properties = crate::sink::parquet::properties(output.compression, output.parquet.row_group_size);
    let mut writer =
        ArrowWriter::try_new(file, schema.clone(), Some(properties)).map_err(|e| failed("writing", Box::new(e)))?;
    for batch in read {
        let (columns, _) = batch?;
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| failed("converting", Box::new(e)))?;
        writer.write(&batch).map_err(|e| failed("writing", Box::new(e)))?;
    }
    let file = writer.into_inner().map_err(|e| failed("writing", Box::new(e)))?;
    file.sync_all().map_err(|e| Error::io(format!("syncing {}", local.display()), e))?;
    let bytes = file.metadata().map_err(|e| Error::io(format!("reading {}", local.display()), e))?.len();
    layout.store.publish(&local, &name).map_err(|e| Error::io(format!("publishing {}", layout.display(&name)), e))?;
    Ok(PartInfo { file: name, bytes, ..part.clone() })
}

/// Part `part`'s rows batch by batch, each batch's columns in `to`'s types with its row
/// count; `purpose` says in errors what the part is read for ("to merge it").
pub fn batches<'a>(
    layout: &'a Layout,
    part: &'a PartInfo,
    to: &'a Ty,
    purpose: &'a str,
) -> Result<impl Iterator<Item = Result<(Vec<ArrayRef>, usize), Error>> + 'a, Error> {
    let failed = move |what: &str, e: Box<dyn std::error::Error + Send + Sync>| Error::Parquet {
        context: format!("{what} {} {purpose}", layout.display(&part.file)),
        source: e,
    };
    let bytes = layout
        .read(&part.file)
        .map_err(|e| Error::io(format!("reading {}", layout.display(&part.file)), e))?
        .ok_or_else(|| Error::Output { path: layout.display(&part.file), problem: "vanished".into() })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|builder| builder.build())
        .map_err(|e| failed("reading", Box::new(e)))?;
    Ok(reader.map(move |batch| {
        let batch = batch.map_err(|e| failed("reading", Box::new(e)))?;
        let columns = columns(&batch, to).map_err(|e| failed("converting", e.into()))?;
        Ok((columns, batch.num_rows()))
    }))
}

/// The columns of `batch` in the record type `to`.
fn columns(batch: &RecordBatch, to: &Ty) -> Result<Vec<ArrayRef>, String> {
    conform_struct(batch.columns(), batch.schema().fields(), to, batch.num_rows())
}

/// The columns of a struct (or a batch) of `rows` rows in the record type `to`: each of
/// `to`'s fields from the column of that name, or nulls where there is none.
fn conform_struct(columns: &[ArrayRef], fields: &Fields, to: &Ty, rows: usize) -> Result<Vec<ArrayRef>, String> {
    let Ty::Struct(target) = to else { return Err("a record is a struct".into()) };
    target
        .fields
        .iter()
        .map(|field| {
            let Some(at) = fields.iter().position(|f| f.name() == &field.name) else {
                return Ok(new_null_array(&field.ty.to_arrow(), rows));
            };
            conform(&columns[at], &field.ty).map_err(|e| format!("{}: {e}", field.name))
        })
        .collect()
}

/// `array` in the type `to`, which is the array's own or wider.
fn conform(array: &ArrayRef, to: &Ty) -> Result<ArrayRef, String> {
    let target = to.to_arrow();
    if array.data_type() == &target {
        return Ok(array.clone());
    }
    match (array.data_type(), to) {
        (DataType::Null, _) => Ok(new_null_array(&target, array.len())),
        (_, Ty::Json) => json_text(array),
        (DataType::Struct(fields), Ty::Struct(_)) => {
            let source = array.as_any().downcast_ref::<StructArray>().ok_or("not a struct array")?;
            let columns = conform_struct(source.columns(), fields, to, source.len())?;
            let DataType::Struct(target_fields) = target else { unreachable!("a struct's arrow type") };
            StructArray::try_new(target_fields, columns, source.nulls().cloned())
                .map(|a| Arc::new(a) as ArrayRef)
                .map_err(|e| e.to_string())
        }
        (DataType::List(_), Ty::List(item)) => {
            let source = array.as_any().downcast_ref::<ListArray>().ok_or("not a list array")?;
            let values = conform(source.values(), item)?;
            let DataType::List(field) = target else { unreachable!("a list's arrow type") };
            ListArray::try_new(field, source.offsets().clone(), values, source.nulls().cloned())
                .map(|a| Arc::new(a) as ArrayRef)
                .map_err(|e| e.to_string())
        }
        _ => arrow_cast::cast(array, &target).map_err(|e| e.to_string()),
    }
}

/// Each value as its compact JSON text, as a JSON text column holds it (a string quoted, an
/// object as an object); nulls stay null.
fn json_text(array: &ArrayRef) -> Result<ArrayRef, String> {
    let field = Arc::new(Field::new("v", array.data_type().clone(), true));
    let batch = RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(vec![field])), vec![array.clone()])
        .map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    let mut writer = arrow_json::LineDelimitedWriter::new(&mut lines);
    writer.write(&batch).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    let text = String::from_utf8(lines).map_err(|e| e.to_string())?;
    let values: StringArray = text
        .lines()
        .map(|line| line.strip_prefix("{\"v\":").and_then(|rest| rest.strip_suffix('}')).map(str::to_string))
        .collect();
    match values.len() == array.len() {
        true => Ok(Arc::new(values)),
        false => Err(format!("{} JSON values for {} rows", values.len(), array.len())),
    }
}
