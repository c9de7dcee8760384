//! `harvest init`: the job it writes from one URL harvests every record once, for every
//! pagination style the mock serves; what the URL carries moves where it belongs; a
//! credential becomes a `${VAR}` and never lands in the file.

use std::process::Command;

use harvest::mock::{MockConfig, MockServer};

use crate::support::{one_to, read_records};

fn harvest(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(args).env_remove("API_TOKEN").env_remove("API_KEY");
    for (k, v) in vars {
        command.env(k, v);
    }
    command.output().expect("harvest runs")
}

/// `init` on `url` (with `extra` arguments), then `run` of the job it wrote: the ids written.
fn init_and_run(dir: &std::path::Path, url: &str, extra: &[&str], vars: &[(&str, &str)]) -> (String, Vec<u64>) {
    let job = dir.join("job.toml");
    let mut args = vec!["init", url, "--out", job.to_str().unwrap(), "--force", "--name", "guessed"];
    args.extend(extra);
    let init = harvest(&args, &[]);
    let said = String::from_utf8_lossy(&init.stderr).into_owned();
    assert!(init.status.success(), "init {url}: {said}");
    assert!(said.contains("confirmed: page 1 holds"), "init {url} did not confirm:\n{said}");
    let text = std::fs::read_to_string(&job).unwrap();
    let out = dir.join("out");
    let run = harvest(&["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap()], vars);
    assert!(run.status.success(), "run of the job for {url}:\n{text}\n{}", String::from_utf8_lossy(&run.stderr));
    let ids = read_records(&out.join("guessed")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    std::fs::remove_dir_all(&out).unwrap();
    (text, ids)
}

#[test]
fn the_job_init_writes_harvests_every_mock_style_completely() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(MockServer::start(MockConfig { records: 230, ..Default::default() })).unwrap();
    let base = server.url();
    let dir = tempfile::tempdir().unwrap();
    let graphql = r#"{"query": "query($first: Int!, $after: String) { items(first: $first, after: $after) { nodes { id } pageInfo { endCursor hasNextPage } } }", "variables": {"first": 40}}"#;
    let styles: Vec<(String, Vec<&str>, &str)> = vec![
        (format!("{base}/offset?offset=0&limit=40"), vec![], "kind = \"offset\""),
        (format!("{base}/array?limit=40&offset=0"), vec![], "kind = \"offset\""),
        (format!("{base}/page?page=1&per_page=40"), vec![], "kind = \"page\""),
        (format!("{base}/cursor?limit=40"), vec![], "kind = \"cursor\""),
        (format!("{base}/cursor-header?limit=40"), vec![], "next_header = \"x-next-cursor\""),
        (format!("{base}/has-more?limit=40"), vec![], "next = \"$.data[-1].id\""),
        (format!("{base}/next-url?per_page=40"), vec![], "kind = \"next_url\""),
        (format!("{base}/link?per_page=40"), vec![], "kind = \"link_header\""),
        (format!("{base}/graphql"), vec!["--method", "POST", "--body", graphql], "cursor_param = \"variables.after\""),
    ];
    for (url, extra, expect) in &styles {
        let (text, ids) = init_and_run(dir.path(), url, extra, &[]);
        assert!(text.contains(expect), "{url}: no {expect:?} in\n{text}");
        assert_eq!(ids, one_to(230), "{url}: the job written\n{text}");
    }
}

#[test]
fn the_url_s_own_parameters_stay_and_a_run_replaces_rather_than_repeats_them() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(MockServer::start(MockConfig { records: 90, ..Default::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `links=root` is the mock's knob (a parameter of the API's own): it stays in params.
    let (text, ids) =
        init_and_run(dir.path(), &format!("{}/page?links=root&page=1&per_page=20", server.url()), &[], &[]);
    assert!(text.contains("params = { links = \"root\" }"), "{text}");
    assert!(text.contains("page_param = \"page\"") && text.contains("size_param = \"per_page\""), "{text}");
    assert!(text.contains(&format!("url = \"{}/page\"\n", server.url())), "pagination left the URL: {text}");
    assert_eq!(ids, one_to(90));

    // A job that keeps `page` in its URL: the strategy's page replaces it, never repeats it.
    let job = dir.path().join("kept.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"kept\"\n[request]\nurl = \"{}/page?page=1&per_page=20\"\n[records]\npath = \"$.data[*]\"\n\
             [pagination]\nkind = \"page\"\nsize_param = \"per_page\"\npage_size = 20\ntotal_pages = \"$.total_pages\"\n",
            server.url()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = harvest(&["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap()], &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ids: Vec<u64> = read_records(&out.join("kept")).iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, one_to(90));
    let asked: Vec<String> =
        server.stats.log().into_iter().map(|s| s.uri).filter(|u| u.starts_with("/page?")).collect();
    assert!(asked.len() >= 5, "{asked:?}");
    for uri in &asked {
        let names: Vec<String> = url::form_urlencoded::parse(uri.split_once('?').unwrap().1.as_bytes())
            .map(|(k, _)| k.into_owned())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "a parameter went twice: {uri}");
    }
}

#[test]
fn a_credential_becomes_a_variable_and_never_lands_in_the_file() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let secret = "init-secret-2d8f6a";
    let config = MockConfig { records: 60, secret: secret.into(), ..Default::default() };
    let server = runtime.block_on(MockServer::start(config)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bearer = format!("Authorization: Bearer {secret}");
    let url = format!("{}/auth/bearer/offset?limit=25", server.url());
    let (text, ids) = init_and_run(dir.path(), &url, &["--header", &bearer], &[("API_TOKEN", secret)]);
    assert!(text.contains("[auth]\nkind = \"bearer\"\ntoken = \"${API_TOKEN}\""), "{text}");
    assert!(!text.contains(secret), "the token was written:\n{text}");
    assert_eq!(ids, one_to(60));

    let url = format!("{}/auth/query/offset?limit=25&api_key={secret}", server.url());
    let (text, ids) = init_and_run(dir.path(), &url, &[], &[("API_KEY", secret)]);
    assert!(text.contains("kind = \"api_key\"\nin = \"query\"\nname = \"api_key\"\nvalue = \"${API_KEY}\""), "{text}");
    assert!(!text.contains(secret), "the key was written:\n{text}");
    assert_eq!(ids, one_to(60));

    // Without --out the job goes to stdout; an existing --out is kept without --force.
    let stdout = harvest(&["init", &format!("{}/cursor?limit=10", server.url())], &[]);
    assert!(stdout.status.success());
    assert!(String::from_utf8_lossy(&stdout.stdout).contains("kind = \"cursor\""));
    let existing = dir.path().join("job.toml");
    let kept = harvest(&["init", &format!("{}/cursor", server.url()), "--out", existing.to_str().unwrap()], &[]);
    assert_eq!(kept.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&kept.stderr).contains("--force"), "{}", String::from_utf8_lossy(&kept.stderr));
}
