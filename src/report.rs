//! The run report: what a run did, said at its end on stderr and kept in its manifest (and
//! sent by the webhook). It is the same whether the run completed, failed or was interrupted:
//! records and pages, parts and bytes written, duration and rate, requests, retries by cause,
//! time spent waiting on the server's limits, and each partition with its stop reason in
//! words. Above [`Finished::NAMED`] partitions it counts stop reasons and names only the
//! partitions that warned.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::checkpoint::{Finished, Position};
use crate::fetch::FetchStats;
use crate::human;
use crate::paginate::StopReason;
use crate::partition::PartitionReport;
use crate::plan::partition_named;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Complete,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub job: String,
    pub run: String,
    pub outcome: Outcome,
    /// Why a run that did not complete stopped, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub records: u64,
    pub pages: u64,
    pub records_per_second: f64,
    pub parts: u64,
    pub bytes_written: u64,
    pub requests: u64,
    /// Retries by cause (`status_503`, `timeout`, ...).
    pub retries: BTreeMap<String, u64>,
    /// Pauses the server asked for, by cause (`retry_after`, `x_ratelimit`, ...).
    pub server_pauses: BTreeMap<String, u64>,
    pub server_wait_seconds: f64,
    /// Pages answered from the response cache (`run --cache`) instead of the server.
    #[serde(skip_serializing_if = "is_zero")]
    pub cached: u64,
    pub partitions: PartitionCounts,
    /// Values asked for and not returned: how many, and the first [`MISSING_SHOWN`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Missing>,
    /// Where the data is.
    pub output: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionCounts {
    /// In the job.
    pub total: u64,
    pub ended: u64,
    /// How many ended for each reason (`no_next`, `total_reached`, ...).
    pub stops: BTreeMap<String, u64>,
    /// How many stopped after their first page while the response suggested more.
    pub warnings: u64,
    /// Each partition that ended, by name, when the job has at most [`Finished::NAMED`];
    /// above that only those that warned.
    pub named: Vec<Named>,
    /// Partitions a run that did not complete left under way.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<String>,
}

/// Values the run asked for that no record answered.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub count: u64,
    /// The placeholder they filled (`id`).
    pub of: String,
    pub first: Vec<String>,
}

/// Missing values a report shows; the manifest lists them all.
pub const MISSING_SHOWN: usize = 100;

impl Missing {
    /// `3 ids asked but not returned: 7, 9, 12`.
    pub fn words(&self) -> String {
        let more = match self.count as usize > self.first.len() {
            true => format!(" and {} more (the manifest lists them all)", self.count as usize - self.first.len()),
            false => String::new(),
        };
        format!("{} {}s asked but not returned: {}{more}", self.count, self.of, self.first.join(", "))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub partition: String,
    pub records: u64,
    pub pages: u64,
    /// The stop reason in words: "no next link", "total reached".
    pub stop: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What a report is made of, beyond the position.
pub struct Facts<'a> {
    pub job: &'a str,
    pub run: &'a str,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub started_at: &'a str,
    pub seconds: f64,
    pub partitions: u64,
    pub http: &'a FetchStats,
    pub output: PathBuf,
    pub manifest: Option<PathBuf>,
    /// The placeholder a listed source fills, for the words about missing values.
    pub asked_as: String,
}

impl Report {
    pub fn new(facts: Facts<'_>, position: &Position) -> Report {
        let done = &position.done;
        let records = position.records();
        let named = |r: &PartitionReport| Named {
            partition: r.partition.clone(),
            records: r.records,
            pages: r.pages,
            stop: r.stop.words(),
            warning: r.warning.clone(),
        };
        let many = facts.partitions > Finished::NAMED as u64;
        let mut listed: Vec<(u64, Named)> = done
            .reports
            .iter()
            .filter(|(_, r)| !many || r.warning.is_some())
            .map(|(index, r)| (*index, named(r)))
            .collect();
        listed.sort_by_key(|(index, _)| *index);
        let open = position.open.as_ref();
        Report {
            job: facts.job.to_string(),
            run: facts.run.to_string(),
            outcome: facts.outcome,
            error: facts.error,
            started_at: facts.started_at.to_string(),
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            seconds: facts.seconds,
            records,
            pages: position.pages(),
            records_per_second: records as f64 / facts.seconds.max(1e-3),
            parts: position.parts.len() as u64 + u64::from(open.is_some()),
            bytes_written: position.parts.iter().map(|p| p.bytes).sum::<u64>() + open.map_or(0, |o| o.len),
            requests: facts.http.requests,
            retries: facts.http.retries.clone(),
            server_pauses: facts.http.pauses.clone(),
            server_wait_seconds: facts.http.server_wait_seconds,
            cached: facts.http.cached,
            partitions: PartitionCounts {
                total: facts.partitions,
                ended: done.count(),
                stops: done.stops.clone(),
                warnings: done.warnings,
                named: listed.into_iter().map(|(_, n)| n).collect(),
                unfinished: position.active.keys().take(Finished::NAMED).cloned().collect(),
            },
            missing: (!done.missing.is_empty()).then(|| Missing {
                count: done.missing().count() as u64,
                of: facts.asked_as,
                first: done.missing().take(MISSING_SHOWN).cloned().collect(),
            }),
            output: facts.output,
            manifest: facts.manifest,
        }
    }

    /// The report as people read it on stderr.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let outcome = match self.outcome {
            Outcome::Complete => "complete",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        };
        let _ = writeln!(
            out,
            "run {} of job {}: {outcome} in {}",
            self.run,
            self.job,
            human::duration(Duration::from_secs_f64(self.seconds))
        );
        let _ = writeln!(
            out,
            "  records: {} in {} ({} records/s)",
            human::count(self.records),
            human::plural(self.pages, "page", "pages"),
            human::rate(self.records_per_second),
        );
        let _ = writeln!(
            out,
            "  written: {}, {} into {}",
            human::plural(self.parts, "part", "parts"),
            human::bytes(self.bytes_written),
            self.output.display()
        );
        let _ = writeln!(out, "  requests: {}", self.requests_words());
        self.partitions_text(&mut out);
        if let Some(missing) = &self.missing {
            let _ = writeln!(out, "  missing: {}", missing.words());
        }
        if let Some(manifest) = &self.manifest {
            let _ = writeln!(out, "  manifest: {}", manifest.display());
        }
        out
    }

    /// The requests made, their retries, pages from the cache and waits on the server.
    fn requests_words(&self) -> String {
        let mut requests = human::count(self.requests);
        let retries: u64 = self.retries.values().sum();
        match retries {
            0 => requests.push_str(", no retries"),
            _ => {
                let causes: Vec<String> =
                    self.retries.iter().map(|(cause, n)| format!("{n} {}", cause.replace('_', " "))).collect();
                requests.push_str(&format!(", {} ({})", human::plural(retries, "retry", "retries"), causes.join(", ")));
            }
        }
        if self.cached > 0 {
            requests.push_str(&format!("; {} from the response cache", human::plural(self.cached, "page", "pages")));
        }
        let pauses: u64 = self.server_pauses.values().sum();
        if pauses > 0 {
            let causes: Vec<String> = self
                .server_pauses
                .iter()
                .map(|(cause, n)| format!("{n} {}", crate::progress::cause_words(cause)))
                .collect();
            requests.push_str(&format!(
                "; waited {} on the server's limits ({})",
                human::duration(Duration::from_secs_f64(self.server_wait_seconds)),
                causes.join(", ")
            ));
        }
        requests
    }

    /// Partitions ended, of how many, and each one's records and stop; those left unfinished.
    fn partitions_text(&self, out: &mut String) {
        let p = &self.partitions;
        if p.total > 1 {
            let stops: Vec<String> =
                p.stops.iter().map(|(stop, n)| format!("{n} {}", StopReason::words_named(stop))).collect();
            let _ = writeln!(
                out,
                "  partitions: {} of {} ended{}{}",
                human::count(p.ended),
                human::count(p.total),
                if stops.is_empty() { String::new() } else { format!(" ({})", stops.join(", ")) },
                match p.warnings {
                    0 => String::new(),
                    n => format!(", {} with a warning", human::count(n)),
                }
            );
        }
        let width = p.named.iter().map(|n| n.partition.chars().count()).max().unwrap_or(0);
        for named in &p.named {
            match p.total {
                1 => {
                    let _ = writeln!(out, "  stopped: {}", named.stop);
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "    {:width$}  {}  {}  {}",
                        named.partition,
                        human::plural(named.records, "record", "records"),
                        human::plural(named.pages, "page", "pages"),
                        named.stop
                    );
                }
            }
            if let Some(warning) = &named.warning {
                let indent = if p.total == 1 { "  " } else { "      " };
                let _ = writeln!(out, "{indent}warning: stopped after its first page: {warning}");
            }
        }
        if !p.unfinished.is_empty() {
            let shown: Vec<String> = p.unfinished.iter().take(10).map(|key| partition_named(key)).collect();
            let more = p.unfinished.len().saturating_sub(10);
            let _ = writeln!(
                out,
                "  unfinished: {}{} (the next run resumes them)",
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            );
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
