//! The JSON Schema of job and pipeline files, for editors.

use crate::job::JobFile;

/// The JSON Schema of job files (draft-07, which editors read), made from the structs a job is
/// read into: Even Better TOML and taplo validate and complete job files with it.
pub fn json_schema() -> serde_json::Value {
    let settings = || {
        let mut settings = schemars::generate::SchemaSettings::draft07();
        settings.transforms.push(Box::new(schemars::transform::RecursiveTransform(without_null)));
        settings
    };
    let mut job = settings().into_generator().into_root_schema_for::<JobFile>().to_value();
    let mut pipeline = settings().into_generator().into_root_schema_for::<super::file::PipelineFile>().to_value();
    // One schema for both kinds of file: each kind's keys exclude the other's.
    let mut definitions = serde_json::Map::new();
    for schema in [&mut job, &mut pipeline] {
        let object = schema.as_object_mut().expect("a root schema is an object");
        object.remove("$schema");
        if let Some(serde_json::Value::Object(d)) = object.remove("definitions") {
            definitions.extend(d);
        }
    }
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "harvest job or pipeline file",
        "description": "A harvest job, or a pipeline of jobs ([[job]] tables): see docs/GUIDE.md of harvest.",
        "oneOf": [job, pipeline],
        "definitions": definitions,
    })
}

/// TOML has no null: an optional key is one that may be left out, not one that may be null.
fn without_null(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else { return };
    if let Some(serde_json::Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            object.insert("type".into(), only);
        }
    }
    if let Some(serde_json::Value::Array(options)) = object.get_mut("anyOf") {
        options.retain(|o| o.get("type").is_none_or(|t| t != "null"));
        if options.len() == 1 {
            let only = options.remove(0);
            object.remove("anyOf");
            if let serde_json::Value::Object(only) = only {
                object.extend(only);
            }
        }
    }
}
