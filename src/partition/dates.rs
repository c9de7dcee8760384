//! `day = { start = 2024-01-01, end = 2024-02-01, step = "1d" }`: a range cut into windows,
//! one partition each, filling `{day}` with a window's start and `{day_end}` with its end.
//!
//! `[start, end)` is cut into `step`s, the last one clipped. Dates (`2024-01-01`) step in
//! whole days and are written back as dates; date-times (RFC 3339) step by any duration and
//! are written back in UTC with `Z`. Windows are computed as they are asked for.

use chrono::{DateTime, NaiveDate, Utc};

use super::{Fill, Source};

#[derive(Debug)]
pub struct Dates {
    key: String,
    range: Range,
    step: chrono::Duration,
    windows: u64,
}

#[derive(Debug, Clone, Copy)]
enum Range {
    Days(NaiveDate, NaiveDate),
    Instants(DateTime<Utc>, DateTime<Utc>),
}

impl Dates {
    /// Read `{ start, end, step }` (`step` one day unless given).
    pub fn parse(key: &str, table: &toml::Table) -> Result<Dates, String> {
        if let Some(other) = table.keys().find(|k| !matches!(k.as_str(), "start" | "end" | "step")) {
            return Err(format!("unknown key `{other}` in a date range (it takes start, end and step)"));
        }
        let text = |name: &str| -> Result<String, String> {
            match table.get(name) {
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(toml::Value::Datetime(d)) => Ok(d.to_string()),
                Some(other) => Err(format!("{name} must be a date or date-time, not {}", other.type_str())),
                None => Err(format!("a date range needs {name}")),
            }
        };
        let (start, end) = (text("start")?, text("end")?);
        let step = match table.get("step") {
            None => std::time::Duration::from_secs(86_400),
            Some(toml::Value::String(s)) => humantime::parse_duration(s)
                .map_err(|e| format!("step {s:?} is not a duration ({e}); write e.g. \"1d\""))?,
            Some(_) => return Err("step must be a duration such as \"1d\"".into()),
        };
        let step = chrono::Duration::from_std(step).map_err(|e| e.to_string())?;
        if step <= chrono::Duration::zero() {
            return Err("step must be positive".into());
        }
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d");
        let (range, span) = match (day(&start), day(&end)) {
            (Ok(from), Ok(to)) => {
                if step.num_seconds() % 86_400 != 0 {
                    return Err("dates step in whole days; give start and end as date-times for shorter steps".into());
                }
                (Range::Days(from, to), to.signed_duration_since(from))
            }
            _ => {
                let instant = |s: &str| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|d| d.with_timezone(&Utc))
                        .map_err(|e| format!("{s:?} is neither a date (2024-01-01) nor an RFC 3339 date-time: {e}"))
                };
                let (from, to) = (instant(&start)?, instant(&end)?);
                (Range::Instants(from, to), to.signed_duration_since(from))
            }
        };
        if span <= chrono::Duration::zero() {
            return Err(format!("the range from {start} to {end} is empty"));
        }
        let (span, step_ns) = (span.num_nanoseconds(), step.num_nanoseconds());
        let windows = match (span, step_ns) {
            (Some(span), Some(step)) => (span as u64).div_ceil(step as u64),
            // Beyond 292 years in nanoseconds: count in seconds.
            _ => (span.unwrap_or(i64::MAX) as u64 / 1_000_000_000).div_ceil(step.num_seconds().max(1) as u64),
        };
        Ok(Dates { key: key.to_string(), range, step, windows })
    }

    /// Window `i`, as the placeholders it fills.
    fn window(&self, i: u64) -> Vec<(String, String)> {
        let offset = match self.step.num_nanoseconds().and_then(|ns| ns.checked_mul(i as i64)) {
            Some(ns) => chrono::Duration::nanoseconds(ns),
            None => chrono::Duration::seconds(self.step.num_seconds().saturating_mul(i as i64)),
        };
        let (start, end) = match self.range {
            Range::Days(from, to) => {
                let show = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
                let at = from + offset;
                (show(at), show((at + self.step).min(to)))
            }
            Range::Instants(from, to) => {
                let show = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                let at = from + offset;
                (show(at), show((at + self.step).min(to)))
            }
        };
        vec![(self.key.clone(), start), (format!("{}_end", self.key), end)]
    }
}

impl Source for Dates {
    fn count(&self) -> u64 {
        self.windows
    }

    fn values(&self) -> Box<dyn Iterator<Item = Fill> + Send + '_> {
        Box::new((0..self.windows).map(|i| Fill::of(self.window(i))))
    }

    fn placeholders(&self) -> Vec<String> {
        vec![self.key.clone(), format!("{}_end", self.key)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(text: &str) -> Result<Vec<(String, String)>, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let dates = Dates::parse("d", &table)?;
        Ok(dates.values().map(|w| (w.pairs[0].1.clone(), w.pairs[1].1.clone())).collect())
    }

    #[test]
    fn date_ranges_cut_into_windows() {
        let days = windows("start = 2024-01-30\nend = 2024-02-02\nstep = \"1d\"").unwrap();
        assert_eq!(
            days,
            vec![
                ("2024-01-30".into(), "2024-01-31".into()),
                ("2024-01-31".into(), "2024-02-01".into()),
                ("2024-02-01".into(), "2024-02-02".into())
            ]
        );
        let weeks = windows("start = \"2024-01-01\"\nend = \"2024-01-10\"\nstep = \"1w\"").unwrap();
        assert_eq!(weeks.len(), 2);
        assert_eq!(weeks[1], ("2024-01-08".into(), "2024-01-10".into()), "the last window is clipped");
        let hours =
            windows("start = \"2024-01-01T00:00:00+01:00\"\nend = \"2024-01-01T01:00:00Z\"\nstep = \"1h\"").unwrap();
        assert_eq!(
            hours,
            vec![
                ("2023-12-31T23:00:00Z".into(), "2024-01-01T00:00:00Z".into()),
                ("2024-01-01T00:00:00Z".into(), "2024-01-01T01:00:00Z".into())
            ]
        );
        assert!(windows("start = 2024-01-01\nend = 2024-01-02\nstep = \"1h\"").is_err());
        assert!(windows("start = 2024-01-02\nend = 2024-01-01").is_err());
        assert!(windows("start = 2024-01-01\nend = 2024-01-02\nstride = \"1d\"").is_err());
    }

    #[test]
    fn a_long_range_of_short_steps_is_counted_not_listed() {
        let table: toml::Table =
            toml::from_str("start = \"2000-01-01T00:00:00Z\"\nend = \"2030-01-01T00:00:00Z\"\nstep = \"1s\"").unwrap();
        let dates = Dates::parse("t", &table).unwrap();
        assert_eq!(dates.count(), 946_771_200);
        assert_eq!(dates.window(dates.count() - 1)[0].1, "2029-12-31T23:59:59Z");
    }
}
