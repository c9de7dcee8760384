//! `[partitions]`: lists of values and date ranges, one partition per combination.

use super::*;

impl Cx<'_> {
    pub(super) fn partitions(&self, table: &IndexMap<String, Spanned<toml::Value>>) -> R<Vec<Partition>> {
        let mut combos = vec![Partition::default()];
        for (key, values) in table {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(values.span(), format!("partition key {key:?} must be letters, digits and _")));
            }
            // Each choice is the (placeholder, value) pairs one partition gets from this key.
            let choices: Vec<Vec<(String, String)>> = match values.get_ref() {
                toml::Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .map(|v| Ok(vec![(key.clone(), self.scalar(v, &values.span(), &format!("partition {key}"))?)]))
                    .collect::<R<_>>()?,
                toml::Value::Array(_) => return Err(self.err(values.span(), format!("partition {key} has no values"))),
                toml::Value::Table(range) => crate::plan::date_windows(range)
                    .map_err(|e| self.err(values.span(), format!("partition {key}: {e}")))?
                    .into_iter()
                    .map(|(start, end)| vec![(key.clone(), start), (format!("{key}_end"), end)])
                    .collect(),
                _ => {
                    return Err(
                        self.err(values.span(), format!("partition {key} must be a list of values or a date range"))
                    )
                }
            };
            combos = combos
                .into_iter()
                .flat_map(|p| {
                    choices.iter().map(move |pairs| {
                        let mut p = p.clone();
                        p.values.extend(pairs.iter().cloned());
                        p
                    })
                })
                .collect();
        }
        Ok(combos)
    }
}
