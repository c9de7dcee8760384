//! Pipeline files: a top level of `[[job]]` tables (and an optional `name`), each a job file
//! and the jobs it runs after.
//!
//! ```toml
//! name = "github"
//! [[job]]
//! file = "repos.toml"
//! [[job]]
//! file = "issues.toml"
//! after = ["repos"]
//! ```
//!
//! Each job file is read as `harvest run` reads it (with the same command-line overrides), so a
//! mistake in any of them is reported before anything runs; `after` names jobs by their
//! `name`, and a job named twice, an unknown name or a cycle is an error at its line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::JobError;
use crate::job::{line_col, Overrides};
use crate::keys::Spanned;
use crate::plan::Plan;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "harvest pipeline file",
    description = "Jobs run in the order their `after` lists give: see docs/GUIDE.md of harvest."
)]
pub struct PipelineFile {
    /// Names the pipeline's state, `<dir>/_pipelines/<name>.json`; the file's name unless given.
    #[schemars(regex(pattern = r"^[a-z0-9_-]+$"))]
    name: Option<Spanned<String>>,
    #[schemars(length(min = 1))]
    job: Vec<JobEntry>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct JobEntry {
    /// The job file, relative to the pipeline file.
    file: Spanned<String>,
    /// Jobs (by their `name`) that must complete first in the same pipeline run.
    #[serde(default)]
    after: Vec<Spanned<String>>,
}

/// A pipeline, read and checked.
#[derive(Debug)]
pub struct PipelinePlan {
    pub name: String,
    pub file: PathBuf,
    /// Where its state is kept: `--output-dir`, else the first job's output folder.
    pub dir: PathBuf,
    /// The state's store settings (the first job's).
    pub store: crate::plan::StorePlan,
    pub jobs: Vec<Step>,
}

/// One job of a pipeline.
#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub file: PathBuf,
    /// Places in `jobs` of those it runs after.
    pub after: Vec<usize>,
}

/// True when the file at `path` is a pipeline file: it has `[[job]]` tables and no
/// `[request]`.
pub fn is_pipeline(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let Ok(table) = text.parse::<toml::Table>() else { return false };
    matches!(table.get("job"), Some(toml::Value::Array(_))) && !table.contains_key("request")
}

/// Read a pipeline file and every job file it names.
pub fn load(path: &Path, overrides: &Overrides) -> Result<PipelinePlan, JobError> {
    load_with(path, overrides, crate::job::load)
}

/// Read a pipeline to look at its output only (`harvest status`): its jobs are read with
/// [`crate::job::load_offline`], so their variables need not be set.
pub fn load_offline(path: &Path, overrides: &Overrides) -> Result<PipelinePlan, JobError> {
    load_with(path, overrides, crate::job::load_offline)
}

fn load_with(
    path: &Path,
    overrides: &Overrides,
    load_job: fn(&Path, &Overrides) -> Result<Plan, JobError>,
) -> Result<PipelinePlan, JobError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobError::new(path, None, format!("cannot read the pipeline file: {e}")))?;
    let at =
        |span: std::ops::Range<usize>, message: String| JobError::new(path, Some(line_col(&text, span.start)), message);
    let file: PipelineFile = toml::from_str(&text).map_err(|e: toml::de::Error| {
        JobError::new(path, e.span().map(|s| line_col(&text, s.start)), e.message().trim().to_string())
    })?;
    let name = match &file.name {
        Some(name) => {
            let text = name.get_ref();
            if text.is_empty()
                || !text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            {
                return Err(at(name.span(), format!("name {text:?} must match [a-z0-9_-]+")));
            }
            text.clone()
        }
        None => path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "pipeline".into()),
    };
    if file.job.is_empty() {
        return Err(JobError::new(path, None, "a pipeline file needs at least one [[job]]"));
    }

    let mut plans: Vec<(PathBuf, Plan)> = Vec::new();
    for entry in &file.job {
        let job_path = crate::store::fs::beside(path, PathBuf::from(entry.file.get_ref()));
        if !job_path.is_file() {
            return Err(at(
                entry.file.span(),
                format!("job file {} cannot be read (it is not there)", job_path.display()),
            ));
        }
        let plan = load_job(&job_path, overrides)?;
        if let Some((other, _)) = plans.iter().find(|(_, p)| p.name == plan.name) {
            return Err(at(
                entry.file.span(),
                format!(
                    "job {} is named twice (by {} too): each job's output needs its own name",
                    plan.name,
                    other.display()
                ),
            ));
        }
        plans.push((job_path, plan));
    }
    let jobs = steps(&file, &plans, &at)?;
    if let Some(cycle) = cycle(&jobs) {
        let names: Vec<&str> = cycle.iter().map(|&i| jobs[i].name.as_str()).collect();
        return Err(JobError::new(
            path,
            None,
            format!("the jobs wait for each other in a cycle: {}", names.join(" -> ")),
        ));
    }
    let first = &plans[0].1;
    Ok(PipelinePlan {
        name,
        file: path.to_path_buf(),
        dir: first.output.dir.clone(),
        store: first.output.store.clone(),
        jobs,
    })
}

/// The pipeline's jobs in the file's order, each with the jobs it waits for by index.
fn steps(
    file: &PipelineFile,
    plans: &[(PathBuf, Plan)],
    at: &dyn Fn(std::ops::Range<usize>, String) -> JobError,
) -> Result<Vec<Step>, JobError> {
    let mut jobs: Vec<Step> = Vec::new();
    for (entry, (job_path, plan)) in file.job.iter().zip(plans) {
        let mut after = Vec::new();
        for dependency in &entry.after {
            let Some(index) = plans.iter().position(|(_, p)| &p.name == dependency.get_ref()) else {
                let names: Vec<&str> = plans.iter().map(|(_, p)| p.name.as_str()).collect();
                return Err(at(
                    dependency.span(),
                    format!(
                        "after names job {:?}, which is not in the pipeline (its jobs: {})",
                        dependency.get_ref(),
                        names.join(", ")
                    ),
                ));
            };
            after.push(index);
        }
        jobs.push(Step { name: plan.name.clone(), file: job_path.clone(), after });
    }
    Ok(jobs)
}

/// A cycle of `after` links, if there is one: the jobs on it, back to the first.
fn cycle(jobs: &[Step]) -> Option<Vec<usize>> {
    // 0: not seen, 1: on the current path, 2: done.
    fn visit(i: usize, jobs: &[Step], marks: &mut [u8], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[i] = 1;
        path.push(i);
        for &next in &jobs[i].after {
            match marks[next] {
                1 => {
                    let from = path.iter().position(|&j| j == next).expect("on the path");
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, jobs, marks, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        marks[i] = 2;
        None
    }
    let mut marks = vec![0u8; jobs.len()];
    (0..jobs.len()).find_map(|i| if marks[i] == 0 { visit(i, jobs, &mut marks, &mut Vec::new()) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, after: &[usize]) -> Step {
        Step { name: name.into(), file: PathBuf::new(), after: after.to_vec() }
    }

    #[test]
    fn a_cycle_is_found_and_named_in_order() {
        assert_eq!(cycle(&[step("a", &[]), step("b", &[0]), step("c", &[1])]), None);
        let jobs = [step("a", &[2]), step("b", &[0]), step("c", &[1])];
        assert_eq!(cycle(&jobs), Some(vec![0, 2, 1, 0]));
        assert_eq!(cycle(&[step("a", &[0])]), Some(vec![0, 0]));
    }
}
