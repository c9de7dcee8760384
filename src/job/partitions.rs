//! `[partitions]`: each key a source of values (a list, or a date range cut into windows),
//! one partition per combination. The sources themselves are in `crate::partition`.

use std::sync::Arc;

use super::*;
use crate::partition::dates::Dates;
use crate::partition::values::Values;
use crate::partition::{Partitions, Source};

impl Cx<'_> {
    pub(super) fn partitions(&self, table: &IndexMap<String, Spanned<toml::Value>>) -> R<Partitions> {
        let mut sources: Vec<Arc<dyn Source>> = Vec::new();
        for (key, values) in table {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(values.span(), format!("partition key {key:?} must be letters, digits and _")));
            }
            let source: Arc<dyn Source> = match values.get_ref() {
                toml::Value::Array(items) if !items.is_empty() => Arc::new(Values::new(
                    key,
                    items
                        .iter()
                        .map(|v| self.scalar(v, &values.span(), &format!("partition {key}")))
                        .collect::<R<_>>()?,
                )),
                toml::Value::Array(_) => return Err(self.err(values.span(), format!("partition {key} has no values"))),
                toml::Value::Table(range) => Arc::new(
                    Dates::parse(key, range).map_err(|e| self.err(values.span(), format!("partition {key}: {e}")))?,
                ),
                _ => {
                    return Err(
                        self.err(values.span(), format!("partition {key} must be a list of values or a date range"))
                    )
                }
            };
            sources.push(source);
        }
        Ok(Partitions::new(sources))
    }
}
