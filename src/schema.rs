//! Parquet schemas: inferred from the records, or declared in a file, and widened as records
//! demand.
//!
//! A schema is a [`Ty`] tree walked over each record's compact JSON text, without building a
//! value. Inference follows these rules (docs/GUIDE.md, "Parquet"): integers are Int64; integers and
//! floats together are Float64 only while every integer seen is within ±2^53, else JSON text;
//! a float that Float64 cannot hold digit for digit, or an integer beyond Int64, is JSON text;
//! strings are Utf8, or Timestamp(µs, UTC) for RFC 3339 strings when `timestamps = "infer"`;
//! objects are structs, arrays lists; a field that has only been null is of the Null type until
//! a value comes; an object whose keys vary like a map's is JSON text; any other clash is JSON
//! text. JSON text columns hold each value's compact JSON (strings keep their quotes).

use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field as ArrowField, Fields, Schema, TimeUnit};
use serde_json::{json, Value};

use crate::jsonpath::{kind_of, Kind};
use crate::scan::Strings;

/// Field metadata that marks a Utf8 column holding JSON text.
pub const JSON_TEXT: (&str, &str) = ("harvest.type", "json");
/// The column that keeps, with `on_mismatch = "json"`, what did not fit a declared schema.
pub const REJECTED: &str = "_rejected";

/// Integers beyond this lose digits as Float64.
const EXACT_IN_F64: u64 = 1 << 53;
/// A struct wider than this is taken for a map.
const MAX_STRUCT_FIELDS: usize = 256;

/// A column's type.
#[derive(Debug, Clone)]
pub enum Ty {
    /// Only nulls so far.
    Null,
    Bool,
    /// Int64; `exact`: every integer seen fits a Float64 exactly.
    Int {
        exact: bool,
    },
    Float,
    Str,
    Timestamp,
    /// Utf8 holding each value's compact JSON text.
    Json,
    List(Box<Ty>),
    Struct(Struct),
}

#[derive(Debug, Clone, Default)]
pub struct Struct {
    pub fields: Vec<Field>,
    /// Objects seen and keys counted over them, to tell maps from records.
    objects: u64,
    keys: u64,
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub ty: Ty,
    pub nullable: bool,
}

/// What inference may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// RFC 3339 strings become timestamps.
    pub timestamps: bool,
}

/// Where and how a record does not fit a declared schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Dotted path of the field, `$` for the record itself.
    pub field: String,
    pub expected: String,
    pub found: &'static str,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: expected {}, found {}", self.field, self.expected, self.found)
    }
}

impl Ty {
    /// An empty record type, to infer into.
    pub fn record() -> Ty {
        Ty::Struct(Struct::default())
    }

    /// Widen the type so that `value` (compact JSON) fits; true when its Arrow type changed.
    /// Inferred columns are all nullable, so a null always fits.
    pub fn widen(&mut self, value: &[u8], rules: Rules) -> bool {
        self.widen_at(&Text::new(value), 0, rules).1
    }

    /// Widen by the value that starts at `text[at]`, walking nested values once; returns
    /// where the value ends and whether the Arrow type changed.
    fn widen_at(&mut self, text: &Text, at: usize, rules: Rules) -> (usize, bool) {
        match text.bytes[at] {
            b'{' => match self {
                Ty::Struct(s) => {
                    let (end, changed) = s.widen_at(text, at, rules);
                    match s.looks_like_a_map() {
                        true => {
                            *self = Ty::Json;
                            (end, true)
                        }
                        false => (end, changed),
                    }
                }
                Ty::Null => {
                    let mut s = Struct::default();
                    let (end, _) = s.widen_at(text, at, rules);
                    *self = if s.looks_like_a_map() { Ty::Json } else { Ty::Struct(s) };
                    (end, true)
                }
                Ty::Json => (text.value_end(at), false),
                _ => {
                    *self = Ty::Json;
                    (text.value_end(at), true)
                }
            },
            b'[' => match self {
                Ty::List(item) => widen_elements(item, text, at, rules),
                Ty::Null => {
                    let mut item = Ty::Null;
                    let (end, _) = widen_elements(&mut item, text, at, rules);
                    *self = Ty::List(Box::new(item));
                    (end, true)
                }
                Ty::Json => (text.value_end(at), false),
                _ => {
                    *self = Ty::Json;
                    (text.value_end(at), true)
                }
            },
            // The common cases, settled without looking at the value twice: a string in a
            // string column, null anywhere.
            b'"' if matches!(self, Ty::Str | Ty::Json) => (text.string_end(at), false),
            b'n' => (at + 4, false),
            _ => {
                let end = text.value_end(at);
                (end, self.widen_scalar(&text.bytes[at..end], rules))
            }
        }
    }

    /// [`Ty::widen`] for a string, number, boolean or null: merge the value's own type.
    fn widen_scalar(&mut self, value: &[u8], rules: Rules) -> bool {
        // Numbers in a number column, booleans in a boolean one: settled in place.
        match (&mut *self, value[0]) {
            (Ty::Int { exact }, b'-' | b'0'..=b'9') => match number(value) {
                Number::Int { exact: theirs } => {
                    *exact &= theirs;
                    return false;
                }
                Number::Float if *exact => {
                    *self = Ty::Float;
                    return true;
                }
                _ => {
                    *self = Ty::Json;
                    return true;
                }
            },
            (Ty::Float, b'-' | b'0'..=b'9') => {
                return match number(value) {
                    Number::Float | Number::Int { exact: true } => false,
                    _ => {
                        *self = Ty::Json;
                        true
                    }
                }
            }
            (Ty::Bool, b't' | b'f') => return false,
            _ => {}
        }
        // A timestamp column keeps checking its strings, whatever inference may start.
        let timestamps = rules.timestamps || matches!(self, Ty::Timestamp);
        self.merge(&Ty::scalar(value, timestamps))
    }

    /// The type of one string, number, boolean or null.
    fn scalar(value: &[u8], timestamps: bool) -> Ty {
        match kind_of(value) {
            Kind::Null => Ty::Null,
            Kind::Bool => Ty::Bool,
            Kind::Number => match number(value) {
                Number::Int { exact } => Ty::Int { exact },
                Number::Float => Ty::Float,
                Number::Lossy => Ty::Json,
            },
            Kind::String if timestamps && is_timestamp(value) => Ty::Timestamp,
            Kind::String => Ty::Str,
            Kind::Array | Kind::Object => unreachable!("a scalar"),
        }
    }

    /// Widen a record's type: like [`Ty::widen`], except that the record itself stays a
    /// struct whatever its keys look like.
    pub fn widen_record(&mut self, record: &[u8], rules: Rules) -> bool {
        match self {
            Ty::Struct(s) if record.first() == Some(&b'{') => s.widen_at(&Text::new(record), 0, rules).1,
            other => other.widen(record, rules),
        }
    }

    /// Widen a record type by every record of a page (compact JSON objects, one a line); true
    /// when its Arrow type changed. `None` when a line is not a compact object: such a page is
    /// for [`Ty::widen_record`], line by line.
    pub fn widen_page(&mut self, lines: &[u8], rules: Rules) -> Option<bool> {
        let Ty::Struct(s) = self else { return None };
        let text = Text::new(lines);
        let (mut at, mut changed) = (0, false);
        while at < lines.len() {
            if lines[at] != b'{' {
                return None;
            }
            let (end, widened) = s.widen_at(&text, at, rules);
            changed |= widened;
            if lines.get(end) != Some(&b'\n') {
                return None;
            }
            at = end + 1;
        }
        Some(changed)
    }

    /// Widen by another type, as if by every value that made it; true when the Arrow type
    /// changed. A page's records inferred on their own and merged give what widening by each
    /// would have.
    pub fn merge(&mut self, other: &Ty) -> bool {
        let changed = match (&mut *self, other) {
            (_, Ty::Null) | (Ty::Json, _) | (Ty::Bool, Ty::Bool) | (Ty::Float, Ty::Float) => false,
            (Ty::Str, Ty::Str | Ty::Timestamp) | (Ty::Timestamp, Ty::Timestamp) => false,
            (Ty::Null, other) => {
                *self = other.clone();
                true
            }
            (Ty::Int { exact }, Ty::Int { exact: theirs }) => {
                *exact &= theirs;
                false
            }
            (Ty::Int { exact: true }, Ty::Float) => {
                *self = Ty::Float;
                true
            }
            (Ty::Float, Ty::Int { exact: true }) => false,
            (Ty::Timestamp, Ty::Str) => {
                *self = Ty::Str;
                true
            }
            (Ty::List(mine), Ty::List(theirs)) => mine.merge(theirs),
            (Ty::Struct(mine), Ty::Struct(theirs)) => mine.merge(theirs),
            _ => {
                *self = Ty::Json;
                true
            }
        };
        if let Ty::Struct(s) = self {
            if s.looks_like_a_map() {
                *self = Ty::Json;
                return true;
            }
        }
        changed
    }

    /// [`Ty::merge`] for a record's type, which stays a struct.
    pub fn merge_record(&mut self, other: &Ty) -> bool {
        match (&mut *self, other) {
            (Ty::Struct(mine), Ty::Struct(theirs)) => mine.merge(theirs),
            _ => self.merge(other),
        }
    }

    /// True when some column of a record type holds JSON text (see [`Ty::rewrite`]).
    pub fn needs_rewrite_record(&self) -> bool {
        match self {
            Ty::Struct(s) => s.fields.iter().any(|f| f.ty.needs_rewrite()),
            other => other.needs_rewrite(),
        }
    }

    /// For a declared record type with `on_mismatch = "json"`: append the record with the
    /// members that do not fit (wrong type, or not declared) moved into `_rejected`, as the
    /// JSON text of an object. A non-nullable field cannot be set aside, so a misfit there, or
    /// its absence, is still a mismatch.
    pub fn rewrite_rejecting(&self, record: &[u8], out: &mut Vec<u8>) -> Result<(), Mismatch> {
        let Ty::Struct(s) = self else {
            self.rewrite(record, out);
            return Ok(());
        };
        let mut seen = vec![false; s.fields.len()];
        let mut rejected = Vec::new();
        let mut first = true;
        out.push(b'{');
        for (key, member) in members(record) {
            let name = key.name();
            let index = s.fields.iter().position(|f| f.name == name && f.name != REJECTED);
            let fits = match index {
                Some(i) => {
                    seen[i] = true;
                    let field = &s.fields[i];
                    let fits = match kind_of(member) {
                        Kind::Null => field.nullable,
                        _ => field.ty.check(member, &name).is_ok(),
                    };
                    if !fits && !field.nullable {
                        return Err(match kind_of(member) {
                            Kind::Null => {
                                Mismatch { field: name.into_owned(), expected: field.ty.name(), found: "null" }
                            }
                            _ => field.ty.check(member, &name).expect_err("checked above"),
                        });
                    }
                    fits
                }
                None => false,
            };
            match index.filter(|_| fits) {
                Some(i) => {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(key.raw);
                    out.push(b':');
                    s.fields[i].ty.rewrite(member, out);
                }
                None => {
                    rejected.push(if rejected.is_empty() { b'{' } else { b',' });
                    rejected.extend_from_slice(key.raw);
                    rejected.push(b':');
                    rejected.extend_from_slice(member);
                }
            }
        }
        for (field, seen) in s.fields.iter().zip(seen) {
            if !seen && !field.nullable && field.name != REJECTED {
                return Err(Mismatch { field: field.name.clone(), expected: field.ty.name(), found: "nothing" });
            }
        }
        if !rejected.is_empty() {
            rejected.push(b'}');
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"");
            out.extend_from_slice(REJECTED.as_bytes());
            out.extend_from_slice(b"\":");
            write_json_string(&rejected, out);
        }
        out.push(b'}');
        Ok(())
    }

    /// Check `value` against a declared type.
    pub fn check(&self, value: &[u8], path: &str) -> Result<(), Mismatch> {
        let kind = kind_of(value);
        let fits = match (self, kind) {
            (Ty::Json, _) | (Ty::Null, Kind::Null) | (Ty::Bool, Kind::Bool) | (Ty::Str, Kind::String) => true,
            (Ty::Int { .. }, Kind::Number) => matches!(number(value), Number::Int { .. }),
            (Ty::Float, Kind::Number) => value_as_f64(value).is_some_and(f64::is_finite),
            (Ty::Timestamp, Kind::String) => is_timestamp(value),
            (Ty::List(item), Kind::Array) => {
                for (i, element) in elements(value).enumerate() {
                    if kind_of(element) != Kind::Null {
                        item.check(element, &format!("{path}[{i}]"))?;
                    }
                }
                true
            }
            (Ty::Struct(s), Kind::Object) => {
                s.check(value, path)?;
                true
            }
            _ => false,
        };
        match fits {
            true => Ok(()),
            false => Err(Mismatch { field: path.to_string(), expected: self.name(), found: kind.name() }),
        }
    }

    /// True when some value must be rewritten before Arrow decodes it: JSON text columns.
    pub fn needs_rewrite(&self) -> bool {
        match self {
            Ty::Json => true,
            Ty::List(item) => item.needs_rewrite(),
            Ty::Struct(s) => s.fields.is_empty() || s.fields.iter().any(|f| f.ty.needs_rewrite()),
            _ => false,
        }
    }

    /// Append `value` as Arrow's JSON decoder should see it: values of JSON text columns become
    /// strings holding their compact JSON.
    pub fn rewrite(&self, value: &[u8], out: &mut Vec<u8>) {
        match (self, kind_of(value)) {
            (_, Kind::Null) => out.extend_from_slice(value),
            (Ty::Json, _) => write_json_string(value, out),
            (Ty::Struct(s), Kind::Object) if s.fields.is_empty() => write_json_string(value, out),
            (Ty::Struct(s), Kind::Object) => {
                out.push(b'{');
                for (i, (key, member)) in members(value).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(key.raw);
                    out.push(b':');
                    match s.fields.iter().find(|f| key.is(&f.name)) {
                        Some(field) => field.ty.rewrite(member, out),
                        None => out.extend_from_slice(member),
                    }
                }
                out.push(b'}');
            }
            (Ty::List(item), Kind::Array) => {
                out.push(b'[');
                for (i, element) in elements(value).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.rewrite(element, out);
                }
                out.push(b']');
            }
            _ => out.extend_from_slice(value),
        }
    }

    pub fn to_arrow(&self) -> DataType {
        match self {
            Ty::Null => DataType::Null,
            Ty::Bool => DataType::Boolean,
            Ty::Int { .. } => DataType::Int64,
            Ty::Float => DataType::Float64,
            Ty::Str | Ty::Json => DataType::Utf8,
            Ty::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            Ty::List(item) => DataType::List(Arc::new(item.arrow_field("item", true))),
            Ty::Struct(s) if s.fields.is_empty() => DataType::Utf8,
            Ty::Struct(s) => DataType::Struct(s.arrow_fields()),
        }
    }

    fn arrow_field(&self, name: &str, nullable: bool) -> ArrowField {
        let field = ArrowField::new(name, self.to_arrow(), nullable);
        match self {
            Ty::Json => field.with_metadata(json_text()),
            Ty::Struct(s) if s.fields.is_empty() => field.with_metadata(json_text()),
            _ => field,
        }
    }

    /// The Arrow schema of a record type.
    pub fn arrow_schema(&self) -> Schema {
        match self {
            Ty::Struct(s) => Schema::new(s.arrow_fields()),
            other => Schema::new(vec![other.arrow_field("value", true)]),
        }
    }

    /// The type's name in schema files.
    pub fn name(&self) -> String {
        match self {
            Ty::Null => "null".into(),
            Ty::Bool => "boolean".into(),
            Ty::Int { .. } => "int64".into(),
            Ty::Float => "float64".into(),
            Ty::Str => "utf8".into(),
            Ty::Timestamp => "timestamp".into(),
            Ty::Json => "json".into(),
            Ty::List(item) => format!("list of {}", item.name()),
            Ty::Struct(_) => "an object".into(),
        }
    }

    /// The type as written in schema files and manifests.
    pub fn describe(&self) -> Value {
        match self {
            Ty::List(item) => json!({ "list": item.describe() }),
            Ty::Struct(s) if s.fields.is_empty() => json!("json"),
            Ty::Struct(s) => json!({ "struct": s.describe() }),
            other => json!(other.name()),
        }
    }

    /// Read a type from a schema file.
    pub fn parse(value: &Value, at: &str) -> Result<Ty, String> {
        match value {
            Value::String(name) => match name.as_str() {
                "null" => Ok(Ty::Null),
                "boolean" | "bool" => Ok(Ty::Bool),
                "int64" | "integer" => Ok(Ty::Int { exact: true }),
                "float64" | "double" => Ok(Ty::Float),
                "utf8" | "string" => Ok(Ty::Str),
                "timestamp" => Ok(Ty::Timestamp),
                "json" => Ok(Ty::Json),
                other => Err(format!(
                    "{at}: unknown type {other:?} (one of null, boolean, int64, float64, utf8, timestamp, json, \
                     {{\"list\": T}}, {{\"struct\": [fields]}})"
                )),
            },
            Value::Object(map) if map.len() == 1 && map.contains_key("list") => {
                Ok(Ty::List(Box::new(Ty::parse(&map["list"], &format!("{at}.list"))?)))
            }
            Value::Object(map) if map.len() == 1 && map.contains_key("struct") => {
                Ok(Ty::Struct(Struct::parse(&map["struct"], at)?))
            }
            other => Err(format!("{at}: a type is a name, {{\"list\": T}} or {{\"struct\": [fields]}}, not {other}")),
        }
    }
}

impl Struct {
    /// A struct of `fields` known from elsewhere (a table's schema): counted as one object
    /// with every field, so nothing takes it for a map.
    pub fn of(fields: Vec<Field>) -> Struct {
        let keys = fields.len() as u64;
        Struct { fields, objects: 1, keys }
    }

    /// Widen by the object that starts at `text[at]`; returns where it ends and whether an
    /// Arrow type changed.
    fn widen_at(&mut self, text: &Text, at: usize, rules: Rules) -> (usize, bool) {
        self.objects += 1;
        let mut changed = false;
        let mut i = text.skip_whitespace(at + 1);
        if text.bytes.get(i) == Some(&b'}') {
            return (i + 1, false);
        }
        // Records mostly repeat one key order: look for each key where the last one was
        // found, plus one, first.
        let mut guess = 0;
        loop {
            let (key, key_end) = text.key(i);
            let value = text.skip_whitespace(text.skip_whitespace(key_end) + 1);
            self.keys += 1;
            let index = match self.fields.get(guess) {
                Some(f) if key.is(&f.name) => Some(guess),
                _ => self.fields.iter().position(|f| key.is(&f.name)),
            };
            let end = match index {
                Some(index) => {
                    guess = index + 1;
                    let (end, widened) = self.fields[index].ty.widen_at(text, value, rules);
                    changed |= widened;
                    end
                }
                None => {
                    let mut ty = Ty::Null;
                    let (end, _) = ty.widen_at(text, value, rules);
                    self.fields.push(Field { name: key.name().into_owned(), ty, nullable: true });
                    guess = self.fields.len();
                    changed = true;
                    end
                }
            };
            i = text.skip_whitespace(end);
            match text.bytes.get(i) {
                Some(b',') => i = text.skip_whitespace(i + 1),
                _ => break,
            }
        }
        (i + 1, changed)
    }

    fn merge(&mut self, other: &Struct) -> bool {
        self.objects += other.objects;
        self.keys += other.keys;
        let mut changed = false;
        for field in &other.fields {
            match self.fields.iter_mut().find(|f| f.name == field.name) {
                Some(mine) => changed |= mine.ty.merge(&field.ty),
                None => {
                    self.fields.push(field.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Many keys, each in few objects, or keys that are numbers or dates: a map, not a record.
    fn looks_like_a_map(&self) -> bool {
        let n = self.fields.len();
        let sparse = n >= 16 && self.keys * 4 <= self.objects * n as u64;
        let numbered = n >= 2 && self.fields.iter().all(|f| f.name.starts_with(|c: char| c.is_ascii_digit()));
        n > MAX_STRUCT_FIELDS || sparse || numbered
    }

    fn check(&self, value: &[u8], path: &str) -> Result<(), Mismatch> {
        let mut seen = vec![false; self.fields.len()];
        for (key, member) in members(value) {
            let name = key.name();
            let field_path = join(path, &name);
            let Some(i) = self.fields.iter().position(|f| f.name == name) else {
                return Err(Mismatch { field: field_path, expected: "no such field".into(), found: "one" });
            };
            seen[i] = true;
            let field = &self.fields[i];
            match kind_of(member) {
                Kind::Null if field.nullable => {}
                Kind::Null => {
                    return Err(Mismatch { field: field_path, expected: field.ty.name(), found: "null" });
                }
                _ => field.ty.check(member, &field_path)?,
            }
        }
        for (field, seen) in self.fields.iter().zip(seen) {
            if !seen && !field.nullable {
                return Err(Mismatch { field: join(path, &field.name), expected: field.ty.name(), found: "nothing" });
            }
        }
        Ok(())
    }

    fn arrow_fields(&self) -> Fields {
        self.fields.iter().map(|f| f.ty.arrow_field(&f.name, f.nullable)).collect()
    }

    pub fn describe(&self) -> Value {
        Value::Array(
            self.fields
                .iter()
                .map(|f| match f.nullable {
                    true => json!({ "name": f.name, "type": f.ty.describe() }),
                    false => json!({ "name": f.name, "type": f.ty.describe(), "nullable": false }),
                })
                .collect(),
        )
    }

    fn parse(value: &Value, at: &str) -> Result<Struct, String> {
        let Value::Array(list) = value else {
            return Err(format!("{at}: fields are a list of {{\"name\": ..., \"type\": ...}}"));
        };
        let mut fields: Vec<Field> = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            let here = format!("{at}[{i}]");
            let name = entry.get("name").and_then(Value::as_str).ok_or(format!("{here}: a field needs a \"name\""))?;
            if fields.iter().any(|f| f.name == name) {
                return Err(format!("{here}: field {name:?} is declared twice"));
            }
            let ty = Ty::parse(entry.get("type").ok_or(format!("{here}: field {name:?} needs a \"type\""))?, &here)?;
            let nullable = match entry.get("nullable") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => return Err(format!("{here}: \"nullable\" is true or false, not {other}")),
            };
            if let Some(extra) =
                entry.as_object().and_then(|o| o.keys().find(|k| !["name", "type", "nullable"].contains(&k.as_str())))
            {
                return Err(format!("{here}: unknown key {extra:?} (name, type, nullable)"));
            }
            fields.push(Field { name: name.to_string(), ty, nullable });
        }
        Ok(Struct { fields, objects: 0, keys: 0 })
    }
}

/// A declared schema, read from a file: `{"fields": [{"name": ..., "type": ..., "nullable": ...}]}`.
pub fn parse_schema_file(text: &str) -> Result<Ty, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let fields = value.get("fields").ok_or("a schema is an object with a \"fields\" list")?;
    let record = Struct::parse(fields, "fields")?;
    if record.fields.is_empty() {
        return Err("a schema needs at least one field".into());
    }
    Ok(Ty::Struct(record))
}

fn json_text() -> std::collections::HashMap<String, String> {
    [(JSON_TEXT.0.to_string(), JSON_TEXT.1.to_string())].into()
}

fn join(path: &str, name: &str) -> String {
    match path {
        "" | "$" => name.to_string(),
        _ => format!("{path}.{name}"),
    }
}

fn write_json_string(value: &[u8], out: &mut Vec<u8>) {
    let text = std::str::from_utf8(value).expect("records are UTF-8");
    serde_json::to_writer(out, text).expect("writing to a Vec cannot fail");
}

// --- Walking compact JSON text (valid: it has been parsed before) ---

/// Widen a list's item type by the array that starts at `text[at]`.
fn widen_elements(item: &mut Ty, text: &Text, at: usize, rules: Rules) -> (usize, bool) {
    let mut changed = false;
    let mut i = text.skip_whitespace(at + 1);
    if text.bytes.get(i) == Some(&b']') {
        return (i + 1, false);
    }
    loop {
        let (end, widened) = item.widen_at(text, i, rules);
        changed |= widened;
        i = text.skip_whitespace(end);
        match text.bytes.get(i) {
            Some(b',') => i = text.skip_whitespace(i + 1),
            _ => return (i + 1, changed),
        }
    }
}

/// JSON text to walk (valid: it has been parsed before), with where its strings end, so that
/// a walk steps over each string at once however long it is.
struct Text<'a> {
    bytes: &'a [u8],
    strings: Strings,
}

impl<'a> Text<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Text { bytes, strings: Strings::of(bytes) }
    }

    fn string_end(&self, open: usize) -> usize {
        self.strings.end(open)
    }

    /// The key whose opening quote is at `open`, and where it ends.
    fn key(&self, open: usize) -> (FieldKey<'a>, usize) {
        let end = self.string_end(open);
        (FieldKey { raw: &self.bytes[open..end], escaped: self.strings.escaped(open, end) }, end)
    }

    fn skip_whitespace(&self, at: usize) -> usize {
        skip_whitespace(self.bytes, at)
    }

    /// The index just past the value that starts at `at`.
    fn value_end(&self, at: usize) -> usize {
        value_end_by(self.bytes, at, |open| self.string_end(open))
    }
}

fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        at += 1;
    }
    at
}

/// The index just past the number, boolean or null that starts at `at`.
fn scalar_end(text: &[u8], at: usize) -> usize {
    text[at..].iter().position(|b| ENDS_SCALAR[*b as usize]).map_or(text.len(), |n| at + n)
}

/// The bytes that can follow a number, boolean or null.
static ENDS_SCALAR: [bool; 256] = {
    let mut table = [false; 256];
    let ends = b",]} \n\r\t";
    let mut i = 0;
    while i < ends.len() {
        table[ends[i] as usize] = true;
        i += 1;
    }
    table
};

/// The index just past the value that starts at `at`.
fn value_end(text: &[u8], at: usize) -> usize {
    value_end_by(text, at, |open| string_end(text, open))
}

/// [`value_end`], with `string_end` saying where the string opened at an index ends.
fn value_end_by(text: &[u8], at: usize, string_end: impl Fn(usize) -> usize) -> usize {
    match text[at] {
        b'"' => string_end(at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < text.len() {
                match text[i] {
                    b'"' => {
                        i = string_end(i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            text.len()
        }
        _ => scalar_end(text, at),
    }
}

/// The index just past the string whose opening quote is at `open`. Most strings in records
/// are short: the first bytes are looked at one by one, the rest found with memchr.
fn string_end(text: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    let near = text.len().min(i + 24);
    while i < near {
        match text[i] {
            b'"' => return i + 1,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    while let Some(k) = memchr::memchr2(b'"', b'\\', &text[i.min(text.len())..]) {
        let at = i + k;
        if text[at] == b'\\' {
            i = at + 2;
        } else {
            return at + 1;
        }
    }
    text.len()
}

/// An object key as written (quotes included).
struct FieldKey<'a> {
    raw: &'a [u8],
    /// It holds a backslash.
    escaped: bool,
}

impl<'a> FieldKey<'a> {
    fn name(&self) -> std::borrow::Cow<'a, str> {
        match self.escaped {
            false => std::borrow::Cow::Borrowed(
                std::str::from_utf8(&self.raw[1..self.raw.len() - 1]).expect("records are UTF-8"),
            ),
            true => std::borrow::Cow::Owned(serde_json::from_slice(self.raw).expect("a valid JSON string")),
        }
    }

    /// The key is `name`; compared as written when it holds no escape, which is the rule.
    #[inline]
    fn is(&self, name: &str) -> bool {
        match self.escaped {
            false => same_bytes(&self.raw[1..self.raw.len() - 1], name.as_bytes()),
            true => self.name() == name,
        }
    }
}

/// `a == b`, for the short byte strings that keys are: a few word compares, no `memcmp` call.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        // The first and the last word, overlapping when shorter than two.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// Where the next member or element starts at or after `at` (past separators), or `None` at
/// the closing bracket.
fn next_item(text: &[u8], mut at: usize) -> Option<usize> {
    while matches!(text.get(at), Some(b',' | b' ' | b'\n' | b'\r' | b'\t')) {
        at += 1;
    }
    text.get(at).filter(|b| !matches!(b, b'}' | b']')).map(|_| at)
}

/// The members of an object: each key and its value's text.
fn members(object: &[u8]) -> impl Iterator<Item = (FieldKey<'_>, &[u8])> {
    let mut at = 1;
    std::iter::from_fn(move || {
        let start = next_item(object, at)?;
        let key_end = string_end(object, start);
        let value = skip_whitespace(object, skip_whitespace(object, key_end) + 1);
        at = value_end(object, value);
        let raw = &object[start..key_end];
        Some((FieldKey { raw, escaped: raw.contains(&b'\\') }, &object[value..at]))
    })
}

/// The elements of an array.
fn elements(array: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 1;
    std::iter::from_fn(move || {
        let start = next_item(array, at)?;
        at = value_end(array, start);
        Some(&array[start..at])
    })
}

enum Number {
    /// Fits Int64; `exact`: and a Float64 too.
    Int { exact: bool },
    /// A Float64 holds it digit for digit.
    Float,
    /// Neither: kept as JSON text.
    Lossy,
}

fn number(text: &[u8]) -> Number {
    // The common cases in one pass: an integer of up to 18 digits, and a float of up to 15
    // significant digits with an exponent of up to two, which a Float64 always holds.
    let digits = usize::from(text.first() == Some(&b'-'));
    let (mut magnitude, mut significant, mut i) = (0u64, 0usize, digits);
    while let Some(d @ b'0'..=b'9') = text.get(i) {
        magnitude = magnitude.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        significant += usize::from(significant > 0 || *d != b'0');
        i += 1;
    }
    let int_digits = i - digits;
    if i == text.len() {
        // JSON has no leading zeros: 20 digits are beyond Int64, 19 may be.
        let limit = i64::MAX as u64 + u64::from(digits == 1);
        return match int_digits <= 18 || (int_digits == 19 && magnitude <= limit) {
            true => Number::Int { exact: magnitude <= EXACT_IN_F64 },
            false => Number::Lossy,
        };
    }
    if text.get(i) == Some(&b'.') {
        i += 1;
        while let Some(d @ b'0'..=b'9') = text.get(i) {
            significant += usize::from(significant > 0 || *d != b'0');
            i += 1;
        }
    }
    if i < text.len() && matches!(text[i], b'e' | b'E') {
        let exponent = text[i + 1..].strip_prefix(b"+").or(text[i + 1..].strip_prefix(b"-")).unwrap_or(&text[i + 1..]);
        if significant <= 15 && (1..=2).contains(&exponent.len()) {
            return Number::Float;
        }
    } else if i == text.len() && i > digits + int_digits && significant <= 15 {
        return Number::Float;
    }
    let text = std::str::from_utf8(text).unwrap_or("");
    if !text.contains(['.', 'e', 'E']) {
        return match text.parse::<i64>() {
            Ok(v) => Number::Int { exact: v.unsigned_abs() <= EXACT_IN_F64 },
            Err(_) => Number::Lossy,
        };
    }
    // Up to 15 significant digits always survive a trip through a Float64 (within its range);
    // longer numbers are compared with the shortest text of the parsed value.
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).skip_while(|d| *d == b'0').count();
    if digits <= 15 && exponent.trim_start_matches(['+', '-']).len() <= 2 {
        return Number::Float;
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && decimal(text) == decimal(&format!("{f:e}")) => Number::Float,
        _ => Number::Lossy,
    }
}

fn value_as_f64(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A decimal number reduced to (negative, significant digits, exponent of the point), so that
/// two spellings of one value compare equal: `1.50`, `15e-1` and `1.5e0` all give `15`, 1.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].trim_start_matches('+').parse::<i64>().unwrap_or(0)),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    (negative, significant.to_string(), int.len() as i64 + exponent - leading as i64)
}

/// An RFC 3339 date-time string (quotes included) that Timestamp(µs) holds exactly.
fn is_timestamp(value: &[u8]) -> bool {
    let Some(inner) = value.get(1..value.len().saturating_sub(1)) else { return false };
    if !(20..=35).contains(&inner.len()) || inner.contains(&b'\\') || inner.get(10) != Some(&b'T') {
        return false;
    }
    let Ok(text) = std::str::from_utf8(inner) else { return false };
    let fraction = text.split_once('.').map_or(0, |(_, rest)| rest.bytes().take_while(u8::is_ascii_digit).count());
    fraction <= 6 && chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(records: &[&str], rules: Rules) -> Ty {
        let mut ty = Ty::record();
        for r in records {
            ty.widen(r.as_bytes(), rules);
        }
        ty
    }

    fn described(ty: &Ty) -> String {
        ty.describe().to_string()
    }

    #[test]
    fn inference_follows_the_rules() {
        let ty = infer(
            &[
                r#"{"id":1,"name":"a","score":1.5,"at":"2024-01-01T00:00:00Z","tags":["x"],"geo":{"lat":1.25},"gone":null}"#,
                r#"{"id":2,"name":"b","score":2,"at":"2024-01-01T00:00:01.5Z","tags":[],"geo":{"lat":-3.5,"lon":2}}"#,
            ],
            Rules { timestamps: true },
        );
        assert_eq!(
            described(&ty),
            r#"{"struct":[{"name":"id","type":"int64"},{"name":"name","type":"utf8"},{"name":"score","type":"float64"},{"name":"at","type":"timestamp"},{"name":"tags","type":{"list":"utf8"}},{"name":"geo","type":{"struct":[{"name":"lat","type":"float64"},{"name":"lon","type":"int64"}]}},{"name":"gone","type":"null"}]}"#
        );
        let kept = infer(&[r#"{"at":"2024-01-01T00:00:00Z"}"#], Rules::default());
        assert_eq!(described(&kept), r#"{"struct":[{"name":"at","type":"utf8"}]}"#);
    }

    #[test]
    fn numbers_widen_only_without_loss() {
        let widened = |values: &[&str]| {
            let records: Vec<String> = values.iter().map(|v| format!("{{\"n\":{v}}}")).collect();
            let refs: Vec<&str> = records.iter().map(String::as_str).collect();
            match infer(&refs, Rules::default()) {
                Ty::Struct(s) => s.fields[0].ty.name(),
                _ => unreachable!(),
            }
        };
        assert_eq!(widened(&["1", "2.5"]), "float64");
        assert_eq!(widened(&["9007199254740993", "2.5"]), "json");
        assert_eq!(widened(&["2.5", "9007199254740993"]), "json");
        assert_eq!(widened(&["9007199254740993"]), "int64");
        assert_eq!(widened(&["18446744073709551617"]), "json");
        assert_eq!(widened(&["0.1", "1e3", "-2.50"]), "float64");
        assert_eq!(widened(&["123456789012345678901234567890.5"]), "json");
        assert_eq!(widened(&["1", "\"001\""]), "json");
        assert_eq!(widened(&["null", "true"]), "boolean");
    }

    #[test]
    fn maps_and_clashes_become_json() {
        let many: Vec<String> = (0..40).map(|i| format!("{{\"m\":{{\"k{i}\":1}}}}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(described(&infer(&refs, Rules::default())), r#"{"struct":[{"name":"m","type":"json"}]}"#);
        let dated = infer(&[r#"{"m":{"2024-01-01":3,"2024-01-02":4}}"#], Rules::default());
        assert_eq!(described(&dated), r#"{"struct":[{"name":"m","type":"json"}]}"#);
        let clash = infer(&[r#"{"v":{"a":1}}"#, r#"{"v":"text"}"#], Rules::default());
        assert_eq!(described(&clash), r#"{"struct":[{"name":"v","type":"json"}]}"#);
    }

    #[test]
    fn rewriting_turns_json_columns_into_strings() {
        let ty = infer(&[r#"{"id":1,"v":{"a":1}}"#, r#"{"id":2,"v":"t\"x"}"#], Rules::default());
        let mut out = Vec::new();
        ty.rewrite(br#"{"id":2,"v":"t\"x"}"#, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":2,"v":"\"t\\\"x\""}"#);
        let mut out = Vec::new();
        ty.rewrite(br#"{"id":3,"v":null}"#, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":3,"v":null}"#);
    }

    #[test]
    fn declared_schemas_check_records() {
        let ty = parse_schema_file(
            r#"{"fields":[{"name":"id","type":"int64","nullable":false},{"name":"geo","type":{"struct":[{"name":"lat","type":"float64"}]}}]}"#,
        )
        .unwrap();
        assert!(ty.check(br#"{"id":1,"geo":{"lat":2}}"#, "$").is_ok());
        assert_eq!(
            ty.check(br#"{"id":1,"geo":{"lat":"x"}}"#, "$").unwrap_err().to_string(),
            "field `geo.lat`: expected float64, found a string"
        );
        assert_eq!(ty.check(br#"{"geo":null}"#, "$").unwrap_err().found, "nothing");
        assert_eq!(ty.check(br#"{"id":1,"x":2}"#, "$").unwrap_err().field, "x");
        assert!(parse_schema_file(r#"{"fields":[{"name":"a","type":"int"}]}"#).unwrap_err().contains("unknown type"));
    }

    #[test]
    fn merging_pages_equals_widening_by_each_record() {
        let records = [
            r#"{"id":1,"v":1,"s":"2024-01-01T00:00:00Z","o":{"a":1}}"#,
            r#"{"id":2,"v":2.5,"s":"x","o":{"b":[1]},"n":null}"#,
            r#"{"id":3,"v":9007199254740993,"o":{"a":2.5},"n":"t"}"#,
            r#"{"id":4,"v":null,"n":{"deep":true},"l":[{"k":1},{"k":"x"}]}"#,
        ];
        let rules = Rules { timestamps: true };
        for split in 0..=records.len() {
            let whole = infer(&records, rules);
            let mut merged = infer(&records[..split], rules);
            merged.merge_record(&infer(&records[split..], rules));
            assert_eq!(described(&merged), described(&whole), "split at {split}");
        }
    }

    #[test]
    fn keys_compare_byte_for_byte_at_every_length() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()), "{n}");
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0, "{n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same_bytes(&a, &b), "{n} at {at}");
            }
        }
    }

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(decimal("1.50"), decimal("15e-1"));
        assert_eq!(decimal("1.5e0"), decimal(&format!("{:e}", 1.5f64)));
        assert_eq!(decimal("0.000"), decimal("0"));
        assert_ne!(decimal("0.1"), decimal("0.10000000000000001"));
    }
}
