//! Where `${VAR}` values come from, and what a variable that is not set means.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where `${VAR}` values come from: the process environment first, then `.env` next to the
/// job file, then `.env` in the working directory.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// A variable that is not set reads as a stand-in instead of failing: for commands that
    /// only read the output folder (`status`), which must work without the job's secrets.
    pub(super) missing_ok: bool,
}

impl Env {
    pub fn for_job(job_file: &Path) -> Self {
        let mut vars = HashMap::new();
        let mut dotenv_files = vec![PathBuf::from(".env")];
        let dir = crate::store::fs::folder_of(job_file);
        if dir != Path::new(".") {
            dotenv_files.push(dir.join(".env"));
        }
        // Later files win, so read the working directory's first.
        for file in dotenv_files {
            if let Ok(iter) = dotenvy::from_path_iter(&file) {
                for (k, v) in iter.flatten() {
                    vars.insert(k, v);
                }
            }
        }
        vars.extend(std::env::vars());
        Env { vars, missing_ok: false }
    }

    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Env { vars: pairs.into_iter().collect(), missing_ok: false }
    }

    /// Variables that are not set read as stand-ins (`${NAME}` itself, or a URL that goes
    /// nowhere where the value begins a URL), never sent anywhere: see [`load_offline`].
    pub fn missing_ok(mut self) -> Self {
        self.missing_ok = true;
        self
    }

    /// Set a variable for this job only (the demo points jobs at its mock API this way).
    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_string(), value.to_string());
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}
