//! A run's schema as a Delta table's: the parts' schemas (harvest's [`Ty`], inferred or
//! declared) merged and written in Delta's types, and merged in turn into the table's.
//!
//! Delta has no type for a field that was only ever null: such a field is left out of the
//! table's schema until a run brings a value for it (the files keep their null column, which
//! readers skip). Columns a run adds are nullable: the table's earlier rows lack them.

use deltalake::kernel::{ArrayType, DataType, StructField, StructType};

use crate::output::PartInfo;
use crate::schema::Ty;

/// The type of part `part`'s records, from its manifest entry.
pub fn of_part(part: &PartInfo) -> Result<Ty, String> {
    let Some(fields) = &part.schema else { return Ok(Ty::record()) };
    Ty::parse(&serde_json::json!({ "struct": fields }), "$")
        .map_err(|e| format!("part {} has a schema harvest cannot read: {e}", part.file))
}

/// The type of a run whose parts are `parts`: each part's, merged as inference widens.
pub fn of_parts(parts: &[PartInfo]) -> Result<Ty, String> {
    let mut record = Ty::record();
    for part in parts {
        record.merge_record(&of_part(part)?);
    }
    Ok(record)
}

/// What a run's commit writes: the records' type every file is written in, and the table's
/// schema after the commit.
pub struct Target {
    pub ty: Ty,
    pub schema: StructType,
    /// The table's schema changes (or there is no table yet).
    pub changed: bool,
}

/// The target of a run of type `run` into a table of schema `table` (none: no table yet, or
/// a replace, whose version holds the run's files only): the table's columns keep their
/// types, and a run whose values need another type for one of them is refused.
pub fn target(table: Option<&StructType>, run: &Ty) -> Result<Target, String> {
    let mut ty = match table {
        Some(table) => ty_of_table(table)?,
        None => Ty::record(),
    };
    ty.merge_record(run);
    let schema = match delta_type(&ty) {
        Some(DataType::Struct(schema)) => *schema,
        _ => StructType::try_new([]).map_err(|e| e.to_string())?,
    };
    let Some(table) = table else { return Ok(Target { ty, schema, changed: true }) };
    match merged(table, &schema) {
        Ok(Some(schema)) => Ok(Target { ty, schema, changed: true }),
        Ok(None) => Ok(Target { ty, schema: table.clone(), changed: false }),
        // Named with the run's own type rather than the widened one.
        Err(widened) => Err(match delta_type(run) {
            Some(DataType::Struct(own)) => merged(table, &own).err().unwrap_or(widened),
            _ => widened,
        }),
    }
}

/// Merge mode: each primary key field of the run `run` in the type the table's column has
/// (a key that changed type would name other rows).
pub fn same_keys(table: &StructType, run: &Ty, keys: &[String]) -> Result<(), String> {
    let Ty::Struct(record) = run else { return Ok(()) };
    for key in keys {
        let Some(column) = table.fields().find(|f| f.name() == key) else {
            return Err(format!("the table has no column {key:?} for primary_key (it was not made by this merge job)"));
        };
        let Some(field) = record.fields.iter().find(|f| f.name == *key) else { continue };
        let Some(own) = delta_type(&field.ty) else { continue };
        if own != *column.data_type() {
            return Err(format!(
                "primary_key field {key:?} is {} in the table and {own} in this run's records",
                column.data_type()
            ));
        }
    }
    Ok(())
}

/// True when a part of type `part` holds a column in another type than `target`'s (written
/// before its run's schema widened): it is written again before it is committed. A column it
/// lacks is no difference: readers read it as nulls.
pub fn differs(part: &Ty, target: &Ty) -> bool {
    match (part, target) {
        (Ty::Struct(p), Ty::Struct(t)) if !p.fields.is_empty() && !t.fields.is_empty() => p
            .fields
            .iter()
            .any(|pf| t.fields.iter().find(|tf| tf.name == pf.name).is_some_and(|tf| differs(&pf.ty, &tf.ty))),
        (Ty::List(p), Ty::List(t)) => differs(p, t),
        (p, t) => p.to_arrow() != t.to_arrow(),
    }
}

/// A table's schema as harvest's record type: the types harvest writes, and no other.
pub fn ty_of_table(schema: &StructType) -> Result<Ty, String> {
    let mut fields = Vec::new();
    for field in schema.fields() {
        let ty = ty_of(field.data_type()).ok_or_else(|| {
            format!(
                "column {} of the table is {}, a type harvest does not write (the table was made by another \
                 tool): write this job to another table",
                field.name(),
                field.data_type()
            )
        })?;
        fields.push(crate::schema::Field { name: field.name().clone(), ty, nullable: field.is_nullable() });
    }
    Ok(Ty::Struct(crate::schema::Struct::of(fields)))
}

fn ty_of(data_type: &DataType) -> Option<Ty> {
    Some(match data_type {
        t if *t == DataType::BOOLEAN => Ty::Bool,
        t if *t == DataType::LONG => Ty::Int { exact: true },
        t if *t == DataType::DOUBLE => Ty::Float,
        t if *t == DataType::STRING => Ty::Str,
        t if *t == DataType::TIMESTAMP => Ty::Timestamp,
        DataType::Array(array) => Ty::List(Box::new(ty_of(array.element_type())?)),
        DataType::Struct(s) => {
            let fields = s
                .fields()
                .map(|f| {
                    Some(crate::schema::Field { name: f.name().clone(), ty: ty_of(f.data_type())?, nullable: true })
                })
                .collect::<Option<Vec<_>>>()?;
            Ty::Struct(crate::schema::Struct::of(fields))
        }
        _ => return None,
    })
}

/// `ty` without the fields Delta has no type for (only ever null): what a table holds of it.
pub fn stored(ty: &Ty) -> Ty {
    match ty {
        Ty::Struct(s) => Ty::Struct(crate::schema::Struct::of(
            s.fields
                .iter()
                .filter(|f| delta_type(&f.ty).is_some())
                .map(|f| crate::schema::Field { name: f.name.clone(), ty: stored(&f.ty), nullable: f.nullable })
                .collect(),
        )),
        Ty::List(item) => Ty::List(Box::new(stored(item))),
        other => other.clone(),
    }
}

/// `ty` as Delta writes it; `None` for a type Delta has none for (only ever null).
fn delta_type(ty: &Ty) -> Option<DataType> {
    Some(match ty {
        Ty::Null => return None,
        Ty::Bool => DataType::BOOLEAN,
        Ty::Int { .. } => DataType::LONG,
        Ty::Float => DataType::DOUBLE,
        Ty::Str | Ty::Json => DataType::STRING,
        Ty::Timestamp => DataType::TIMESTAMP,
        Ty::List(item) => DataType::Array(Box::new(ArrayType::new(delta_type(item)?, true))),
        Ty::Struct(s) if s.fields.is_empty() => DataType::STRING,
        Ty::Struct(s) => {
            let fields: Vec<StructField> = s
                .fields
                .iter()
                .filter_map(|f| Some(StructField::new(&f.name, delta_type(&f.ty)?, f.nullable)))
                .collect();
            if fields.is_empty() {
                return None;
            }
            DataType::Struct(Box::new(StructType::try_new(fields).ok()?))
        }
    })
}

/// The table's schema with the run's merged in: `None` when it holds the run's already, else
/// the table's columns followed by the run's new ones. A field whose type differs between the
/// two is refused, named with both types.
pub fn merged(table: &StructType, run: &StructType) -> Result<Option<StructType>, String> {
    let mut changed = false;
    let merged = merge_struct(table, run, "", &mut changed)?;
    Ok(changed.then_some(merged))
}

fn merge_struct(table: &StructType, run: &StructType, at: &str, changed: &mut bool) -> Result<StructType, String> {
    let mut fields: Vec<StructField> = Vec::new();
    for field in table.fields() {
        let path = join(at, field.name());
        let merged = match run.field(field.name()) {
            Some(theirs) => merge_type(field.data_type(), theirs.data_type(), &path, changed)?,
            None => field.data_type().clone(),
        };
        fields
            .push(StructField::new(field.name(), merged, field.is_nullable()).with_metadata(field.metadata().clone()));
    }
    for field in run.fields().filter(|f| table.field(f.name()).is_none()) {
        *changed = true;
        fields.push(StructField::new(field.name(), field.data_type().clone(), true));
    }
    StructType::try_new(fields).map_err(|e| e.to_string())
}

fn merge_type(table: &DataType, run: &DataType, at: &str, changed: &mut bool) -> Result<DataType, String> {
    match (table, run) {
        (DataType::Struct(mine), DataType::Struct(theirs)) => {
            Ok(DataType::Struct(Box::new(merge_struct(mine, theirs, at, changed)?)))
        }
        (DataType::Array(mine), DataType::Array(theirs)) => {
            let item = merge_type(mine.element_type(), theirs.element_type(), &format!("{at}[]"), changed)?;
            Ok(DataType::Array(Box::new(ArrayType::new(item, mine.contains_null()))))
        }
        (mine, theirs) if mine == theirs => Ok(mine.clone()),
        (mine, theirs) => Err(format!(
            "field {at} is {mine} in the table and {theirs} in this run's records; a table's column keeps its \
             type (declare the field's type in a schema file, or write this run to another table)"
        )),
    }
}

fn join(at: &str, name: &str) -> String {
    match at {
        "" => name.to_string(),
        _ => format!("{at}.{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(schema: serde_json::Value) -> PartInfo {
        PartInfo {
            file: "part-1.parquet".into(),
            rows: 1,
            bytes: 1,
            partitions: vec![],
            more_slices: 0,
            schema: Some(schema),
        }
    }

    fn names(schema: &StructType) -> Vec<String> {
        schema.fields().map(|f| format!("{}:{}", f.name(), f.data_type())).collect()
    }

    fn run(fields: serde_json::Value) -> Ty {
        of_parts(&[part(fields)]).unwrap()
    }

    #[test]
    fn parts_merge_as_inference_widens_and_null_only_fields_are_left_out() {
        let first = part(serde_json::json!([
            {"name": "id", "type": "int64"},
            {"name": "note", "type": "null"},
            {"name": "price", "type": "int64"}
        ]));
        let second = part(serde_json::json!([
            {"name": "id", "type": "int64"},
            {"name": "note", "type": "null"},
            {"name": "price", "type": "float64"},
            {"name": "tags", "type": {"list": "utf8"}}
        ]));
        let ty = of_parts(&[first.clone(), second.clone()]).unwrap();
        let target = target(None, &ty).unwrap();
        assert_eq!(names(&target.schema), ["id:long", "price:double", "tags:array<string>"]);
        assert!(differs(&of_part(&first).unwrap(), &target.ty), "the first part's price is written again as double");
        assert!(!differs(&of_part(&second).unwrap(), &target.ty), "the second part is in the run's types");
    }

    #[test]
    fn a_run_adds_columns_and_a_changed_type_is_refused_by_name() {
        let table = target(None, &run(serde_json::json!([{"name": "id", "type": "int64"}]))).unwrap().schema;
        let same = target(Some(&table), &run(serde_json::json!([{"name": "id", "type": "int64"}]))).unwrap();
        assert!(!same.changed);
        let wider = run(serde_json::json!([{"name": "name", "type": "utf8"}, {"name": "id", "type": "int64"}]));
        let wider = target(Some(&table), &wider).unwrap();
        assert_eq!(names(&wider.schema), ["id:long", "name:string"]);
        assert!(wider.changed);
        let other = target(Some(&table), &run(serde_json::json!([{"name": "id", "type": "utf8"}])));
        let refused = other.err().expect("a long column does not take text");
        assert!(refused.contains("field id is long in the table and string"), "{refused}");
    }

    #[test]
    fn integers_into_a_table_s_float_column_are_written_as_floats() {
        let table = target(None, &run(serde_json::json!([{"name": "price", "type": "float64"}]))).unwrap().schema;
        let ints = run(serde_json::json!([{"name": "price", "type": "int64"}]));
        let target = target(Some(&table), &ints).unwrap();
        assert!(!target.changed);
        assert!(differs(&ints, &target.ty));
    }
}
