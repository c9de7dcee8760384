//! Secrets: never sent to another origin, never shown in stdout, stderr or any file of the
//! output folder (checkpoint and state included), in any encoding.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use harvest_mock::{MockConfig, MockServer};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

const TOKEN: &str = "tok-5ecr3t+/=";
const KEY: &str = "k3y-value-991";

/// Every form a secret can take in a file or a message: raw, percent-encoded with upper- or
/// lower-case hex, form-encoded (`+` for spaces), as a URL's query writes it, and base64.
fn forms(secret: &str) -> Vec<String> {
    let percent = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
    let mut lower = percent.clone();
    for (i, _) in percent.match_indices('%') {
        lower.replace_range(i + 1..i + 3, &percent[i + 1..i + 3].to_ascii_lowercase());
    }
    let query: String = secret.replace(' ', "%20");
    vec![
        secret.to_string(),
        percent,
        lower,
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        query,
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(secret),
    ]
}

/// Every file under `dir`, as text.
fn files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut stack = vec![dir.to_path_buf()];
    let mut out = Vec::new();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
        } else if path.exists() {
            out.push((path.clone(), String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()));
        }
    }
    out
}

/// No form of any of `secrets` in any file under `dir` nor in any of `messages`.
fn assert_kept_secret(secrets: &[&str], dir: &Path, messages: &[(&str, &str)]) -> usize {
    let files = files_under(dir);
    let named: Vec<(String, &str)> = files.iter().map(|(p, t)| (p.display().to_string(), t.as_str())).collect();
    for secret in secrets {
        for form in forms(secret) {
            for (what, text) in named.iter().map(|(p, t)| (p.as_str(), *t)).chain(messages.iter().copied()) {
                assert!(!text.contains(&form), "{what} holds {form:?} (a form of {secret:?}):\n{text}");
            }
        }
    }
    files.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_stay_with_the_jobs_origin_and_out_of_every_output() {
    let home = MockServer::start(MockConfig { records: 250, ..Default::default() }).await.unwrap();
    let other = MockServer::start(MockConfig { records: 250, ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    // The server copies every query parameter, api_key included, into next links that
    // point at another origin.
    std::fs::write(
        &job,
        format!(
            r#"
name = "secret"
[request]
url = "{home}/next-url"
params = {{ per_page = 100, api_key = "${{KEY}}", next_origin = "{other}" }}
headers = {{ Authorization = "Bearer ${{TOKEN}}", X-Custom = "${{KEY}}-suffix" }}
[records]
path = "$.results[*]"
[pagination]
kind = "next_url"
"#,
            home = home.url(),
            other = other.url()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "-vv"])
        .env("TOKEN", TOKEN)
        .env("KEY", KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    // The job's own origin got the credentials...
    let first = &home.stats.log()[0];
    assert!(first.uri.contains("api_key=k3y-value-991"), "{}", first.uri);
    assert!(first.headers.iter().any(|(k, v)| k == "authorization" && v.contains(TOKEN)));
    // ...the other origin got the rest of the pages, and none of them.
    let seen = other.stats.log();
    assert_eq!(seen.len(), 2, "pages 2 and 3 come from the other origin");
    for request in &seen {
        assert!(!request.uri.contains(KEY), "{}", request.uri);
        for (name, value) in &request.headers {
            assert!(!value.contains(KEY) && !value.contains(TOKEN), "{name}: {value}");
            assert_ne!(name, "authorization");
        }
    }

    // Nothing shows the secrets: stdout, stderr (debug logs print every URL), any file.
    for (what, text) in [("stdout", stdout.as_ref()), ("stderr", stderr.as_ref())] {
        for secret in [TOKEN, KEY, "k3y-value", "tok-5ecr3t"] {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    }
    assert!(stderr.contains("api_key=***"), "the URLs are in the log, redacted:\n{stderr}");
    let checked = assert_kept_secret(&[KEY, TOKEN], &out, &[]);
    assert!(checked >= 2, "the part and the manifest were checked");

    // `check` shows the plan with the secrets masked.
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["check", job.to_str().unwrap(), "--probe"])
        .env("TOKEN", TOKEN)
        .env("KEY", KEY)
        .output()
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("header Authorization: ***"), "{shown}");
    assert!(shown.contains("100 records"), "the probe: {shown}");
    assert!(!shown.contains(KEY) && !shown.contains(TOKEN) && !shown.contains("k3y-value"), "{shown}");
}

/// A key with `+`, `/`, `=` and a space, sent as a query parameter to a server that copies it
/// into every next link (as Django REST Framework does).
const QUERY_KEY: &str = "k+y/v=l ue";
const ROTATED: &str = "n3w+k/y=";

fn keyed_job(dir: &Path, base: &str, knobs: &str) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"
name = "keyed"
[request]
url = "{base}/next-url"
params = {{ per_page = 10, api_key = "${{KEY}}"{knobs} }}
headers = {{ X-Token = "${{TOKEN}}" }}
[records]
path = "$.results[*]"
[pagination]
kind = "next_url"
[output]
checkpoint_interval = "100ms"
{}"#,
            crate::support::FAST_RETRY
        ),
    )
    .unwrap();
    job
}

fn harvest(args: &[&str], key: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(args).env("KEY", key).env("TOKEN", TOKEN);
    command
}

/// The `api_key` each request carried, as the server decoded it.
fn keys_sent(server: &MockServer) -> Vec<String> {
    server
        .stats
        .log()
        .iter()
        .map(|seen| {
            let query = seen.uri.split_once('?').map_or("", |(_, q)| q);
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "api_key")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// The defect this test was written for: an interrupted `next_url` run saved the next link,
/// key and all, in its checkpoint. Now the checkpoint keeps a reference to `${KEY}` and the
/// resume fills it with the key's value at that time, so a rotated key keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_run_keeps_no_secret_and_resumes_with_a_rotated_key() {
    let server =
        MockServer::start(MockConfig { records: 3000, latency: Duration::from_millis(10), ..Default::default() })
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = keyed_job(dir.path(), &server.url(), "");
    let out = dir.path().join("out");
    let (job_arg, out_arg) = (job.to_str().unwrap(), out.to_str().unwrap());
    let child = harvest(&["run", job_arg, "--output-dir", out_arg, "-vv"], QUERY_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::support::until_requests(&server, 30).await;
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(keys_sent(&server).iter().all(|k| k == QUERY_KEY), "the key went with every page");

    // The checkpoint goes on from a next link that held the key: it holds a reference instead.
    let checkpoint = std::fs::read_to_string(out.join("keyed/_harvest/checkpoint.json")).unwrap();
    assert!(checkpoint.contains("api_key=${secret:KEY:"), "{checkpoint}");
    assert_kept_secret(&[QUERY_KEY, TOKEN], &out, &[("stdout", &stdout), ("stderr", &stderr)]);

    // `status` shows where it goes on, the key masked.
    let status = harvest(&["status", job_arg, "--output-dir", out_arg], QUERY_KEY).output().unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && report.contains("next page: http") && report.contains("api_key=***"),
        "{report}"
    );
    assert_kept_secret(&[QUERY_KEY], dir.path().join("none").as_path(), &[("status", &report)]);

    // The key was rotated: the resume sends the new one, never the old.
    let asked = server.stats.requests() as usize;
    let resumed = harvest(&["run", job_arg, "--output-dir", out_arg, "-vv"], ROTATED).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&resumed.stdout), String::from_utf8_lossy(&resumed.stderr));
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resuming run"), "{stderr}");
    let after = &keys_sent(&server)[asked..];
    assert!(!after.is_empty() && after.iter().all(|k| k == ROTATED), "{after:?}");
    let ids: Vec<u64> =
        crate::support::read_records(&out.join("keyed")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (1..=3000).collect::<Vec<_>>());
    assert_kept_secret(&[QUERY_KEY, ROTATED, TOKEN], &out, &[("stdout", &stdout), ("stderr", &stderr)]);
}

/// A run that fails half way (the server answers 500 from its 12th request on): its error
/// quotes the failing URL with the key masked, and what it leaves behind holds no secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_keeps_no_secret_in_its_error_or_its_checkpoint() {
    let server = MockServer::start(MockConfig { records: 3000, ..Default::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = keyed_job(dir.path(), &server.url(), ", fail_after = 12");
    let out = dir.path().join("out");
    let output = harvest(&["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "-vv"], QUERY_KEY)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(error.contains("returned 500") && error.contains("api_key=***&fail_after=12&page=13"), "{error}");
    assert_eq!(error.matches("returned 500").count(), 1, "the error says it once: {error}");
    let checkpoint = std::fs::read_to_string(out.join("keyed/_harvest/checkpoint.json")).unwrap();
    assert!(checkpoint.contains("api_key=${secret:KEY:"), "{checkpoint}");
    assert_kept_secret(&[QUERY_KEY, TOKEN], &out, &[("stdout", &stdout), ("stderr", &stderr)]);
}
