//! Incremental syncs: each run asks only for what changed since the last complete one.
//!
//! The high-water mark of a partition is the maximum of `[incremental] field` over the records
//! a run wrote, compared as RFC 3339 instants when both sides parse as such, else as numbers,
//! else as strings. It is kept in `_harvest/state.json`, and only for partitions that ended by
//! the API's own end condition: a run cut short by `max_pages` or `max_records` advances no
//! mark (on an API that serves newest first it would skip everything older). The next run
//! sends the mark, less `lookback` when it is a time, as `param`; a resumed run sends what the
//! run it resumes sent (the checkpoint keeps it).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::jsonpath::{Document, JsonPath};
use crate::output::Layout;
use crate::plan::IncrementalPlan;
use crate::redact::{Redactor, Unsealable};

const VERSION: u32 = 1;

/// `_harvest/state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Marks {
    pub version: u32,
    /// Partition label (empty for a job without partitions) → mark.
    pub marks: BTreeMap<String, String>,
}

impl Marks {
    /// The marks, with sealed secrets filled again from the job's current values: those of
    /// `state.json` and of every shard's `state-<I>of<N>.json`, the highest of each partition
    /// (each shard keeps the marks of the partitions it harvested).
    pub fn load(layout: &Layout, secrets: &Redactor) -> Result<Marks, Error> {
        let listed = layout
            .list(crate::output::HARVEST)
            .map_err(|e| Error::io(format!("listing {}", layout.display(crate::output::HARVEST)), e))?;
        let mut state = Marks { version: VERSION, ..Marks::default() };
        let own = layout.state_rel();
        let mut files: Vec<String> = listed
            .into_iter()
            .filter(|e| e.name == "state.json" || (e.name.starts_with("state-") && e.name.ends_with(".json")))
            .map(|e| format!("{}/{}", crate::output::HARVEST, e.name))
            .collect();
        // This run's own file is read through the layout, which remembers its version.
        if !files.contains(&own) {
            files.push(own.clone());
        }
        for rel in files {
            for (key, mark) in Self::load_file(layout, &rel, secrets, rel == own)?.marks {
                state.raise(&key, &mark);
            }
        }
        Ok(state)
    }

    fn load_file(layout: &Layout, rel: &str, secrets: &Redactor, own: bool) -> Result<Marks, Error> {
        let path = layout.display(rel);
        let read = match own {
            true => layout.read(rel),
            false => layout.store.get(rel).map(|got| got.map(|(bytes, _)| bytes)),
        };
        match read {
            Ok(Some(bytes)) => {
                let corrupt =
                    |e: &dyn std::fmt::Display| Error::Checkpoint(format!("{path} is corrupt ({e}); fix or remove it"));
                let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| corrupt(&e))?;
                secrets.unseal_json(&mut value).map_err(|why| match why {
                    Unsealable::Gone(name) => Error::Checkpoint(format!(
                        "{path} holds a mark made with ${{{name}}}, which the job no longer takes from the environment"
                    )),
                    unknown @ Unsealable::UnknownForm(_) => corrupt(&unknown),
                })?;
                let state: Marks = serde_json::from_value(value).map_err(|e| corrupt(&e))?;
                match state.version > VERSION {
                    true => Err(Error::Checkpoint(format!(
                        "{path} was written by a newer harvest (version {})",
                        state.version
                    ))),
                    false => Ok(state),
                }
            }
            Ok(None) => Ok(Marks { version: VERSION, ..Marks::default() }),
            Err(e) => Err(Error::io(format!("reading {path}"), e)),
        }
    }

    /// Write the marks atomically, every secret in them sealed (see [`Redactor::seal`]).
    pub fn save(&self, layout: &Layout, secrets: &Redactor) -> Result<(), Error> {
        let mut value = serde_json::to_value(self).expect("state serializes");
        secrets.seal_json(&mut value);
        let json = serde_json::to_vec_pretty(&value).expect("state serializes");
        layout.write(&layout.state_rel(), &json, "state-write")
    }

    /// Raise the job's marks to `sealed` (a run's, as its manifest holds them) and save them:
    /// a Delta run's marks, once its table holds the run.
    pub fn save_committed(layout: &Layout, secrets: &Redactor, sealed: &BTreeMap<String, String>) -> Result<(), Error> {
        let mut value = serde_json::to_value(sealed).expect("marks serialize");
        secrets.unseal_json(&mut value).map_err(|why| {
            Error::Checkpoint(format!("the newest run's manifest holds marks that cannot be read ({why})"))
        })?;
        let marks: BTreeMap<String, String> = serde_json::from_value(value).expect("marks stay strings");
        let mut state = Marks::load(layout, secrets)?;
        for (key, mark) in &marks {
            state.raise(key, mark);
        }
        state.save(layout, secrets)
    }

    /// Raise a partition's mark to `mark` (never lowers it).
    pub fn raise(&mut self, label: &str, mark: &str) {
        self.version = VERSION;
        match self.marks.get(label) {
            Some(old) if compare(old, mark) != Ordering::Less => {}
            _ => {
                self.marks.insert(label.to_string(), mark.to_string());
            }
        }
    }
}

/// The marks a run sends: for each partition with a mark in `state.json`, by key, and for
/// every other one. A checkpoint keeps them, so a resume sends what its run sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub marks: BTreeMap<String, String>,
    pub otherwise: Option<String>,
}

impl Sent {
    /// From the marks of the last complete sync.
    pub fn from_state(plan: &IncrementalPlan, state: &Marks) -> Sent {
        Sent {
            marks: state
                .marks
                .iter()
                .filter_map(|(key, mark)| Some((key.clone(), to_send(plan, Some(mark))?)))
                .collect(),
            otherwise: to_send(plan, None),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.marks.get(key).or(self.otherwise.as_ref()).map(String::as_str)
    }
}

/// What a run sends for a partition: its mark less the lookback, or `start` without a mark.
/// The lookback moves times: RFC 3339 marks, and numbers that read as epoch seconds or
/// milliseconds (see [`epoch_unit`]); other marks (ids, versions, text) go as they are.
pub fn to_send(plan: &IncrementalPlan, mark: Option<&str>) -> Option<String> {
    let Some(mark) = mark else { return plan.start.clone() };
    let lookback = plan.lookback.unwrap_or_default();
    if lookback.is_zero() {
        return Some(mark.to_string());
    }
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(mark) {
        let at = at.with_timezone(&chrono::Utc) - chrono::Duration::from_std(lookback).unwrap_or_default();
        return Some(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    }
    if let Ok(at) = mark.parse::<i64>() {
        if let Some(per_second) = epoch_unit(at as f64) {
            let back = i64::try_from(lookback.as_millis() * per_second as u128 / 1000).unwrap_or(i64::MAX);
            return Some(at.saturating_sub(back).to_string());
        }
    }
    if let Ok(at) = mark.parse::<f64>() {
        if let Some(per_second) = epoch_unit(at) {
            return Some((at - lookback.as_secs_f64() * per_second as f64).to_string());
        }
    }
    Some(mark.to_string())
}

/// A number that reads as an epoch time after 1973: how many of its units make a second.
/// Seconds from 1e8 (1973) to 1e11 (year 5138), milliseconds from 1e11 on (1973) up to 1e14;
/// smaller or larger numbers are not taken for times.
fn epoch_unit(value: f64) -> Option<u64> {
    match value {
        v if (1e8..1e11).contains(&v) => Some(1),
        v if (1e11..1e14).contains(&v) => Some(1000),
        _ => None,
    }
}

/// The order of two marks: as instants when both are RFC 3339, else as numbers, else as text.
pub fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        if let Some(order) = x.partial_cmp(&y) {
            return order;
        }
    }
    a.cmp(b)
}

/// The greater of two optional marks.
pub fn max(a: Option<String>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) if compare(&a, b) == Ordering::Less => Some(b.to_string()),
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_string),
    }
}

/// The value of `field` in a record, as a mark: a record without it (or with null there)
/// has none.
pub fn mark_of(field: &JsonPath, record: &Document<'_>) -> Option<String> {
    field.first(record).ok().flatten()?.as_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_compare_as_times_then_numbers_then_text() {
        assert_eq!(compare("2024-01-01T00:00:00Z", "2023-12-31T23:00:00-02:00"), Ordering::Less);
        assert_eq!(compare("9", "10"), Ordering::Less);
        assert_eq!(compare("b", "a"), Ordering::Greater);
        let mut state = Marks::default();
        state.raise("", "2024-01-02T00:00:00Z");
        state.raise("", "2024-01-01T00:00:00Z");
        assert_eq!(state.marks[""], "2024-01-02T00:00:00Z");
    }

    #[test]
    fn the_mark_is_the_greatest_value_whatever_the_order() {
        let path = JsonPath::parse("$.updated_at").unwrap();
        let lines = b"{\"updated_at\":\"2024-01-01T00:05:00Z\"}\n{\"updated_at\":\"2024-01-01T00:09:00Z\"}\n\
                      {\"updated_at\":null}\n{\"x\":1}\n{\"updated_at\":\"2024-01-01T00:01:00Z\"}\n";
        let marks = lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|line| {
            let record = Document::parse(line).unwrap();
            mark_of(&path, &record)
        });
        let mark = marks.fold(None, |mark, next| max(mark, next.as_deref()));
        assert_eq!(mark.as_deref(), Some("2024-01-01T00:09:00Z"));
    }

    #[test]
    fn lookback_moves_times_only() {
        let mut plan = IncrementalPlan {
            field: JsonPath::parse("$.t").unwrap(),
            param: "since".into(),
            start: Some("2020-01-01T00:00:00Z".into()),
            lookback: Some(std::time::Duration::from_secs(3600)),
            placeholder: false,
        };
        assert_eq!(to_send(&plan, None).as_deref(), Some("2020-01-01T00:00:00Z"));
        assert_eq!(to_send(&plan, Some("2024-01-01T10:00:00Z")).as_deref(), Some("2024-01-01T09:00:00Z"));
        assert_eq!(to_send(&plan, Some("2024-01-01T10:00:00.250+02:00")).as_deref(), Some("2024-01-01T07:00:00.250Z"));
        // Epoch seconds and milliseconds move by the lookback in their own unit.
        assert_eq!(to_send(&plan, Some("1704103200")).as_deref(), Some("1704099600"));
        assert_eq!(to_send(&plan, Some("1704103200500")).as_deref(), Some("1704099600500"));
        assert_eq!(to_send(&plan, Some("1704103200.5")).as_deref(), Some("1704099600.5"));
        // Small numbers (ids, versions) and text are not times.
        assert_eq!(to_send(&plan, Some("1700")).as_deref(), Some("1700"));
        assert_eq!(to_send(&plan, Some("v1704103200")).as_deref(), Some("v1704103200"));
        plan.lookback = None;
        assert_eq!(to_send(&plan, Some("2024-01-01T10:00:00Z")).as_deref(), Some("2024-01-01T10:00:00Z"));
    }
}
