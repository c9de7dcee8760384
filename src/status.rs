//! `harvest status`: where a job stands, from its output alone (a folder or object storage): a
//! run in progress (who holds the lock or lease), the unfinished run's checkpoint with each
//! partition's progress, the last completed run from its manifest(s), and each shard of the
//! newest sharded run; `harvest finalize`.

use std::fmt::Write;

use crate::checkpoint;
use crate::error::Error;
use crate::output::Layout;
use crate::plan::Plan;
use crate::shard::Shard;

/// The report, as printed.
pub fn report(plan: &Plan) -> Result<String, Error> {
    let layout = Layout::for_reading(plan)?;
    let ttl = plan.output.store.lease_ttl;
    let mut out = String::new();
    let _ = writeln!(out, "job {} ({})", plan.name, layout.display(""));
    let listed = layout.list(crate::output::HARVEST).map_err(|e| Error::io("reading the output", e))?;
    let runs = layout.list(crate::output::RUNS).map_err(|e| Error::io("reading the output", e))?;
    if listed.is_empty() && runs.is_empty() {
        let _ = writeln!(out, "no run yet");
        return Ok(out);
    }
    match layout.holder(ttl)? {
        Some(holder) => {
            let _ = writeln!(out, "running now: {holder}");
        }
        None => {
            let _ = writeln!(out, "running now: no");
        }
    }
    match checkpoint::load(&layout, &plan.job_file, &plan.redactor)? {
        Some(saved) => {
            let position = &saved.position;
            let records = position.records();
            let _ = writeln!(
                out,
                "unfinished run {} (started {}, last checkpoint {}): {records} records written, {} part(s) \
                 published{}; `harvest run` resumes it, `--fresh` discards it",
                saved.run,
                saved.started_at,
                saved.written_at,
                position.parts.len(),
                match &position.open {
                    Some(open) => format!(", {} rows in the open part", open.rows),
                    None => String::new(),
                }
            );
            let done = position.done.count();
            if done > 0 {
                let stops: Vec<String> = position.done.stops.iter().map(|(stop, n)| format!("{n} {stop}")).collect();
                let _ = writeln!(
                    out,
                    "  {done} of {} partitions done ({}): {} pages, {} records",
                    // Values from a file or another job's output are counted by reading them.
                    match plan.partitions.open() {
                        Ok(()) => plan.partitions.count().to_string(),
                        Err(_) => "?".to_string(),
                    },
                    stops.join(", "),
                    position.done.pages,
                    position.done.records
                );
            }
            for (label, frontier) in &position.active {
                let done = frontier
                    .resume
                    .as_ref()
                    .and_then(|r| r.get("done"))
                    .filter(|d| !d.is_null())
                    .map(|d| format!(", done ({})", d["reason"].as_str().unwrap_or("?")))
                    .unwrap_or_default();
                // What it asks next, as `check --probe` shows it: secrets masked.
                let next = match (done.is_empty(), frontier.resume.as_ref().and_then(|r| r.get("next"))) {
                    (true, Some(next)) if !next.is_null() => serde_json::from_value(next.clone())
                        .map(|next| format!("; {}", crate::request::describe_request(plan, &next)))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let name = if label.is_empty() { "the partition".to_string() } else { format!("partition {label}") };
                let _ = writeln!(out, "  {name}: {} pages, {} records{done}{next}", frontier.pages, frontier.records);
            }
        }
        None => {
            let _ = writeln!(out, "unfinished run: none");
        }
    }
    match crate::manifest::latest(&layout)? {
        Some(manifest) => {
            let _ = writeln!(
                out,
                "last completed run {}: finished {}, {} in {}, {} in {}",
                manifest.run,
                manifest.finished_at,
                crate::human::plural(manifest.records, "record", "records"),
                crate::human::plural(manifest.pages, "page", "pages"),
                crate::human::plural(manifest.parts.len() as u64, "part", "parts"),
                crate::human::duration(std::time::Duration::from_secs_f64(manifest.seconds.max(0.0))),
            );
        }
        None => {
            let _ = writeln!(out, "last completed run: none");
        }
    }
    if plan.output.format == crate::plan::Format::Delta {
        if let Some(table) = crate::table::blocking(crate::table::describe(plan, &layout))? {
            out.push_str(&table);
        }
    }
    shards(plan, &layout, &mut out)?;
    match &plan.incremental {
        None => {
            let _ = writeln!(out, "incremental marks: none (the job has no [incremental])");
        }
        Some(incremental) => {
            let state = crate::incremental::Marks::load(&layout, &plan.redactor)?;
            match state.marks.is_empty() {
                true => {
                    let _ = writeln!(out, "incremental marks: none yet (the next run sends {:?})", incremental.start);
                }
                false => {
                    let _ = writeln!(out, "incremental marks ({}):", incremental.field.as_str());
                    for (label, mark) in &state.marks {
                        let name =
                            if label.is_empty() { "the partition".to_string() } else { format!("partition {label}") };
                        let _ = writeln!(out, "  {name}: {mark}");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `harvest finalize`: the newest sharded run, once all its shards completed; in replace mode
/// the parts of earlier runs are removed (if the last shard to finish has not done so).
pub fn finalize(plan: &Plan) -> Result<String, Error> {
    let layout = Layout::for_reading(plan)?;
    let Some(newest) = crate::output::newest_run(&layout) else {
        return Err(Error::Usage(format!("no sharded run under {}", layout.root.display())));
    };
    let left = crate::output::unfinished(&layout, &newest.run, newest.shards)?;
    if !left.is_empty() {
        let left: Vec<String> = left.iter().map(u32::to_string).collect();
        return Err(Error::Unfinished(format!(
            "run {} (run id {}) is not complete: shard(s) {} of {} have no manifest yet; run them, then finalize",
            newest.run,
            newest.run_id,
            left.join(", "),
            newest.shards
        )));
    }
    let done = format!("run {} (run id {}) is complete: all {} shards", newest.run, newest.run_id, newest.shards);
    if plan.output.format == crate::plan::Format::Delta {
        return Ok(match crate::table::blocking(crate::table::commit(plan, &layout))? {
            Some(crate::table::Committed::Now { version, .. }) => {
                format!("{done}; committed as table version {version}")
            }
            _ => format!("{done}; the table holds it"),
        });
    }
    match plan.output.mode {
        crate::plan::Mode::Replace => {
            let removed = layout
                .remove_other_runs(&newest.run)
                .map_err(|e| Error::io("removing the parts of earlier runs", e))?;
            Ok(format!("{done}; removed {removed} part file(s) of earlier runs (mode = \"replace\")"))
        }
        crate::plan::Mode::Append | crate::plan::Mode::Merge => {
            Ok(format!("{done}; earlier runs' parts are kept (mode = \"append\")"))
        }
    }
}

/// Sharded runs: the newest run id's shards, each done, running or unfinished, and the
/// unfinished checkpoints of any shard.
fn shards(plan: &Plan, layout: &Layout, out: &mut String) -> Result<(), Error> {
    let Some(newest) = crate::output::newest_run(layout) else { return Ok(()) };
    let left = crate::output::unfinished(layout, &newest.run, newest.shards)?;
    let _ = writeln!(
        out,
        "sharded run {} (run id {}, {} shards): {}",
        newest.run,
        newest.run_id,
        newest.shards,
        match left.len() {
            0 => "complete".to_string(),
            n => format!("{} of {} shards complete", newest.shards as usize - n, newest.shards),
        }
    );
    for index in 0..newest.shards {
        let shard = Shard { index, count: newest.shards };
        let own = Layout::of(layout.store.clone(), layout.root.clone(), Some(shard));
        let state = match (left.contains(&index), own.holder(plan.output.store.lease_ttl)?) {
            (false, _) => "complete".to_string(),
            (true, Some(holder)) => format!("running now ({holder})"),
            (true, None) => match checkpoint::load(&own, &plan.job_file, &plan.redactor)? {
                Some(saved) if saved.run == newest.run => format!(
                    "unfinished: {} records written, last checkpoint {}",
                    saved.position.records(),
                    saved.written_at
                ),
                _ => "not started".to_string(),
            },
        };
        let _ = writeln!(out, "  shard {index} of {}: {state}", newest.shards);
    }
    Ok(())
}
