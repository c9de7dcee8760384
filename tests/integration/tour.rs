//! First contact, as a new user makes it: the README's tour run as written in a fresh folder
//! (so the README and this test cannot drift), every path a user may give in every form, and
//! output piped into a reader that goes away.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{one_to, python_with, read_records};

const BIN: &str = env!("CARGO_BIN_EXE_harvest");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The shell block under the README's heading `heading`.
fn shell_block(readme: &str, heading: &str) -> String {
    let section = readme.split_once(heading).unwrap_or_else(|| panic!("no {heading:?} in README.md")).1;
    let block = section.split_once("```sh\n").expect("a shell block").1;
    block.split_once("```").expect("a closed shell block").0.to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}

/// A shell block of the README run as written in a fresh folder (a checkout, as the README
/// assumes: its jobs, and the binary `cargo build --release` built), on a free port rather
/// than 8080 (tests run side by side: the mock takes it from HARVEST_MOCK_ADDR, the jobs from
/// HARVEST_MOCK_URL), with the Python wheels CI installed standing in for the block's venv
/// (`module`) instead of the network; the lines using the venv are left out without them.
/// The folder, stdout and stderr, and whether the Python lines ran.
fn run_as_written(block: &str, module: &str) -> (tempfile::TempDir, String, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    // This test's own binary: a stand-in `cargo` on PATH has nothing left to build.
    copy_dir(&Path::new(REPO).join("jobs"), &here.join("jobs"));
    std::fs::create_dir_all(here.join("target/release")).unwrap();
    std::os::unix::fs::symlink(BIN, here.join("target/release/harvest")).unwrap();
    std::fs::create_dir_all(here.join("bin")).unwrap();
    std::fs::write(here.join("bin/cargo"), "#!/bin/sh\nexit 0\n").unwrap();
    Command::new("chmod").args(["755", here.join("bin/cargo").to_str().unwrap()]).status().unwrap();
    let port = free_port();
    let mut script = block.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let python = python_with(module);
    let venv = script.lines().find(|l| l.starts_with("python3 -m venv")).expect("the block makes a venv").to_string();
    script = match &python {
        Some(python) => {
            // A wrapper, not a symlink: a venv's Python finds its packages from its own path.
            let wrapper = format!("#!/bin/sh\nexec {python} \"$@\"\n");
            std::fs::create_dir_all(here.join(".venv/bin")).unwrap();
            std::fs::write(here.join(".venv/bin/python"), wrapper).unwrap();
            Command::new("chmod").args(["755", here.join(".venv/bin/python").to_str().unwrap()]).status().unwrap();
            script.replace(&venv, "")
        }
        None => script.lines().filter(|l| !l.contains(".venv")).collect::<Vec<_>>().join("\n"),
    };
    let script = format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");
    let path = format!("{}:{}", here.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-c", &script])
        .current_dir(here)
        .env("PATH", path)
        .env("HARVEST_MOCK_URL", format!("http://127.0.0.1:{port}"))
        .env("HARVEST_MOCK_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the block failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    (dir, stdout.into_owned(), stderr.into_owned(), python.is_some())
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let (dir, stdout, stderr, duckdb) = run_as_written(&shell_block(&readme, "## A 60-second tour"), "duckdb");
    let here = dir.path();
    let job = std::fs::read_to_string(here.join("my.toml")).expect("init wrote my.toml");
    assert!(job.contains("kind = \"cursor\"") && !job.contains("NOT CONFIRMED"), "{job}");
    assert!(stderr.contains("confirmed: pages 1 to 3 hold"), "{stderr}");
    let ids: Vec<u64> = read_records(&here.join("output/cursor")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, one_to(5000));
    assert!(here
        .join("output/parquet")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".parquet")));
    if duckdb {
        let counted = stdout.lines().any(|l| l.split('│').map(str::trim).filter(|c| *c == "5000").count() == 2);
        assert!(counted, "DuckDB counts 5000 records, 5000 distinct ids: {stdout}");
    }
}

/// The README's "Tables" block: two runs of jobs/delta.toml are versions 0 and 1 of a Delta
/// table, which `status` shows and Polars reads, now and as of version 0; two runs of
/// jobs/delta-sync.toml merge into one row per id.
#[test]
fn the_readme_tables_section_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let (dir, stdout, _, polars) = run_as_written(&shell_block(&readme, "## Tables"), "deltalake");
    assert!(dir.path().join("output/delta/_delta_log/00000000000000000001.json").exists());
    assert!(stdout.contains("table: Delta Lake, version 1, ") && stdout.contains("10000 rows"), "{stdout}");
    assert!(dir.path().join("output/delta-sync/_delta_log/00000000000000000001.json").exists());
    if polars {
        assert!(stdout.lines().any(|l| l.trim() == "10000 5000"), "Polars reads both versions: {stdout}");
        assert!(stdout.lines().any(|l| l.trim() == "5000 5000"), "one row per id after the merge: {stdout}");
    }
}

fn harvest(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).current_dir(dir).env_remove("HARVEST_MOCK_URL").output().expect("harvest runs")
}

fn said(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `init`, `check`, `run` and `status` with the job file and the output folder named as a
/// bare name, `./x`, `../x`, an absolute path, a name with spaces and non-ASCII, and through a
/// symlinked folder: each writes where it was told and reads it back.
#[test]
fn every_form_of_path_works() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = harvest_mock::MockConfig { records: 120, ..Default::default() };
    let server = runtime.block_on(harvest_mock::MockServer::start(config)).unwrap();
    let url = format!("{}/offset?offset=0&limit=50", server.url());
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    std::fs::create_dir_all(root.path().join("real folder")).unwrap();
    std::os::unix::fs::symlink(root.path().join("real folder"), work.join("linked")).unwrap();
    let absolute = root.path().join("abs dir/jöb ü.toml");
    std::fs::create_dir_all(absolute.parent().unwrap()).unwrap();
    // (where the job file is named, from `work`; where its output goes; where that is).
    let cases: Vec<(String, String, PathBuf)> = vec![
        ("job.toml".into(), "out".into(), work.join("out")),
        ("./job2.toml".into(), "./out2".into(), work.join("out2")),
        ("../job3.toml".into(), "../out3".into(), root.path().join("out3")),
        (
            absolute.display().to_string(),
            root.path().join("ábs out").display().to_string(),
            root.path().join("ábs out"),
        ),
        ("sub/with space.toml".into(), "sub/out ü".into(), work.join("sub/out ü")),
        ("linked/job.toml".into(), "linked/out".into(), root.path().join("real folder/out")),
    ];
    for (job, out, lands) in &cases {
        let init = harvest(&work, &["init", &url, "--out", job, "--name", "paths"]);
        assert!(init.status.success(), "init --out {job}: {}", said(&init));
        let check = harvest(&work, &["check", job]);
        assert!(check.status.success(), "check {job}: {}", said(&check));
        let run = harvest(&work, &["run", job, "--output-dir", out]);
        assert!(run.status.success(), "run {job} --output-dir {out}: {}", said(&run));
        let ids: Vec<u64> = read_records(&lands.join("paths")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, one_to(120), "{job} into {out}");
        let status = harvest(&work, &["status", job, "--output-dir", out]);
        assert!(
            status.status.success() && said(&status).contains("last completed run"),
            "status {job}: {}",
            said(&status)
        );
    }
    assert!(work.join("job.toml").is_file() && root.path().join("job3.toml").is_file());
    assert!(root.path().join("real folder/job.toml").is_file(), "written through the symlinked folder");
}

/// Files a job names (a partition file, a pipeline's job files) are found beside the file that
/// names them, whichever way that file was named: from inside its folder by a bare name, and
/// from elsewhere through a symlinked folder with spaces and non-ASCII in its name.
#[test]
fn files_a_job_names_are_found_beside_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = harvest_mock::MockConfig { records: 40, ..Default::default() };
    let server = runtime.block_on(harvest_mock::MockServer::start(config)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("wörk dir");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, root.path().join("linked ü")).unwrap();
    std::fs::write(real.join("ids.txt"), "a\nb\n").unwrap();
    std::fs::write(
        real.join("job.toml"),
        format!(
            "name = \"files\"\n[request]\nurl = \"{}/t/{{k}}/offset\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n[partitions]\nk = {{ file = \"ids.txt\" }}\n",
            server.url()
        ),
    )
    .unwrap();
    std::fs::write(real.join("pipe.toml"), "[[job]]\nfile = \"job.toml\"\n").unwrap();
    let cases =
        [(real.clone(), "pipe.toml", "out"), (root.path().to_path_buf(), "linked ü/pipe.toml", "linked ü/out 2")];
    for (dir, pipeline, out) in cases {
        let run = harvest(&dir, &["run", pipeline, "--output-dir", out]);
        assert!(run.status.success(), "run {pipeline} from {}: {}", dir.display(), said(&run));
        let ids = read_records(&dir.join(out).join("files"));
        assert_eq!(ids.len(), 80, "{pipeline}: two partitions of 40");
        let check = harvest(&dir, &["check", pipeline]);
        assert!(check.status.success(), "check {pipeline}: {}", said(&check));
    }
}

/// A command whose reader has gone (`harvest status | head -1`) ends quietly: exit 0, nothing
/// on stderr, never a panic.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    // status and check need no server and, for status, none of the job's variables.
    std::fs::write(
        &job,
        "name = \"t\"\n[request]\nurl = \"${NOT_SET_ANYWHERE}/items\"\n[auth]\nkind = \"bearer\"\ntoken = \"${NOR_THIS}\"\n\
         [records]\npath = \"$[*]\"\n[pagination]\nkind = \"none\"\n",
    )
    .unwrap();
    let job = job.to_str().unwrap();
    let status = Command::new(BIN).args(["status", job]).output().unwrap();
    assert!(status.status.success(), "status needs no variables: {}", said(&status));
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", job],
        vec!["schema"],
        vec!["completions", "bash"],
        vec!["--help"],
        vec!["check", "jobs/cursor.toml"],
    ];
    for args in commands {
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(REPO)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes before anything is written.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said: {stderr}");
    }
}
