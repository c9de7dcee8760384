//! The HTTP layer as a server sees it: User-Agent, rate limit, timeouts, redirects, proxies,
//! the job lock.

use std::process::Command;
use std::time::Duration;

use harvest::error::Error;
use harvest::output::Layout;
use harvest_mock::{MockConfig, MockServer};

use crate::support::{assert_keeps_to_bucket, one_to, Fixture, Jitter, FAST_RETRY};

#[tokio::test(flavor = "multi_thread")]
async fn a_default_user_agent_unless_the_job_sets_one() {
    let f = Fixture::new(10).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n";
    f.run(job).await.unwrap();
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\nheaders = { User-Agent = \"my-exporter/2\" }\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n";
    f.run(job).await.unwrap();
    let agents: Vec<String> = f
        .server
        .stats
        .log()
        .iter()
        .map(|s| s.headers.iter().find(|(k, _)| k == "user-agent").map(|(_, v)| v.clone()).unwrap_or_default())
        .collect();
    assert_eq!(agents, vec![format!("harvest/{}", env!("CARGO_PKG_VERSION")), "my-exporter/2".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_per_second_holds_at_the_server() {
    let f = Fixture::new(300).await;
    let job = "name = \"t\"\n[request]\nurl = \"{base}/cursor\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"cursor\"\npage_size = 20\n[limits]\nrequests_per_second = 20.0\nburst = 2\n";
    let jitter = Jitter::start().await;
    f.run(job).await.unwrap();
    let jitter = jitter.finish().await;
    assert_eq!(f.ids("t"), one_to(300));
    let arrivals: Vec<Duration> = f.server.stats.log().iter().map(|s| s.at).collect();
    assert_eq!(arrivals.len(), 15);
    // A token bucket of 20/s with a burst of 2 lets at most 2 + 20 * t requests through in
    // any window of t seconds: every window is checked.
    assert_keeps_to_bucket(&arrivals, 20.0, 2.0, jitter);
    let span = arrivals.last().unwrap().saturating_sub(arrivals[0]);
    assert!(span >= Duration::from_millis(600), "15 requests at 20/s with burst 2 take at least 0.65 s: {span:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_response_times_out_and_says_so() {
    let server =
        MockServer::start(MockConfig { records: 10, latency: Duration::from_millis(400), ..Default::default() })
            .await
            .unwrap();
    let f = Fixture { server, dir: tempfile::tempdir().unwrap() };
    let job = format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}/offset\"\ntimeout = \"100ms\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n{FAST_RETRY}"
    );
    let message = f.run(&job).await.unwrap_err().to_string();
    assert!(message.contains("timed out after 100ms after 2 attempts"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_followed_and_credentials_stay_behind_on_another_origin() {
    let home = Fixture::new(50).await;
    let other = MockServer::start(MockConfig { records: 50, ..Default::default() }).await.unwrap();
    // Same origin: followed with the credential.
    let job = "name = \"t\"\n[request]\nurl = \"{base}/redirect\"\nparams = { to = \"{base}/offset\" }\nheaders = { X-Api-Key = \"${KEY}\" }\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n".to_string();
    home.run_with(&job, &[("KEY", "redirect-secret")]).await.unwrap();
    assert_eq!(home.ids("t"), one_to(50));
    let log = home.server.stats.log();
    assert!(log
        .iter()
        .filter(|s| s.uri.starts_with("/offset"))
        .all(|s| s.headers.iter().any(|(_, v)| v == "redirect-secret")));
    // Another origin: followed without it.
    let job = job.replace("{base}/offset", &format!("{}/offset", other.url()));
    home.run_with(&job, &[("KEY", "redirect-secret")]).await.unwrap();
    assert_eq!(home.ids("t"), one_to(50));
    let seen = other.stats.log();
    assert!(!seen.is_empty());
    for s in seen {
        assert!(s.headers.iter().all(|(_, v)| !v.contains("redirect-secret")), "{:?}", s.headers);
    }
}

#[test]
fn http_proxy_from_the_environment_is_used() {
    // A second mock stands in for the proxy: it answers absolute-form requests by path.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(MockServer::start(MockConfig { records: 30, ..Default::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    // Nothing listens on this loopback port: only the proxy can answer.
    std::fs::write(&job, "name = \"p\"\n[request]\nurl = \"http://127.0.0.1:9/offset\"\nconnect_timeout = \"2s\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n[retry]\nmax_attempts = 1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["run", job.to_str().unwrap(), "--output-dir", dir.path().to_str().unwrap()])
        .env("HTTP_PROXY", proxy.url())
        .env("http_proxy", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(proxy.stats.requests() >= 1);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_of_a_running_job_is_refused() {
    let f = Fixture::new(10).await;
    let layout = Layout::create(f.out().join("t")).unwrap();
    let _held = layout.lock(std::time::Duration::from_secs(120)).unwrap().expect("the lock is free");
    let job = "name = \"t\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n";
    let err = f.run(job).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another harvest of job t is running"));
}
