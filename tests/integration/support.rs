//! Helpers: run a job written inline against a mock server, read back what it wrote.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use harvest::error::Error;
use harvest::job::{self, Env, Overrides};
use harvest::run::{self, RunOptions, RunSummary};
use harvest_mock::{MockConfig, MockServer};
use serde_json::Value;
use tempfile::TempDir;

pub struct Fixture {
    pub server: MockServer,
    pub dir: TempDir,
}

impl Fixture {
    pub async fn new(records: u64) -> Self {
        Self::with(MockConfig { records, ..Default::default() }).await
    }

    pub async fn with(config: MockConfig) -> Self {
        let server = MockServer::start(config).await.expect("mock starts");
        Fixture { server, dir: tempfile::tempdir().expect("a temp dir") }
    }

    /// A mock serving `records` records `latency_ms` late each response: slow enough that a
    /// test can stop a worker while it runs.
    pub async fn slow(records: u64, latency_ms: u64) -> Self {
        Self::with(MockConfig { records, latency: std::time::Duration::from_millis(latency_ms), ..Default::default() })
            .await
    }

    /// Write `toml` (with `{base}` replaced by the mock's URL) to a job file.
    pub fn job(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("job.toml");
        std::fs::write(&path, toml.replace("{base}", &self.server.url())).expect("job written");
        path
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Run a job; `vars` are its environment.
    pub async fn run_with(&self, toml: &str, vars: &[(&str, &str)]) -> Result<RunSummary, Error> {
        let path = self.job(toml);
        let text = std::fs::read_to_string(&path).unwrap();
        let env = Env::from_pairs(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let overrides = Overrides { output_dir: Some(self.out()), ..Default::default() };
        let plan = job::parse(&path, &text, &env, &overrides)?;
        run::run(Arc::new(plan), RunOptions::default()).await
    }

    pub async fn run(&self, toml: &str) -> Result<RunSummary, Error> {
        self.run_with(toml, &[]).await
    }

    /// The records of the job's published parts, in file-name order.
    pub fn records(&self, job: &str) -> Vec<Value> {
        read_records(&self.out().join(job))
    }

    pub fn ids(&self, job: &str) -> Vec<u64> {
        self.records(job).iter().map(|r| r["id"].as_u64().expect("an id")).collect()
    }

    /// Each partition's records, in the order the part files hold them, read through the
    /// row ranges of the newest run manifest.
    pub fn records_by_partition(&self, job: &str) -> std::collections::BTreeMap<String, Vec<Value>> {
        let root = self.out().join(job);
        let mut manifests: Vec<PathBuf> =
            std::fs::read_dir(root.join("_harvest/runs")).unwrap().flatten().map(|e| e.path()).collect();
        manifests.sort();
        let manifest: Value = serde_json::from_slice(&std::fs::read(manifests.last().unwrap()).unwrap()).unwrap();
        let mut out: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for part in manifest["parts"].as_array().unwrap() {
            let text = std::fs::read_to_string(root.join(part["file"].as_str().unwrap())).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for slice in part["partitions"].as_array().unwrap() {
                let (from, to) =
                    (slice["rows"][0].as_u64().unwrap() as usize, slice["rows"][1].as_u64().unwrap() as usize);
                let records = out.entry(slice["partition"].as_str().unwrap().to_string()).or_default();
                records.extend(lines[from..to].iter().map(|l| serde_json::from_str::<Value>(l).unwrap()));
            }
        }
        out
    }

    /// The mock's requests to `path`.
    pub fn requests(&self, path: &str) -> usize {
        self.server.stats.count_path(path)
    }
}

pub fn part_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.retain(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"));
    files.sort();
    files
}

pub fn read_records(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for file in part_files(root) {
        let text = std::fs::read_to_string(&file).expect("a readable part");
        for line in text.lines() {
            out.push(
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", file.display())),
            );
        }
    }
    out
}

/// Small retry delays so failing cases end fast.
pub const FAST_RETRY: &str = "[retry]\nmax_attempts = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n";

/// Wait until the server has seen `n` requests (at most 20 s: a harvest that does not get
/// going fails the test rather than waiting for ever).
pub async fn until_requests(server: &MockServer, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.stats.requests() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the harvest did not get going: {} requests",
            server.stats.requests()
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

pub fn one_to(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// How late a request can reach a server on this machine while a test runs: a probe sends a
/// request every 5 ms to a mock of its own, from the test's runtime, and the spread of
/// (arrival − send) is the jitter that the arrival times a server logs may carry. Rate checks
/// allow that much slack, and no more.
pub struct Jitter {
    server: harvest_mock::MockServer,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Vec<std::time::Duration>>,
}

impl Jitter {
    pub async fn start() -> Self {
        let server = harvest_mock::MockServer::start(harvest_mock::MockConfig { records: 1, ..Default::default() })
            .await
            .expect("the probe's mock starts");
        let stop = tokio_util::sync::CancellationToken::new();
        let (url, until) = (format!("{}/offset?limit=1", server.url()), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let base = std::time::Instant::now();
            let mut sent = Vec::new();
            while !until.is_cancelled() {
                sent.push(base.elapsed());
                client.get(&url).send().await.expect("the probe's request").bytes().await.expect("its body");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            sent
        });
        Jitter { server, stop, task }
    }

    /// The largest difference in delay between two probe requests, sent to arrived.
    pub async fn finish(self) -> std::time::Duration {
        self.stop.cancel();
        let sent = self.task.await.expect("the probe ran");
        let arrived: Vec<std::time::Duration> = self.server.stats.log().iter().map(|s| s.at).collect();
        assert!(
            sent.len() >= 5 && sent.len() == arrived.len(),
            "the probe sent {} and the server saw {}",
            sent.len(),
            arrived.len()
        );
        // Both clocks start at an unknown offset from each other: only differences count.
        let delays: Vec<f64> = arrived.iter().zip(&sent).map(|(a, s)| a.as_secs_f64() - s.as_secs_f64()).collect();
        let spread = delays.iter().cloned().fold(f64::MIN, f64::max) - delays.iter().cloned().fold(f64::MAX, f64::min);
        std::time::Duration::from_secs_f64(spread.max(0.0))
    }
}

/// Check that `arrivals` (as a server logged them) keep to a token bucket of `rate` per second
/// holding `burst`: in every window of t seconds at most `burst + rate * (t + slack)`, where
/// `slack` covers the arrival jitter measured alongside, and 5 ms more for a stall of the
/// scheduler between two probe requests (two cores running the whole suite). That is a tenth
/// of a token at 20 per second: one request more than the bucket allows still fails.
pub fn assert_keeps_to_bucket(arrivals: &[std::time::Duration], rate: f64, burst: f64, jitter: std::time::Duration) {
    let slack = 2.0 * jitter.as_secs_f64() + 0.005;
    assert!(slack * rate < 1.0, "the machine is too busy to tell one request more: slack {:.1} ms", slack * 1e3);
    eprintln!("arrival jitter {jitter:?}: slack {:.1} ms, {:.2} of a token", slack * 1e3, slack * rate);
    for (i, start) in arrivals.iter().enumerate() {
        for (j, end) in arrivals.iter().enumerate().skip(i + 1) {
            let window = end.saturating_sub(*start).as_secs_f64();
            let allowed = burst + rate * (window + slack);
            assert!(
                (j - i + 1) as f64 <= allowed + 1e-9,
                "{} requests in {:.1} ms (slack {:.1} ms)",
                j - i + 1,
                window * 1e3,
                slack * 1e3
            );
        }
    }
}

/// A Python that can import `module`: `HARVEST_TEST_PYTHON` (set by .ci/run), else `python3`.
/// `None` outside CI when there is none (the caller says it skipped); in CI, a failure.
pub fn python_with(module: &str) -> Option<String> {
    let candidates = std::env::var("HARVEST_TEST_PYTHON").into_iter().chain(["python3".to_string()]);
    let found = candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have the {module} wheel (see .ci/run)");
        // Straight to the process's stderr, past the test harness's capture: a skip is seen.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: no Python with {module} (pip install {module}; .ci/run does)");
    }
    found
}

/// Every form a secret can take in a request, a file or a message: raw, percent-encoded with
/// upper- or lower-case hex, form-encoded (`+` for spaces), as a URL's query writes it, and
/// base64 (alone, and inside basic auth's `user:secret` for each user given).
pub fn secret_forms(secret: &str, users: &[&str]) -> Vec<String> {
    use base64::Engine as _;
    let percent = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut lower = percent.clone();
    for (i, _) in percent.match_indices('%') {
        lower.replace_range(i + 1..i + 3, &percent[i + 1..i + 3].to_ascii_lowercase());
    }
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD_NO_PAD.encode(text);
    let mut forms = vec![
        secret.to_string(),
        percent,
        lower,
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        secret.replace(' ', "%20"),
        base64(secret),
    ];
    forms.extend(users.iter().map(|user| base64(&format!("{user}:{secret}"))));
    forms
}

/// The requests `server` saw that carry `secret` in any form (see [`secret_forms`]), in their
/// URI or any header's value: a leak is judged by the value, whatever header it went in.
pub fn carrying(server: &MockServer, secret: &str, users: &[&str]) -> Vec<harvest_mock::Seen> {
    let forms = secret_forms(secret, users);
    server
        .stats
        .log()
        .into_iter()
        .filter(|s| {
            forms
                .iter()
                .any(|form| s.uri.contains(form.as_str()) || s.headers.iter().any(|(_, v)| v.contains(form.as_str())))
        })
        .collect()
}
