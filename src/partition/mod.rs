//! Partitions: the job's independent pagination streams, one per combination of its sources'
//! values (`repo = ["a", "b"]` times a date range), in a fixed order.
//!
//! A partition is known by its key, `repo=rust,day=2024-01-01` (`,` `=` and `%` inside values
//! percent-encoded, so a key always splits back the same way): checkpoints, manifests and
//! `state.json` name partitions by it, never by position, so a job whose values change order
//! cannot mix up two partitions' progress. The combinations are produced lazily, one at a
//! time, so a million partitions never sit in memory; their place in the order (`index`) lets
//! a checkpoint record the finished ones as a few ranges.
//!
//! Each source is a file of its own: [`values`] (a list), [`dates`] (a range cut into
//! windows), [`file`] (values in a file) and [`from`] (a field of another job's records), the
//! last two read as a stream with repeats dropped ([`listed`]). A source gives its values in
//! the same order every time it is asked.

pub mod dates;
pub mod distinct;
pub mod file;
pub mod listed;
pub mod values;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::jsonpath::JsonPath;
use crate::paginate::StopReason;

/// One partition: its place in the job's order, its key, and the placeholder values it fills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    pub index: u64,
    /// `repo=rust,day=2024-01-01`; empty for a job without partitions. Each source's first
    /// placeholder names it (a date window by its start: its `{day_end}` follows from it).
    pub key: String,
    pub values: Vec<(String, String)>,
    /// Members of the `_parent` object its records get (`"repo_id":1`); empty for none.
    pub parent: String,
    /// The values of a listed source it asks for (a batch's, or the one): what
    /// `[partitions.check]` and a detail request's 404 report as missing.
    pub asked: Vec<String>,
}

impl Partition {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// This partition with one more source's value.
    fn and(&self, fill: Fill) -> Partition {
        let mut next = self.clone();
        // The source's first placeholder names it, or its first `keyed` (a value and the
        // parent fields placed beside it).
        for (i, (name, value)) in fill.pairs.iter().take(fill.keyed.max(1)).enumerate() {
            if !next.key.is_empty() {
                next.key.push(',');
            }
            next.key.push_str(name);
            next.key.push('=');
            let shown = match (i, &fill.label) {
                (0, Some(label)) => label,
                _ => value,
            };
            for c in shown.chars() {
                match c {
                    // What separates a key's parts, and the escape itself.
                    ',' => next.key.push_str("%2C"),
                    '=' => next.key.push_str("%3D"),
                    '%' => next.key.push_str("%25"),
                    c => next.key.push(c),
                }
            }
        }
        next.values.extend(fill.pairs);
        if !fill.parent.is_empty() {
            if !next.parent.is_empty() {
                next.parent.push(',');
            }
            next.parent.push_str(&fill.parent);
        }
        if !fill.asked.is_empty() {
            next.asked = fill.asked;
        }
        next
    }
}

/// What one value of a source fills in: its placeholders, and what it brings along.
#[derive(Debug, Clone, Default)]
pub struct Fill {
    pub pairs: Vec<(String, String)>,
    /// What the partition's key shows instead of the first placeholder's value (a batch's
    /// `first+more`).
    pub label: Option<String>,
    /// How many of `pairs` name the partition (1 when 0).
    pub keyed: usize,
    /// Members of the `_parent` object (`"repo_id":1`).
    pub parent: String,
    pub asked: Vec<String>,
}

impl Fill {
    pub fn of(pairs: Vec<(String, String)>) -> Self {
        Fill { pairs, ..Fill::default() }
    }
}

/// Where a partition's values come from.
pub trait Source: fmt::Debug + Send + Sync {
    /// Read what the values depend on (a file, another job's output), once; until then a
    /// source that needs it gives nothing.
    fn open(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Why a pass over its values ended before their end, if one did.
    fn failure(&self) -> Option<Error> {
        None
    }

    /// True when its values are written in the job file; false when they come from outside
    /// (a file, a job's output), so that they can never name the host a request goes to.
    fn inline(&self) -> bool {
        true
    }

    /// How many values it gives.
    fn count(&self) -> u64;

    /// Its values in order, each as what one value fills; the same every time.
    fn values(&self) -> Box<dyn Iterator<Item = Fill> + Send + '_>;

    /// The placeholders its values fill.
    fn placeholders(&self) -> Vec<String>;
}

/// The job's partitions: every combination of its sources, the first source varying slowest.
/// A job without `[partitions]` has one partition with no values.
#[derive(Debug, Clone, Default)]
pub struct Partitions {
    sources: Vec<Arc<dyn Source>>,
    /// `[partitions.check] field`: where a record holds the value it was asked for.
    pub check: Option<JsonPath>,
}

impl Partitions {
    pub fn new(sources: Vec<Arc<dyn Source>>) -> Self {
        Partitions { sources, check: None }
    }

    pub fn checking(self, check: Option<JsonPath>) -> Self {
        Partitions { check, ..self }
    }

    /// True when a source lists values outside the job file (a file, a job's output).
    pub fn has_listed(&self) -> bool {
        self.sources.iter().any(|s| !s.inline())
    }

    /// Open every source: read the files and outputs the values come from.
    pub fn open(&self) -> Result<(), Error> {
        self.sources.iter().try_for_each(|s| s.open())
    }

    /// Why a pass over the partitions ended early: they are not all there are.
    pub fn failure(&self) -> Option<Error> {
        self.sources.iter().find_map(|s| s.failure())
    }

    /// How many partitions there are (saturating: a product past `u64` is not a real job).
    pub fn count(&self) -> u64 {
        self.sources.iter().fold(1u64, |n, s| n.saturating_mul(s.count()))
    }

    /// True when every partition has no values: a job without `[partitions]`.
    pub fn is_single(&self) -> bool {
        self.sources.is_empty()
    }

    /// The partitions in order, produced one at a time.
    pub fn iter(&self) -> impl Iterator<Item = Partition> + Send + '_ {
        combine(self.sources.iter().map(|s| s.as_ref()).collect()).zip(0u64..).map(|(mut p, index)| {
            p.index = index;
            p
        })
    }

    /// The combinations of only the inline sources that fill one of `placeholders` (the rest
    /// left out), for checks that depend on those alone.
    pub fn over(&self, placeholders: impl Fn(&str) -> bool) -> impl Iterator<Item = Partition> + Send + '_ {
        combine(
            self.sources
                .iter()
                .filter(|s| s.inline() && s.placeholders().iter().any(|p| placeholders(p)))
                .map(|s| s.as_ref())
                .collect(),
        )
    }

    /// The placeholders filled by values from outside the job file.
    pub fn listed_placeholders(&self) -> Vec<String> {
        self.sources.iter().filter(|s| !s.inline()).flat_map(|s| s.placeholders()).collect()
    }

    /// The placeholders partitions fill, in order.
    pub fn placeholders(&self) -> Vec<String> {
        self.sources.iter().flat_map(|s| s.placeholders()).collect()
    }

    /// What the sources are, for the checkpoint's fingerprint: the same text for the same
    /// partitions in the same order.
    pub fn describe(&self) -> String {
        format!("{:?}", self.sources)
    }
}

/// Every combination of the sources' values, lazily: the outer sources are read once, each
/// inner one again for every value outside it.
fn combine<'a>(sources: Vec<&'a dyn Source>) -> Box<dyn Iterator<Item = Partition> + Send + 'a> {
    let start: Box<dyn Iterator<Item = Partition> + Send + 'a> = Box::new(std::iter::once(Partition::default()));
    sources.into_iter().fold(start, |outer, source| {
        Box::new(outer.flat_map(move |partition| source.values().map(move |fill| partition.and(fill))))
    })
}

/// How one partition's harvest ended, for the log and the run manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    pub partition: String,
    pub records: u64,
    pub pages: u64,
    pub stop: StopReason,
    /// It stopped after its first page while the response suggested more: what it suggested
    /// and the likely fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Values it asked for that no record answered (`[partitions.check]`, or a 404).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(key: &str, items: &[&str]) -> Arc<dyn Source> {
        Arc::new(values::Values::new(key, items.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn combinations_come_in_a_fixed_order_one_at_a_time() {
        let partitions = Partitions::new(vec![values("repo", &["a", "b"]), values("kind", &["x", "y", "z"])]);
        assert_eq!(partitions.count(), 6);
        let keys: Vec<String> = partitions.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            ["repo=a,kind=x", "repo=a,kind=y", "repo=a,kind=z", "repo=b,kind=x", "repo=b,kind=y", "repo=b,kind=z"]
        );
        assert_eq!(partitions.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        let only_repo: Vec<String> = partitions.over(|p| p == "repo").map(|p| p.key).collect();
        assert_eq!(only_repo, ["repo=a", "repo=b"]);
        assert_eq!(Partitions::default().iter().map(|p| p.key).collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn a_key_splits_back_the_same_way_whatever_the_values_hold() {
        let p = Partition::default()
            .and(Fill::of(vec![("q".into(), "a=1,b=2%".into())]))
            .and(Fill::of(vec![("r".into(), "ü x".into())]));
        assert_eq!(p.key, "q=a%3D1%2Cb%3D2%25,r=ü x");
        let window = Partition::default()
            .and(Fill::of(vec![("day".into(), "2024-01-01".into()), ("day_end".into(), "2024-01-02".into())]));
        assert_eq!(window.key, "day=2024-01-01");
        assert_eq!(window.get("day_end"), Some("2024-01-02"));
    }

    #[test]
    fn a_million_partitions_are_never_held_at_once() {
        let many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let partitions = Partitions::new(vec![
            Arc::new(values::Values::new("a", many.clone())),
            Arc::new(values::Values::new("b", many)),
        ]);
        assert_eq!(partitions.count(), 1_000_000);
        let last = partitions.iter().last().unwrap();
        assert_eq!((last.index, last.key.clone()), (999_999, "a=999,b=999".to_string()));
    }
}
