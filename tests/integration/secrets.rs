//! Secrets: never sent to another origin, never shown in stdout, stderr or the output.

use std::process::Command;

use harvest::mock::{MockConfig, MockServer};

const TOKEN: &str = "tok-5ecr3t+/=";
const KEY: &str = "k3y-value-991";

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
    let mut files = vec![out.clone()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(KEY) && !text.contains(TOKEN), "{} shows a secret", path.display());
            checked += 1;
        }
    }
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
