//! `[partitions]`, `[limits]`, `[retry]` and `[incremental]`.

use super::*;

impl Cx<'_> {
    pub(super) fn incremental(&self, i: &IncrementalFile) -> R<IncrementalPlan> {
        let field = JsonPath::parse(i.field.get_ref())
            .map_err(|e| self.err(i.field.span(), format!("incremental.field is not a valid JSONPath: {e}")))?;
        let param = i.param.get_ref().trim().to_string();
        if param.is_empty() {
            return Err(self.err(i.param.span(), "incremental.param names the parameter the mark is sent as"));
        }
        let start = match &i.start {
            Some(s) => Some(self.interpolate(s.get_ref(), &s.span(), false)?),
            None => None,
        };
        let lookback = match &i.lookback {
            Some(_) => Some(self.duration(&i.lookback, Duration::ZERO)?),
            None => None,
        };
        Ok(IncrementalPlan { field, param, start, lookback })
    }

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

    pub(super) fn limits(&self, l: &LimitsFile) -> R<Limits> {
        let concurrency = match &l.concurrency {
            Some(c) if *c.get_ref() == 0 => return Err(self.err(c.span(), "concurrency must be at least 1")),
            Some(c) => *c.get_ref() as usize,
            None => 8,
        };
        let requests_per_second = match &l.requests_per_second {
            Some(r) if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) => {
                return Err(self.err(r.span(), "requests_per_second must be a positive number"))
            }
            Some(r) => Some(*r.get_ref()),
            None => None,
        };
        let burst = match &l.burst {
            Some(b) if *b.get_ref() == 0 => return Err(self.err(b.span(), "burst must be at least 1")),
            Some(b) => u32::try_from(*b.get_ref()).unwrap_or(u32::MAX),
            None => concurrency as u32,
        };
        Ok(Limits {
            concurrency,
            requests_per_second,
            burst,
            respect_server_limits: l.respect_server_limits.unwrap_or(true),
            max_wait: self.duration(&l.max_wait, Duration::from_secs(15 * 60))?,
        })
    }

    pub(super) fn retry(&self, r: &RetryFile) -> R<RetryPlan> {
        let max_attempts = match &r.max_attempts {
            Some(m) if *m.get_ref() == 0 => return Err(self.err(m.span(), "max_attempts must be at least 1")),
            Some(m) => u32::try_from(*m.get_ref()).unwrap_or(u32::MAX),
            None => 6,
        };
        let initial_backoff = self.duration(&r.initial_backoff, Duration::from_millis(500))?;
        let max_backoff = self.duration(&r.max_backoff, Duration::from_secs(60))?;
        let on_status = match &r.on_status {
            Some(codes) => {
                if let Some(bad) = codes.get_ref().iter().find(|c| !(100..=599).contains(*c)) {
                    return Err(self.err(codes.span(), format!("{bad} is not an HTTP status")));
                }
                codes.get_ref().clone()
            }
            None => vec![408, 425, 429, 500, 502, 503, 504],
        };
        Ok(RetryPlan { max_attempts, initial_backoff, max_backoff: max_backoff.max(initial_backoff), on_status })
    }
}
