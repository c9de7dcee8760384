//! `[auth]` kinds against the mock's protected paths and its token endpoint: every id once
//! with the right credential, a clear exit-1 error with a wrong one, credentials kept to the
//! allowed origins, and one token renewal at a time for the whole job.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use harvest_mock::auth::USER;
use harvest_mock::{MockConfig, MockServer};

use crate::support::{carrying, one_to, Fixture};

/// Characters that URL, form and header encodings each treat differently.
const SECRET: &str = "k+y/v=l ue%2F";

fn fixed_kinds() -> [(&'static str, &'static str); 6] {
    [
        ("bearer", "kind = \"bearer\"\ntoken = \"${SECRET}\""),
        // Another header, and a prefix sent verbatim (here none).
        ("header", "kind = \"bearer\"\ntoken = \"${SECRET}\"\nheader = \"X-Api-Key\"\nprefix = \"\""),
        ("basic", "kind = \"basic\"\nusername = \"harvest\"\npassword = \"${SECRET}\""),
        ("header", "kind = \"api_key\"\nname = \"X-Api-Key\"\nvalue = \"${SECRET}\""),
        ("query", "kind = \"api_key\"\nname = \"api_key\"\nvalue = \"${SECRET}\"\nin = \"query\""),
        ("cookie", "kind = \"api_key\"\nname = \"api_key\"\nvalue = \"${SECRET}\"\nin = \"cookie\""),
    ]
}

fn job(path: &str, auth: &str, extra: &str) -> String {
    format!(
        "name = \"t\"\n[request]\nurl = \"{{base}}{path}\"\n[records]\npath = \"$.items[*]\"\n[pagination]\n\
         kind = \"offset\"\npage_size = 50\ntotal = \"$.total\"\n[auth]\n{auth}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fixed_kind_harvests_every_id_and_a_wrong_credential_fails_clearly() {
    for (path, auth) in fixed_kinds() {
        let f = Fixture::with(MockConfig { records: 230, secret: SECRET.into(), ..Default::default() }).await;
        let job = job(&format!("/auth/{path}/offset"), auth, "");
        f.run_with(&job, &[("SECRET", SECRET)]).await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(f.ids("t"), one_to(230), "{path}");
        assert_eq!(f.server.stats.requests(), 5, "{path}: one request a page, none refused");

        let wrong = "not-the-secret";
        let error = f.run_with(&job, &[("SECRET", wrong)]).await.expect_err(path).to_string();
        assert!(error.contains("returned 401") && error.contains("invalid_token"), "{path}: {error}");
        assert!(error.contains("WWW-Authenticate: Bearer realm=\"mock\""), "{path}: {error}");
        assert!(!error.contains(wrong) && !error.contains("not-the"), "{path}: the credential is masked: {error}");
        let sent = f.server.stats.log().into_iter().filter(|s| s.uri.contains("/auth/")).count();
        assert_eq!(sent, 6, "{path}: a refusal that renewal cannot cure is not retried");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fixed_credentials_stay_with_the_allowed_origins() {
    for (kind, auth) in fixed_kinds() {
        let other =
            MockServer::start(MockConfig { records: 120, secret: SECRET.into(), ..Default::default() }).await.unwrap();
        let f = Fixture::with(MockConfig { records: 120, secret: SECRET.into(), ..Default::default() }).await;
        // Next links from the first page on point at the other origin's protected path.
        let path = format!("/auth/{kind}/next-url?next_origin={}&per_page=50", other.url());
        let next = "[pagination]\nkind = \"next_url\"\nnext = \"$.next\"";
        let text = job(&path, auth, "")
            .replace("[pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"", next)
            .replace("$.items[*]", "$.results[*]");
        let error = f.run_with(&text, &[("SECRET", SECRET)]).await.expect_err(kind).to_string();
        assert!(error.contains("returned 401"), "{kind}: the other origin got no credential: {error}");
        // By value, in every encoding and whatever header it went in.
        assert!(!carrying(&f.server, SECRET, &[USER]).is_empty(), "{kind}: the job's origin got its credential");
        let leaked = carrying(&other, SECRET, &[USER]);
        assert!(leaked.is_empty(), "{kind}: another origin got the credential: {leaked:?}");

        // Allowed, the other origin gets it too, and the harvest completes.
        let allowed = text.replace("[auth]\n", &format!("[auth]\nallow_origins = [\"{}\"]\n", other.url()));
        f.run_with(&allowed, &[("SECRET", SECRET)]).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(f.ids("t"), one_to(120), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_renew_once_at_a_time_over_many_token_lifetimes() {
    let lifetime = Duration::from_secs(2);
    let config = MockConfig {
        records: 33_000,
        latency: Duration::from_millis(100),
        secret: SECRET.into(),
        token_lifetime: lifetime,
        ..Default::default()
    };
    let f = Fixture::with(config).await;
    let auth =
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"\nscopes = [\"read\", \"export\"]";
    let text =
        job("/auth/oauth/offset", auth, "[limits]\nconcurrency = 32\n").replace("page_size = 50", "page_size = 10");
    let started = Instant::now();
    f.run_with(&text, &[("SECRET", SECRET)]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(f.ids("t"), one_to(33_000));
    let tokens = &f.server.stats.tokens;
    let lifetimes = took.as_secs_f64() / lifetime.as_secs_f64();
    let bound = (took.as_secs_f64() / (0.75 * lifetime.as_secs_f64())) as u64 + 2;
    eprintln!(
        "{:.1} s ({lifetimes:.1} token lifetimes) at concurrency 32: {} token requests (bound {bound}), \
         at most {} at once; 401s: {} expired, {} unknown",
        took.as_secs_f64(),
        tokens.requests(),
        tokens.max_in_progress(),
        tokens.refused("expired"),
        tokens.refused("unknown")
    );
    assert!(lifetimes >= 5.0, "the run spans at least five token lifetimes: {lifetimes:.1}");
    assert!(tokens.requests() <= bound, "{} token requests, at most {bound}", tokens.requests());
    assert!(tokens.requests() >= lifetimes as u64, "renewed ahead of expiry: {}", tokens.requests());
    assert_eq!(tokens.max_in_progress(), 1, "never two token requests at once");
    assert_eq!(tokens.refused("expired") + tokens.refused("unknown") + tokens.refused("missing"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_revoked_mid_run_costs_one_renewal() {
    let config =
        MockConfig { records: 6000, latency: Duration::from_millis(20), secret: SECRET.into(), ..Default::default() };
    let f = Fixture::with(config).await;
    let auth =
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"\nclient_auth = \"body\"";
    let text =
        job("/auth/oauth/offset", auth, "[limits]\nconcurrency = 16\n").replace("page_size = 50", "page_size = 10");
    let run = f.run_with(&text, &[("SECRET", SECRET)]);
    let revoke = async {
        crate::support::until_requests(&f.server, 200).await;
        reqwest::Client::new().post(format!("{}/oauth/revoke", f.server.url())).send().await.unwrap();
    };
    let (summary, ()) = tokio::join!(run, revoke);
    summary.unwrap();
    assert_eq!(f.ids("t"), one_to(6000));
    let tokens = &f.server.stats.tokens;
    assert_eq!(tokens.requests(), 2, "the first token, and one renewal after the revocation");
    // Refused: those in flight when it was revoked and those already past the wait for
    // credentials; later ones wait for the new token.
    let refused = tokens.refused("revoked");
    assert!((1..=32).contains(&refused), "{refused} requests refused with the revoked token");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_client_is_a_clear_error_without_its_secret() {
    let f = Fixture::with(MockConfig { records: 10, secret: SECRET.into(), ..Default::default() }).await;
    let auth =
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"";
    let text = job("/auth/oauth/offset", auth, "");
    let error = f.run_with(&text, &[("SECRET", "wrong-client-secret")]).await.unwrap_err().to_string();
    assert!(
        error.contains(&format!("could not get credentials: the token endpoint {}/oauth/token", f.server.url()))
            && error.contains("refused client harvest-client with 401: invalid_client"),
        "{error}"
    );
    assert!(!error.contains("wrong-client-secret"), "{error}");
    assert_eq!(f.server.stats.count_path("/auth/oauth/offset"), 0, "no API request without a token");
}

#[test]
fn check_probe_reports_the_token_and_never_its_value() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = MockConfig {
        records: 10,
        secret: SECRET.into(),
        token_lifetime: Duration::from_secs(900),
        ..Default::default()
    };
    let f = runtime.block_on(Fixture::with(config));
    let auth =
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"\nscopes = [\"read\", \"export\"]";
    let stdout = probe(&f.job(&job("/auth/oauth/offset", auth, "")));
    let expected = format!(
        "auth: oauth2_client_credentials: a bearer token from {0}/oauth/token, valid for 15m; scopes granted: read export; sent to {0}",
        f.server.url()
    );
    assert!(stdout.contains(&expected), "{stdout}");
    for token in f.server.stats.tokens.issued() {
        assert!(!stdout.contains(&token), "{stdout}");
    }
    assert!(stdout.contains("client harvest-client gets a token from"), "check names the client: {stdout}");
}

/// Every kind through the binary, with debug logs in text and JSON and a failing run: no
/// secret, issued token or encoded credential in any output or file.
#[tokio::test(flavor = "multi_thread")]
async fn no_credential_shows_in_any_log_or_file() {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    let encoded: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let oauth = ("oauth", "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\nclient_secret = \"${SECRET}\"");
    let cookie = ("session", SESSION_COOKIE);
    let token = ("session", SESSION_TOKEN);
    let refresh = ("oauth", "kind = \"oauth2_refresh_token\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\nclient_secret = \"${SECRET}\"\nrefresh_token = \"${SECRET}\"");
    let jwt_issuer = harvest_mock::auth::JWT_ISSUER;
    let jwt = format!("kind = \"oauth2_jwt_bearer\"\ntoken_url = \"{{base}}/oauth/token\"\nissuer = \"{jwt_issuer}\"\nprivate_key = \"${{KEY}}\"");
    let jwt = ("oauth", jwt.as_str());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let private_key = std::fs::read_to_string(fixtures.join("rsa.pem")).unwrap();
    let public_key = std::fs::read_to_string(fixtures.join("rsa.pub.pem")).unwrap();
    let cache_home = tempfile::tempdir().unwrap();
    for (path, auth) in fixed_kinds().into_iter().chain([oauth, cookie, token, refresh, jwt]) {
        let config = MockConfig {
            records: 120,
            secret: SECRET.into(),
            refresh_token: SECRET.into(),
            jwt_public_keys: vec![public_key.clone()],
            ..Default::default()
        };
        let f = Fixture::with(config).await;
        let job_file = f.job(&job(&format!("/auth/{path}/offset"), auth, ""));
        let out = f.out();
        let mut printed = String::new();
        for args in [
            &["run", "-vv"][..],
            &["run", "-vv", "--log-format", "json"],
            &["check"],
            &["check", "--probe"],
            &["status"],
        ] {
            for secret in [SECRET, "wrong-secret-value"] {
                let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
                    .args(args)
                    .arg(&job_file)
                    .args(["--output-dir", out.to_str().unwrap()])
                    .env("SECRET", secret)
                    .env("KEY", &private_key)
                    .env("XDG_CACHE_HOME", cache_home.path())
                    .output()
                    .unwrap();
                printed.push_str(&String::from_utf8_lossy(&output.stdout));
                printed.push_str(&String::from_utf8_lossy(&output.stderr));
            }
        }
        // The signed kind has no secret in SECRET: only the others fail with the wrong one.
        let refused = printed.contains("returned 401") || printed.contains("could not get credentials");
        assert!(refused || auth.contains("jwt_bearer"), "{path}: the wrong secret failed: {printed}");
        let mut forbidden = vec![SECRET.to_string(), encoded.clone(), basic.clone(), "wrong-secret-value".into()];
        forbidden.extend(private_key.lines().filter(|l| !l.starts_with("-----")).map(str::to_string));
        forbidden.extend(f.server.stats.tokens.issued());
        let mut files = String::new();
        for entry in walk(&out) {
            files.push_str(&String::from_utf8_lossy(&std::fs::read(&entry).unwrap()));
        }
        for secret in &forbidden {
            assert!(!printed.contains(secret.as_str()), "{path}: {secret:?} printed");
            assert!(!files.contains(secret.as_str()), "{path}: {secret:?} in a file under the output folder");
        }
        assert_eq!(f.ids("t"), one_to(120), "{path}");
    }
}

const SESSION_COOKIE: &str = "kind = \"session\"\nlogin_url = \"{base}/login/cookie\"\n\
                              login_body = { username = \"harvest\", password = \"${SECRET}\" }";
const SESSION_TOKEN: &str = "kind = \"session\"\nlogin_url = \"{base}/login/token\"\nlogin_format = \"form\"\n\
                             login_body = { username = \"harvest\", password = \"${SECRET}\" }\ntoken = \"$.key\"";

/// A login's cookie or token: one login for the whole job, sent only to the allowed origins,
/// again once after the server drops the session, and a refused login says so without the
/// password.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_logs_in_once_keeps_to_its_origins_and_logs_in_again_when_dropped() {
    for auth in [SESSION_COOKIE, SESSION_TOKEN] {
        let config = MockConfig {
            records: 3000,
            latency: Duration::from_millis(10),
            secret: SECRET.into(),
            ..Default::default()
        };
        let f = Fixture::with(config).await;
        let text = job("/auth/session/offset", auth, "[limits]\nconcurrency = 8\n")
            .replace("page_size = 50", "page_size = 10");
        let run = f.run_with(&text, &[("SECRET", SECRET)]);
        let drop_sessions = async {
            crate::support::until_requests(&f.server, 100).await;
            reqwest::Client::new().post(format!("{}/oauth/revoke", f.server.url())).send().await.unwrap();
        };
        let (summary, ()) = tokio::join!(run, drop_sessions);
        summary.unwrap_or_else(|e| panic!("{auth}: {e}"));
        assert_eq!(f.ids("t"), one_to(3000), "{auth}");
        assert_eq!(f.server.stats.tokens.requests(), 2, "{auth}: one login, and one after the session was dropped");
        assert!((1..=16).contains(&f.server.stats.tokens.refused("revoked")), "{auth}");
        let logins = f.server.stats.log().into_iter().filter(|s| s.uri.starts_with("/login/")).count();
        assert_eq!(logins, 2, "{auth}");

        let error = f.run_with(&text, &[("SECRET", "wrong-password")]).await.unwrap_err().to_string();
        assert!(
            error.contains("could not get credentials: the login at")
                && error.contains("answered 401: invalid username or password"),
            "{error}"
        );
        assert!(!error.contains("wrong-password"), "{error}");

        // Next links to another origin go without the session (a new job: the failed run's
        // checkpoint is not its).
        std::fs::remove_dir_all(f.out()).unwrap();
        let other =
            MockServer::start(MockConfig { records: 120, secret: SECRET.into(), ..Default::default() }).await.unwrap();
        let path = format!("/auth/session/next-url?next_origin={}&per_page=50", other.url());
        let next = job(&path, auth, "")
            .replace(
                "[pagination]\nkind = \"offset\"\npage_size = 50\ntotal = \"$.total\"",
                "[pagination]\nkind = \"next_url\"",
            )
            .replace("$.items[*]", "$.results[*]");
        let error = f.run_with(&next, &[("SECRET", SECRET)]).await.unwrap_err().to_string();
        assert!(error.contains("returned 401"), "{error}");
        let carried =
            other.stats.log().iter().any(|s| {
                s.headers.iter().any(|(n, v)| n == "authorization" || (n == "cookie" && v.contains("session=")))
            });
        assert!(!carried, "{auth}: another origin got the session: {:?}", other.stats.log());
        // The session itself, by value: whatever the job's origin was sent (a cookie, a token).
        for seen in f.server.stats.log().iter().filter(|s| s.uri.starts_with("/auth/session/")) {
            for (name, value) in &seen.headers {
                if name == "authorization" || name == "cookie" {
                    let credential = value.rsplit([' ', '=']).next().unwrap_or(value);
                    let leaked = carrying(&other, credential, &[]);
                    assert!(leaked.is_empty(), "{auth}: another origin got {name} {credential:?}: {leaked:?}");
                }
            }
        }
        assert!(carrying(&other, SECRET, &[USER]).is_empty(), "{auth}: another origin got the password");
    }
}

/// What `check --probe` prints for a job, with `SECRET` set; it must succeed.
fn probe(job_file: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["check", "--probe"])
        .arg(job_file)
        .env("SECRET", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn check_warns_about_a_credential_written_in_the_job_file_and_masks_it() {
    let text = "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\n[records]\npath = \"$[*]\"\n\
                [pagination]\nkind = \"none\"\n[auth]\nkind = \"bearer\"\ntoken = \"literal-token-123\"\n";
    let plan = harvest::job::parse(
        std::path::Path::new("t.toml"),
        text,
        &harvest::job::Env::default(),
        &harvest::job::Overrides::default(),
    )
    .unwrap();
    let described = harvest::check::describe(&plan);
    assert!(described.contains("warning: auth.token is written in the job file"), "{described}");
    assert!(described.contains("bearer: sent as the header Authorization to the allowed origins only"), "{described}");
    assert!(!described.contains("literal-token-123"), "{described}");
    assert!(plan.redactor.contains_secret("literal-token-123"), "masked like a ${{VAR}} value");
}

/// Rotating refresh tokens: each use kills the old one, so the second run can only work from
/// the one the first run kept in the token cache (0600, outside the output folder).
#[test]
fn a_rotated_refresh_token_carries_over_to_the_next_run_through_the_cache() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = MockConfig {
        records: 40,
        secret: SECRET.into(),
        refresh_token: "configured-refresh-1".into(),
        ..Default::default()
    };
    let f = runtime.block_on(Fixture::with(config));
    let auth = "kind = \"oauth2_refresh_token\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"\nrefresh_token = \"${REFRESH}\"";
    let job_file = f.job(&job("/auth/oauth/offset", auth, ""));
    let cache_home = tempfile::tempdir().unwrap();
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
            .args(["run", "-vv"])
            .arg(&job_file)
            .args(["--output-dir", f.out().to_str().unwrap()])
            .env("SECRET", SECRET)
            .env("REFRESH", "configured-refresh-1")
            .env("XDG_CACHE_HOME", cache_home.path())
            .output()
            .unwrap();
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), printed)
    };
    let (first, printed_1) = run();
    assert_eq!(first, Some(0), "{printed_1}");
    let (second, printed_2) = run();
    assert_eq!(second, Some(0), "the second run used the rotated token: {printed_2}");
    assert!(printed_2.contains("using the refresh token rotated into"), "{printed_2}");
    assert_eq!(f.ids("t"), one_to(40));
    assert_eq!(f.server.stats.tokens.requests(), 2);

    let cached: Vec<_> = walk(&cache_home.path().join("harvest/tokens"));
    assert_eq!(cached.len(), 1, "{cached:?}");
    let name = cached[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("t-") && name.ends_with(".json"), "{name}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&cached[0]).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let issued = f.server.stats.tokens.issued();
    let cache_text = std::fs::read_to_string(&cached[0]).unwrap();
    assert!(issued.iter().any(|t| cache_text.contains(t.as_str())), "the cache holds the latest refresh token");
    let mut files = String::new();
    for file in walk(&f.out()) {
        files.push_str(&String::from_utf8_lossy(&std::fs::read(&file).unwrap()));
    }
    for secret in issued.iter().map(String::as_str).chain(["configured-refresh-1", SECRET]) {
        assert!(!files.contains(secret), "{secret} under the output folder");
        assert!(!printed_1.contains(secret) && !printed_2.contains(secret), "{secret} printed");
    }

    // Without the cache the configured token is long dead: a clear message, exit 1.
    std::fs::remove_file(&cached[0]).unwrap();
    let (third, printed_3) = run();
    assert_eq!(third, Some(1), "{printed_3}");
    assert!(
        printed_3.contains("answered invalid_grant: the refresh token was revoked or already used")
            && printed_3.contains("authorize again"),
        "{printed_3}"
    );
    assert!(printed_3.contains(&cached[0].display().to_string()), "names the cache file: {printed_3}");
}

/// RFC 7523 assertions, RS256 from a PEM in the environment, ES256 from a PEM file, and a
/// Google service-account JSON key as downloaded (which names the issuer and the token URL).
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_assertion_buys_a_token_with_either_algorithm_and_a_service_account_key() {
    use harvest_mock::auth::JWT_ISSUER;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name)).unwrap();
    let config = MockConfig {
        records: 120,
        jwt_public_keys: vec![read("rsa.pub.pem"), read("ec.pub.pem")],
        ..Default::default()
    };
    let f = Fixture::with(config).await;
    let account = serde_json::json!({
        "type": "service_account",
        "client_email": JWT_ISSUER,
        "private_key": read("rsa.pem"),
        "token_uri": format!("{}/oauth/token", f.server.url()),
    });
    let account_file = f.dir.path().join("service-account.json");
    std::fs::write(&account_file, account.to_string()).unwrap();
    let rsa_env = format!("kind = \"oauth2_jwt_bearer\"\ntoken_url = \"{{base}}/oauth/token\"\nissuer = \"{JWT_ISSUER}\"\nprivate_key = \"${{KEY}}\"\nscopes = [\"read\"]");
    let ec_file = format!(
        "kind = \"oauth2_jwt_bearer\"\ntoken_url = \"{{base}}/oauth/token\"\nissuer = \"{JWT_ISSUER}\"\nkey_file = \"{}\"\nalgorithm = \"ES256\"",
        fixtures.join("ec.pem").display()
    );
    let google = "kind = \"oauth2_jwt_bearer\"\nkey_file = \"service-account.json\"\nscopes = [\"https://www.googleapis.com/auth/cloud-platform\"]".to_string();
    for (what, auth) in [("RS256 from ${KEY}", rsa_env), ("ES256 key file", ec_file), ("service account", google)] {
        let before = f.server.stats.tokens.requests();
        std::fs::remove_dir_all(f.out()).ok();
        f.run_with(&job("/auth/oauth/offset", &auth, ""), &[("KEY", &read("rsa.pem"))])
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(f.ids("t"), one_to(120), "{what}");
        assert_eq!(f.server.stats.tokens.requests() - before, 1, "{what}: one token");
    }

    // A key the server does not know: refused, with the server's words and not the key.
    let wrong = format!("kind = \"oauth2_jwt_bearer\"\ntoken_url = \"{{base}}/oauth/token\"\nissuer = \"{JWT_ISSUER}\"\nkey_file = \"{}\"\nalgorithm = \"ES256\"", fixtures.join("rsa.pem").display());
    let error = f.run_with(&job("/auth/oauth/offset", &wrong, ""), &[]).await.unwrap_err().to_string();
    assert!(error.contains("is not a ES256 PEM key"), "an RSA key read as ES256: {error}");
    let other =
        MockServer::start(MockConfig { records: 10, jwt_public_keys: vec![read("ec.pub.pem")], ..Default::default() })
            .await
            .unwrap();
    let f2 = Fixture { server: other, dir: tempfile::tempdir().unwrap() };
    let rsa_env = format!("kind = \"oauth2_jwt_bearer\"\ntoken_url = \"{{base}}/oauth/token\"\nissuer = \"{JWT_ISSUER}\"\nprivate_key = \"${{KEY}}\"");
    let error = f2
        .run_with(&job("/auth/oauth/offset", &rsa_env, ""), &[("KEY", &read("rsa.pem"))])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused client harvest@mock.iam.gserviceaccount.com with 400: invalid_grant"), "{error}");
    assert!(!error.contains("PRIVATE KEY") && !error.contains("eyJ"), "no key or assertion: {error}");
}

/// A refusal that a renewal cannot cure fails after exactly one renewal; token endpoints that
/// stumble are retried; grants a bearer client cannot use are clear errors.
#[tokio::test(flavor = "multi_thread")]
async fn token_endpoint_failures_and_a_second_401_are_clear() {
    let auth = |query: &str| {
        format!(
            "kind = \"oauth2_client_credentials\"\ntoken_url = \"{{base}}/oauth/token{query}\"\nclient_id = \"harvest-client\"\n\
             client_secret = \"${{SECRET}}\""
        )
    };
    let fast = "[retry]\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\n";
    let fixture = || Fixture::with(MockConfig { records: 30, secret: SECRET.into(), ..Default::default() });

    // Refused again right after a renewal: exit 1 with the server's words, one renewal only.
    let f = fixture().await;
    let error =
        f.run_with(&job("/auth/oauth/offset?refuse=1", &auth(""), ""), &[("SECRET", SECRET)]).await.unwrap_err();
    let error = error.to_string();
    assert!(error.contains("returned 401") && error.contains("insufficient_scope"), "{error}");
    assert!(error.contains("WWW-Authenticate: Bearer realm=\"mock\", error=\"insufficient_scope\""), "{error}");
    assert_eq!(f.server.stats.tokens.requests(), 2, "the first token and one renewal");
    assert_eq!(f.server.stats.count_path("/auth/oauth/offset"), 2, "the request and its one retry");
    for token in f.server.stats.tokens.issued() {
        assert!(!error.contains(&token), "{error}");
    }

    // A token endpoint answering 503 twice: retried with the job's backoff, then the harvest.
    let f = fixture().await;
    f.run_with(&job("/auth/oauth/offset", &auth("?fail=2"), fast), &[("SECRET", SECRET)]).await.unwrap();
    assert_eq!(f.ids("t"), one_to(30));
    assert_eq!(f.server.stats.tokens.requests(), 3);
    // ...and always: an error after the job's attempts.
    let f = fixture().await;
    let text = job("/auth/oauth/offset", &auth("?fail=100"), &format!("{fast}max_attempts = 3\n"));
    let error = f.run_with(&text, &[("SECRET", SECRET)]).await.unwrap_err().to_string();
    assert!(error.contains("/oauth/token?fail=100 returned 503 after 3 attempts"), "{error}");

    // Grants a bearer client cannot use.
    for (query, says) in
        [("?token_type=mac", "issued a token of type \"mac\""), ("?no_token=1", "answered without an access_token")]
    {
        let f = fixture().await;
        let error = f.run_with(&job("/auth/oauth/offset", &auth(query), ""), &[("SECRET", SECRET)]).await.unwrap_err();
        assert!(error.to_string().contains(says), "{error}");
        assert_eq!(f.server.stats.count_path("/auth/oauth/offset"), 0, "nothing asked without a usable token");
    }
    // A token type in another case is still bearer.
    let f = fixture().await;
    f.run_with(&job("/auth/oauth/offset", &auth("?token_type=bEaReR"), ""), &[("SECRET", SECRET)]).await.unwrap();
    assert_eq!(f.ids("t"), one_to(30));
}

/// An OAuth token goes with next links to the job's origin only.
#[tokio::test(flavor = "multi_thread")]
async fn an_oauth_token_stays_with_the_allowed_origins() {
    let other =
        MockServer::start(MockConfig { records: 120, secret: SECRET.into(), ..Default::default() }).await.unwrap();
    let f = Fixture::with(MockConfig { records: 120, secret: SECRET.into(), ..Default::default() }).await;
    let auth =
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"";
    for (path, pagination) in [
        (format!("/auth/oauth/next-url?next_origin={}&per_page=50", other.url()), "kind = \"next_url\""),
        (format!("/auth/oauth/link?next_origin={}&per_page=50", other.url()), "kind = \"link_header\""),
        (format!("/redirect?to={}/auth/oauth/offset", other.url()), "kind = \"none\""),
    ] {
        let text =
            job(&path, auth, "").replace("kind = \"offset\"\npage_size = 50\ntotal = \"$.total\"", pagination).replace(
                "$.items[*]",
                if path.contains("next-url") {
                    "$.results[*]"
                } else if path.contains("link") {
                    "$[*]"
                } else {
                    "$.items[*]"
                },
            );
        std::fs::remove_dir_all(f.out()).ok();
        let error = f.run_with(&text, &[("SECRET", SECRET)]).await.expect_err(&path).to_string();
        assert!(error.contains("returned 401"), "{path}: {error}");
    }
    let carried = other.stats.log().iter().any(|s| s.headers.iter().any(|(n, _)| n == "authorization"));
    assert!(!carried, "another origin got the token: {:?}", other.stats.log());
    // Each token the job's origin was sent, by value, in any encoding: none reached the other.
    let tokens: std::collections::BTreeSet<String> = f
        .server
        .stats
        .log()
        .iter()
        .flat_map(|s| s.headers.clone())
        .filter_map(|(n, v)| (n == "authorization").then(|| v.trim_start_matches("Bearer ").to_string()))
        .collect();
    assert!(!tokens.is_empty());
    for token in &tokens {
        assert!(carrying(&other, token, &[]).is_empty(), "another origin got the token {token}");
    }
    assert!(carrying(&other, SECRET, &["harvest-client"]).is_empty(), "another origin got the client secret");
    assert!(f
        .server
        .stats
        .log()
        .iter()
        .any(|s| s.headers.iter().any(|(n, v)| n == "authorization" && v.starts_with("Bearer mock-access-"))));
}

/// `check --probe` for the kinds that log in or sign: what was obtained, never a value.
#[test]
fn check_probe_reports_sessions_and_signed_tokens() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt");
    let public_key = std::fs::read_to_string(fixtures.join("rsa.pub.pem")).unwrap();
    let config =
        MockConfig { records: 10, secret: SECRET.into(), jwt_public_keys: vec![public_key], ..Default::default() };
    let f = runtime.block_on(Fixture::with(config));
    let issuer = harvest_mock::auth::JWT_ISSUER;
    let jwt = format!(
        "kind = \"oauth2_jwt_bearer\"\ntoken_url = \"{{base}}/oauth/token\"\nissuer = \"{issuer}\"\nkey_file = \"{}\"",
        fixtures.join("rsa.pem").display()
    );
    for (path, auth, expected) in [
        (
            "session",
            SESSION_COOKIE.to_string(),
            format!("auth: session: logged in at {}/login/cookie, 1 cookie(s) kept for the run", f.server.url()),
        ),
        (
            "session",
            SESSION_TOKEN.to_string(),
            format!("auth: session: logged in at {}/login/token, a token kept for the run", f.server.url()),
        ),
        (
            "oauth",
            jwt,
            format!("auth: oauth2_jwt_bearer: a bearer token from {}/oauth/token, valid for 1h", f.server.url()),
        ),
    ] {
        let stdout = probe(&f.job(&job(&format!("/auth/{path}/offset"), &auth, "")));
        assert!(stdout.contains(&expected), "{expected} in {stdout}");
        for token in f.server.stats.tokens.issued() {
            assert!(!stdout.contains(&token), "{stdout}");
        }
    }
}

/// Token requests take no slot of the API's rate limit: at one request a second with a
/// burst of one, the first page follows its token at once, as the server saw them.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_request_takes_no_rate_limit_token() {
    let f = Fixture::with(MockConfig { records: 10, secret: SECRET.into(), ..Default::default() }).await;
    let auth =
        "kind = \"oauth2_client_credentials\"\ntoken_url = \"{base}/oauth/token\"\nclient_id = \"harvest-client\"\n\
                client_secret = \"${SECRET}\"";
    let limits = "[limits]\nrequests_per_second = 1.0\nburst = 1\n";
    let text = job("/auth/oauth/offset", auth, limits)
        .replace("kind = \"offset\"\npage_size = 50\ntotal = \"$.total\"", "kind = \"none\"");
    f.run_with(&text, &[("SECRET", SECRET)]).await.unwrap();
    let log = f.server.stats.log();
    let at = |path: &str| log.iter().find(|s| s.uri.starts_with(path)).map(|s| s.at).unwrap();
    let gap = at("/auth/oauth/offset").saturating_sub(at("/oauth/token"));
    // The token endpoint holds its answer 50 ms; a limiter token spent on it would add 1 s.
    assert!(gap < Duration::from_millis(500), "the page came {gap:?} after the token request");
}

/// `max_age` logs in again before that age, one login at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_logs_in_again_after_max_age() {
    let config =
        MockConfig { records: 3000, latency: Duration::from_millis(20), secret: SECRET.into(), ..Default::default() };
    let f = Fixture::with(config).await;
    let auth = format!("{SESSION_COOKIE}\nmax_age = \"250ms\"");
    let text =
        job("/auth/session/offset", &auth, "[limits]\nconcurrency = 8\n").replace("page_size = 50", "page_size = 10");
    let started = Instant::now();
    f.run_with(&text, &[("SECRET", SECRET)]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(f.ids("t"), one_to(3000));
    let logins = f.server.stats.tokens.requests();
    let ages = (took.as_secs_f64() / 0.25) as u64;
    assert!(logins >= 2 && logins <= ages + 2, "{logins} logins in {took:?}");
    assert_eq!(f.server.stats.tokens.max_in_progress(), 1);
    assert_eq!(f.server.stats.tokens.refused("expired") + f.server.stats.tokens.refused("unknown"), 0);
}
