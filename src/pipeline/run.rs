//! A pipeline file's run: each job starts once the jobs it runs after have completed in this
//! pipeline run, independent jobs side by side (each under its own limits), and a failed job
//! stops its dependents and not the others.
//!
//! The pipeline's state, `<dir>/_pipelines/<name>.json`, says which jobs completed (with their
//! run), failed (with the exit code and error, secrets masked), were blocked by another, or
//! are still to run. A pipeline run that did not complete is taken up again by the next:
//! completed jobs are not run again, the others resume from their own checkpoints. Its exit
//! code is the first that applies of 130, 2, 3, 1 and 0.

use std::sync::Arc;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::file::PipelinePlan;
use crate::error::Error;
use crate::job::{self, Overrides};
use crate::output::Layout;
use crate::progress::Display;
use crate::report::Report;
use crate::run::{run_reported, RunOptions};
use crate::store::Put;

/// The pipeline's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineState {
    pub pipeline: String,
    /// This pipeline run: when it started, as a sortable name.
    pub run: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// In the pipeline file's order.
    pub jobs: IndexMap<String, JobState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    Waiting,
    Running,
    Complete {
        run: String,
        records: u64,
    },
    Failed {
        exit: u8,
        error: String,
    },
    /// Not run: a job it runs after failed or was blocked.
    Blocked {
        by: String,
    },
}

/// What a pipeline run came to.
#[derive(Debug)]
pub struct PipelineOutcome {
    /// The first that applies of 130, 2, 3, 1 and 0.
    pub code: u8,
    pub state: PipelineState,
}

/// Where the pipeline's state is kept.
pub fn state_layout(pipeline: &PipelinePlan) -> Result<Layout, Error> {
    Layout::for_reading_at(&pipeline.dir, "_pipelines", &pipeline.store)
}

/// The pipeline's state as the last run left it, if any.
pub fn read_state(pipeline: &PipelinePlan) -> Result<Option<PipelineState>, Error> {
    crate::output::read_json(&state_layout(pipeline)?, &format!("{}.json", pipeline.name))
}

fn write_state(layout: &Layout, state: &PipelineState) -> Result<(), Error> {
    let rel = format!("{}.json", state.pipeline);
    let json = serde_json::to_vec_pretty(state).expect("a pipeline's state serializes");
    layout
        .store
        .put(&rel, &json, Put::Overwrite, "pipeline-state-write")
        .map(|_| ())
        .map_err(|e| Error::Output { path: layout.display(&rel), problem: format!("cannot be written: {e:?}") })
}

/// Run the pipeline; `reported` hears of each job's report as it ends.
pub async fn run(
    pipeline: &PipelinePlan,
    overrides: &Overrides,
    options: RunOptions,
    reported: impl Fn(&str, &Report),
) -> Result<PipelineOutcome, Error> {
    let layout = state_layout(pipeline)?;
    let mut state = take_up(pipeline, options.fresh)?;
    // Several jobs at once share the terminal: a log line each rather than bars.
    let progress = match (options.progress, pipeline.jobs.len()) {
        (Display::Bars { .. }, n) if n > 1 => Display::Lines,
        (display, _) => display,
    };
    let options = RunOptions { progress, ..options };
    let mut running: JoinSet<Ended> = JoinSet::new();
    let mut codes: Vec<u8> = Vec::new();
    loop {
        block_dependents(pipeline, &mut state);
        start_ready(pipeline, overrides, &options, &mut state, &mut running, &mut codes);
        write_state(&layout, &state)?;
        let Some(joined) = running.join_next().await else { break };
        let (index, result, report) =
            joined.map_err(|e| Error::Task { task: "a pipeline job's task", cause: e.to_string() })?;
        let name = &pipeline.jobs[index].name;
        if let Some(report) = &report {
            reported(name, report);
        }
        let ended = match result {
            Ok(summary) => JobState::Complete { run: summary.run, records: summary.records },
            Err(error) => {
                codes.push(error.exit_code());
                // A report's error is already masked; one that never started says so itself.
                let words = report.as_ref().and_then(|r| r.error.clone()).unwrap_or_else(|| error.to_string());
                JobState::Failed { exit: error.exit_code(), error: words }
            }
        };
        state.jobs.insert(name.clone(), ended);
    }
    if options.cancel.is_cancelled() && !codes.contains(&130) {
        codes.push(130);
    }
    if state.jobs.values().all(|s| matches!(s, JobState::Complete { .. })) {
        state.finished_at = Some(now());
        write_state(&layout, &state)?;
    }
    Ok(PipelineOutcome { code: first_code(&codes), state })
}

/// A job of the pipeline that ended: its index, its result and its report.
type Ended = (usize, Result<crate::run::RunSummary, Error>, Option<Report>);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The pipeline run to go on with: the unfinished one (unless `fresh`), or a new one. Jobs
/// that did not complete in it (or are new to the file) wait to run now.
fn take_up(pipeline: &PipelinePlan, fresh: bool) -> Result<PipelineState, Error> {
    let mut state = match read_state(pipeline)? {
        Some(state) if state.finished_at.is_none() && !fresh => {
            tracing::info!("pipeline {}: taking up its run {} where it stopped", pipeline.name, state.run);
            state
        }
        _ => PipelineState {
            pipeline: pipeline.name.clone(),
            run: chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
            started_at: now(),
            finished_at: None,
            jobs: IndexMap::new(),
        },
    };
    state.jobs = pipeline
        .jobs
        .iter()
        .map(|step| match state.jobs.swap_remove(&step.name) {
            Some(done @ JobState::Complete { .. }) => (step.name.clone(), done),
            _ => (step.name.clone(), JobState::Waiting),
        })
        .collect();
    Ok(state)
}

/// Start every waiting job whose dependencies are complete (none once cancelled). A job
/// file that no longer loads fails that job, with its exit code kept.
fn start_ready(
    pipeline: &PipelinePlan,
    overrides: &Overrides,
    options: &RunOptions,
    state: &mut PipelineState,
    running: &mut JoinSet<Ended>,
    codes: &mut Vec<u8>,
) {
    for (index, step) in pipeline.jobs.iter().enumerate() {
        let ready = step.after.iter().all(|&i| matches!(state.jobs[&pipeline.jobs[i].name], JobState::Complete { .. }));
        if state.jobs[&step.name] != JobState::Waiting || !ready || options.cancel.is_cancelled() {
            continue;
        }
        // Read again now: its partitions may come from a job that has just completed.
        let plan = match job::load(&step.file, overrides) {
            Ok(plan) => Arc::new(plan),
            Err(e) => {
                let error = Error::from(e);
                codes.push(error.exit_code());
                state
                    .jobs
                    .insert(step.name.clone(), JobState::Failed { exit: error.exit_code(), error: error.to_string() });
                continue;
            }
        };
        tracing::info!("pipeline {}: job {} starts", pipeline.name, step.name);
        state.jobs.insert(step.name.clone(), JobState::Running);
        let options = options.clone();
        running.spawn(async move {
            let (result, report) = run_reported(plan, options).await;
            (index, result, report)
        });
    }
}

/// Jobs waiting on one that failed, or on one blocked in turn, will not run in this pipeline
/// run: marked so, however the file orders them.
fn block_dependents(pipeline: &PipelinePlan, state: &mut PipelineState) {
    loop {
        let blocked = pipeline.jobs.iter().find_map(|step| {
            let by = step
                .after
                .iter()
                .map(|&i| &pipeline.jobs[i].name)
                .find(|name| matches!(state.jobs[*name], JobState::Failed { .. } | JobState::Blocked { .. }))?;
            (state.jobs[&step.name] == JobState::Waiting).then(|| (step.name.clone(), by.clone()))
        });
        let Some((name, by)) = blocked else { return };
        tracing::warn!("pipeline {}: job {name} does not run: job {by} did not complete", pipeline.name);
        state.jobs.insert(name, JobState::Blocked { by });
    }
}

/// The pipeline's exit code from its jobs': the first that applies of 130, 2, 3, 1 and 0.
fn first_code(codes: &[u8]) -> u8 {
    [130u8, 2, 3, 1].into_iter().find(|c| codes.contains(c)).unwrap_or(0)
}

/// Each job's state in words, one line each.
pub fn describe(state: &PipelineState) -> String {
    let width = state.jobs.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, job) in &state.jobs {
        let words = match job {
            JobState::Waiting => "waiting".to_string(),
            JobState::Running => "running (or stopped without a word: the next run resumes it)".to_string(),
            JobState::Complete { run, records } => format!("complete: run {run}, {records} records"),
            JobState::Failed { exit, error } => format!("failed (exit {exit}): {error}"),
            JobState::Blocked { by } => format!("not run: job {by} did not complete"),
        };
        out.push_str(&format!("  {name:width$}  {words}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_outranks_a_bad_job_a_lock_and_a_failure() {
        assert_eq!(first_code(&[]), 0);
        assert_eq!(first_code(&[1, 3]), 3);
        assert_eq!(first_code(&[1, 3, 2]), 2);
        assert_eq!(first_code(&[2, 130, 1]), 130);
        assert_eq!(first_code(&[1, 1]), 1);
    }
}
