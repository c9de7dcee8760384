//! `[partitions]`: each key a source of values (a list, a date range cut into windows, a
//! file, or a field of another job's output), one partition per combination; and
//! `[partitions.check]`, what a batch's records are checked against. The sources themselves
//! are in `crate::partition`.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::job_output::JobOutput;
use crate::partition::dates::Dates;
use crate::partition::file::{FileValues, Form};
use crate::partition::listed::{Batch, Listed};
use crate::partition::values::Values;
use crate::partition::{Partitions, Source};

/// True when `{key}` is in the scheme or host of a URL template.
pub(super) fn in_authority(template: &str, key: &str) -> bool {
    let after_scheme = template.find("://").map_or(0, |i| i + 3);
    let path_at = template[after_scheme..].find('/').map_or(template.len(), |i| after_scheme + i);
    template[..path_at].contains(&format!("{{{key}}}"))
}

/// Where the job's output goes (a `from` source reads its sibling there), and the request's
/// URL as written (the parent fields it places).
pub(super) struct OutputAt<'a> {
    pub dir: &'a Path,
    pub store: &'a crate::plan::StorePlan,
    pub url: &'a str,
}

impl Cx<'_> {
    pub(super) fn partitions(
        &self,
        table: &IndexMap<String, Spanned<toml::Value>>,
        output: &OutputAt<'_>,
    ) -> R<Partitions> {
        let mut sources: Vec<Arc<dyn Source>> = Vec::new();
        let mut check = None;
        for (key, values) in table {
            let span = values.span();
            if key == "check" {
                check = Some(self.check(values.get_ref(), &span)?);
                continue;
            }
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(span, format!("partition key {key:?} must be letters, digits and _")));
            }
            let source: Arc<dyn Source> = match values.get_ref() {
                toml::Value::Array(items) if !items.is_empty() => Arc::new(Values::new(
                    key,
                    items.iter().map(|v| self.scalar(v, &span, &format!("partition {key}"))).collect::<R<_>>()?,
                )),
                toml::Value::Array(_) => return Err(self.err(span, format!("partition {key} has no values"))),
                toml::Value::Table(t) if t.contains_key("file") || t.contains_key("from") => {
                    Arc::new(self.listed(key, t, &span, output)?)
                }
                toml::Value::Table(range) => {
                    Arc::new(Dates::parse(key, range).map_err(|e| self.err(span, format!("partition {key}: {e}")))?)
                }
                _ => {
                    return Err(self.err(
                        span,
                        format!("partition {key} must be a list of values, a date range, a file or a job's output"),
                    ))
                }
            };
            sources.push(source);
        }
        let partitions = Partitions::new(sources);
        if check.is_some() && !partitions.has_listed() {
            let span = table.get("check").map(|c| c.span()).unwrap_or_default();
            return Err(
                self.err(span, "[partitions.check] checks the values of a file or a job's output: there is none")
            );
        }
        Ok(partitions.checking(check))
    }

    /// `{ file = "ids.csv", column = "id" }`, `{ from = "repos", field = "$.id", include = {..} }`,
    /// either with `batch` and `join`.
    fn listed(&self, key: &str, t: &toml::Table, span: &Range<usize>, output: &OutputAt<'_>) -> R<Listed> {
        let err = |message: String| self.err(span.clone(), format!("partition {key}: {message}"));
        let text = |name: &str| -> R<Option<String>> {
            match t.get(name) {
                None => Ok(None),
                Some(toml::Value::String(s)) => self.interpolate(s, span, false).map(Some),
                Some(other) => Err(err(format!("{name} must be a string, not {}", other.type_str()))),
            }
        };
        let path = |name: &str| -> R<Option<JsonPath>> {
            text(name)?.map(|p| JsonPath::parse(p.trim()).map_err(|e| err(format!("{name}: {e}")))).transpose()
        };
        let (allowed, reader): (&[&str], Box<dyn crate::partition::listed::Reader>) = match text("file")? {
            Some(file) => {
                let resolved = self.beside_job(&file);
                if !resolved.is_file() {
                    return Err(err(format!("file {} cannot be read (it is not there)", resolved.display())));
                }
                let form = match (text("column")?, path("field")?) {
                    (Some(_), Some(_)) => {
                        return Err(err("a file takes column (CSV) or field (NDJSON), not both".into()))
                    }
                    (Some(column), None) => Form::Csv { column },
                    (None, Some(field)) => Form::Ndjson { field },
                    (None, None) => Form::Lines,
                };
                (&["file", "column", "field", "batch", "join"], Box::new(FileValues::new(resolved, form)))
            }
            None => {
                let job = text("from")?.expect("a table with file or from");
                if job.is_empty()
                    || !job.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
                {
                    return Err(err(format!("from = {job:?} must name a job ([a-z0-9_-]+)")));
                }
                let Some(field) = path("field")? else {
                    return Err(err("a job's output needs field, the JSONPath of the value in each record".into()));
                };
                let include = match t.get("include") {
                    None => Vec::new(),
                    Some(toml::Value::Table(include)) => include
                        .iter()
                        .map(|(name, p)| match p {
                            toml::Value::String(p) => JsonPath::parse(p.trim())
                                .map(|p| (name.clone(), p))
                                .map_err(|e| err(format!("include.{name}: {e}"))),
                            _ => Err(err(format!("include.{name} must be a JSONPath string"))),
                        })
                        .collect::<R<_>>()?,
                    Some(_) => return Err(err("include must be a table of names and JSONPaths".into())),
                };
                // Parent fields the URL places fill their placeholders beside the value (one
                // named as the partition only goes into `_parent`: the value fills `{key}`).
                let placed = include
                    .iter()
                    .map(|(name, _)| name.clone())
                    .filter(|name| name != key && output.url.contains(&format!("{{{name}}}")))
                    .collect();
                let reader = JobOutput::new(output.dir, output.store, &job, field, include, placed);
                (&["from", "field", "include", "batch", "join"], Box::new(reader))
            }
        };
        if let Some(other) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(err(format!("unknown key `{other}`{}", key_hint(other, allowed))));
        }
        let batch = match t.get("batch") {
            None => None,
            Some(toml::Value::Integer(n)) if *n >= 1 => {
                if t.contains_key("include") {
                    return Err(err("include carries one parent's fields: it cannot go with batch".into()));
                }
                Some(Batch { size: *n as usize, join: text("join")?.unwrap_or_else(|| ",".to_string()) })
            }
            Some(_) => return Err(err("batch must be a whole number of values, at least 1".into())),
        };
        if batch.is_none() && t.contains_key("join") {
            return Err(err("join goes with batch".into()));
        }
        Ok(Listed::new(key, reader, batch))
    }

    /// `[partitions.check] field = "$.id"`.
    fn check(&self, value: &toml::Value, span: &Range<usize>) -> R<JsonPath> {
        let toml::Value::Table(t) = value else {
            return Err(
                self.err(span.clone(), "[partitions.check] is a table with field (check cannot name a partition)")
            );
        };
        if let Some(other) = t.keys().find(|k| k.as_str() != "field") {
            return Err(self.err(span.clone(), format!("unknown key `{other}` in [partitions.check]; it takes field")));
        }
        match t.get("field") {
            Some(toml::Value::String(p)) => {
                JsonPath::parse(p.trim()).map_err(|e| self.err(span.clone(), format!("[partitions.check] field: {e}")))
            }
            _ => {
                Err(self.err(span.clone(), "[partitions.check] needs field, the JSONPath of the value in each record"))
            }
        }
    }
}
