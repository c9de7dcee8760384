//! `harvest init`: the job it writes from one URL harvests every record once, for every
//! pagination style the mock serves; what the URL carries moves where it belongs; a
//! credential becomes a `${VAR}` and never lands in the file.

use std::process::Command;

use harvest_mock::{MockConfig, MockServer};

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
    assert!(
        said.contains("confirmed: ") && !text_of(&job).contains("NOT CONFIRMED"),
        "init {url} did not confirm:\n{said}"
    );
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

/// A job file's text.
fn text_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `init` against mock variants that behave as real servers do, each job it writes then run to
/// the end: every id once.
#[test]
fn init_confirms_what_real_servers_do_and_writes_what_it_confirmed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(MockServer::start(MockConfig { records: 95, ..Default::default() })).unwrap();
    let base = server.url();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        // json-server: Link and X-Total-Count only while `_page` is in the query.
        (
            format!("{base}/examples/json-server/posts?_page=1&_limit=20"),
            vec!["kind = \"link_header\"", "?_page=1&_limit=20\"", "the URL keeps its query as given"],
        ),
        (
            format!("{base}/page?totals_in=x-total-count&page=1&per_page=20"),
            vec!["total = { header = \"X-Total-Count\" }"],
        ),
        (
            format!("{base}/page?totals_in=x-pagination&page=1&per_page=20"),
            vec!["total_pages = { header = \"X-Pagination\", path = \"$.total_pages\" }"],
        ),
        (
            format!("{base}/offset?totals_in=content-range&offset=0&limit=20"),
            vec!["total = { header = \"Content-Range\" }"],
        ),
        (
            format!("{base}/page?totals_in=gitlab&page=1&per_page=20"),
            vec!["total_pages = { header = \"X-Total-Pages\" }"],
        ),
        (
            format!("{base}/page?totals_in=next-page&page=1&per_page=20"),
            vec!["kind = \"cursor\"", "cursor_param = \"page\"", "next_header = \"x-next-page\""],
        ),
        // A repeated parameter stays, both values in order.
        (
            format!("{base}/page?_json=address&_json=tags&page=1&per_page=20"),
            vec!["params = { _json = [\"address\", \"tags\"] }"],
        ),
    ];
    for (url, expected) in &cases {
        let (text, ids) = init_and_run(dir.path(), url, &[], &[]);
        for expect in expected {
            assert!(text.contains(expect), "{url}: no {expect:?} in\n{text}");
        }
        assert_eq!(ids, one_to(95), "{url}:\n{text}");
    }
    let repeated: Vec<String> =
        server.stats.log().into_iter().map(|s| s.uri).filter(|u| u.starts_with("/page?_json=")).collect();
    assert!(
        repeated.len() > 5 && repeated.iter().all(|u| u.starts_with("/page?_json=address&_json=tags&")),
        "{repeated:?}"
    );

    // One page, and the API says so: confirmed.
    let (text, ids) = init_and_run(dir.path(), &format!("{base}/examples/single"), &[], &[]);
    assert!(text.contains("kind = \"none\""), "{text}");
    assert_eq!(ids, one_to(25));
}

/// An API that serves page 1 whatever page is asked: nothing is confirmed, so nothing is
/// written (exit 1, saying what each try saw); `--force` writes the guess marked.
#[test]
fn an_api_that_repeats_page_one_gets_no_job_unless_forced() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(MockServer::start(MockConfig { records: 95, ..Default::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("repeats.toml");
    let url = format!("{}/examples/repeats?page=1&per_page=20", server.url());
    let init = harvest(&["init", &url, "--out", job.to_str().unwrap()], &[]);
    let said = String::from_utf8_lossy(&init.stderr);
    assert_eq!(init.status.code(), Some(1), "{said}");
    assert!(!job.exists(), "a job was written: {said}");
    assert!(said.contains("could not confirm a job"), "{said}");
    assert!(said.contains("the job as guessed (page): 2 pages of 20, 20 records"), "{said}");
    assert!(said.contains("a page repeats records an earlier page served"), "{said}");
    assert!(said.contains("--force"), "{said}");
    // Nothing on stdout either, without --out.
    let stdout = harvest(&["init", &url], &[]);
    assert_eq!(stdout.status.code(), Some(1));
    assert!(stdout.stdout.is_empty());

    let forced = harvest(&["init", &url, "--out", job.to_str().unwrap(), "--force"], &[]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let text = text_of(&job);
    assert!(text.starts_with("# NOT CONFIRMED: a page repeats records"), "{text}");
    assert!(String::from_utf8_lossy(&forced.stderr).contains("NOT CONFIRMED"));
}

/// The README's `init` with a bare file name (`--out job.toml`) writes in the current folder.
#[test]
fn init_out_a_bare_file_name() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(MockServer::start(MockConfig { records: 50, ..Default::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["init", &format!("{}/cursor?limit=10", server.url()), "--out", "job.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert!(text_of(&dir.path().join("job.toml")).contains("kind = \"cursor\""));
}
