//! The example jobs for real APIs (jobs/examples/), each harvested completely from the mock's
//! copy of that API (its response shape, pagination and credential), and `harvest init` on
//! each of those shapes and on the common frameworks' writing a job that does the same.

use std::process::Command;

use base64::Engine;
use harvest_mock::{MockConfig, MockServer};

use crate::support::{one_to, read_records};

const SECRET: &str = "example-secret-7c1d";
const RECORDS: u64 = 450;

fn start() -> (tokio::runtime::Runtime, MockServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = MockConfig { records: RECORDS, secret: SECRET.into(), ..Default::default() };
    let server = runtime.block_on(MockServer::start(config)).unwrap();
    (runtime, server)
}

/// Environment variables of a run.
type Vars = Vec<(String, String)>;

fn harvest(args: &[&str], vars: &[(String, String)], cache: &std::path::Path) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harvest"));
    command.args(args).env("XDG_CACHE_HOME", cache);
    for (k, v) in vars {
        command.env(k, v);
    }
    command.output().expect("harvest runs")
}

fn ids(root: &std::path::Path) -> Vec<u64> {
    read_records(root).iter().map(|r| r["id"].as_u64().expect("an id")).collect()
}

/// Every text file under `dir`, for secrets.
fn assert_nowhere(dir: &std::path::Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            assert_nowhere(&path, secret);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{} holds the secret", path.display());
        }
    }
}

#[test]
fn every_example_job_harvests_its_api_completely() {
    let (_runtime, server) = start();
    let base = server.url();
    let dir = tempfile::tempdir().unwrap();
    let var = |k: &str, v: &str| (k.to_string(), v.to_string());
    let examples: Vec<(&str, Vec<(String, String)>)> = vec![
        ("github-issues", vec![var("GITHUB_API_URL", &format!("{base}/examples/github")), var("GITHUB_TOKEN", SECRET)]),
        (
            "stripe-charges",
            vec![var("STRIPE_API_URL", &format!("{base}/examples/stripe")), var("STRIPE_SECRET_KEY", SECRET)],
        ),
        ("slack-history", vec![var("SLACK_API_URL", &format!("{base}/examples/slack")), var("SLACK_TOKEN", SECRET)]),
        (
            "notion-database",
            vec![var("NOTION_API_URL", &format!("{base}/examples/notion")), var("NOTION_TOKEN", SECRET)],
        ),
        (
            "shopify-orders",
            vec![var("SHOPIFY_API_URL", &format!("{base}/examples/shopify")), var("SHOPIFY_ACCESS_TOKEN", SECRET)],
        ),
        (
            "hubspot-contacts",
            vec![
                var("HUBSPOT_API_URL", &format!("{base}/examples/hubspot")),
                var("HUBSPOT_TOKEN_URL", &format!("{base}/oauth/token")),
                var("HUBSPOT_CLIENT_ID", "harvest-client"),
                var("HUBSPOT_CLIENT_SECRET", SECRET),
                var("HUBSPOT_REFRESH_TOKEN", "mock-refresh-token"),
            ],
        ),
        (
            "salesforce-soql",
            vec![
                var("SALESFORCE_INSTANCE_URL", &format!("{base}/examples/salesforce")),
                var("SALESFORCE_CLIENT_ID", "harvest-client"),
                var("SALESFORCE_CLIENT_SECRET", SECRET),
            ],
        ),
        (
            "graphql-relay",
            vec![var("GITHUB_GRAPHQL_URL", &format!("{base}/examples/relay/graphql")), var("GITHUB_TOKEN", SECRET)],
        ),
    ];
    let jobs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples");
    let listed = std::fs::read_dir(&jobs).unwrap().flatten().filter(|e| e.path().is_file()).count();
    assert_eq!(listed, examples.len(), "every example job is tested here (github-org/ below)");
    for (name, vars) in &examples {
        let job = jobs.join(format!("{name}.toml"));
        let out = dir.path().join("out");
        let args = ["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--rps", "500"];
        let run = harvest(&args, vars, dir.path());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{name}:\n{stderr}");
        assert_eq!(ids(&out.join(name)), one_to(RECORDS), "{name}:\n{stderr}");
        assert!(!stderr.contains(SECRET), "{name} logged its secret");
        assert_nowhere(&out, SECRET);
    }
}

/// The README's worked example: an organization's repositories, then their issues, then
/// their comments, as a pipeline against the mock's copy of GitHub.
#[test]
fn the_github_pipeline_harvests_repositories_then_their_issues_then_their_comments() {
    let (_runtime, server) = start();
    let base = server.url();
    let dir = tempfile::tempdir().unwrap();
    let var = |k: &str, v: &str| (k.to_string(), v.to_string());
    let vars = vec![
        var("GITHUB_API_URL", &format!("{base}/examples/github")),
        var("GITHUB_TOKEN", SECRET),
        var("GITHUB_ORG", "acme"),
    ];
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/examples/github-org/github.toml");
    let out = dir.path().join("out");
    let args = ["run", pipeline.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--rps", "500"];
    let run = harvest(&args, &vars, dir.path());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let repos: Vec<String> =
        read_records(&out.join("repos")).iter().map(|r| r["full_name"].as_str().unwrap().to_string()).collect();
    assert_eq!(repos, (1..=5).map(|i| format!("acme/repo-{i}")).collect::<Vec<_>>());
    for job in ["issues", "comments"] {
        let mut by_repo: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for record in read_records(&out.join(job)) {
            let repo = record["_parent"]["repo"].as_str().unwrap_or_else(|| panic!("{job}: {record}")).to_string();
            by_repo.entry(repo).or_default().push(record["id"].as_u64().unwrap());
        }
        assert_eq!(by_repo.keys().cloned().collect::<Vec<_>>(), repos, "{job}");
        assert!(by_repo.values().all(|ids| ids == &one_to(RECORDS)), "{job}: every record of each repository once");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_pipelines/github.json")).unwrap()).unwrap();
    assert!(state["finished_at"].is_string(), "{state}");
    assert!(!stderr.contains(SECRET));
    assert_nowhere(&out, SECRET);
}

#[test]
fn init_writes_a_complete_job_for_each_example_api_and_framework() {
    let (runtime, server) = start();
    let base = server.url();
    let dir = tempfile::tempdir().unwrap();
    // The OAuth examples: a token from the mock's token URL, as a user would paste one.
    let token: serde_json::Value = runtime.block_on(async {
        let answer = reqwest::Client::new()
            .post(format!("{base}/oauth/token"))
            .basic_auth("harvest-client", Some(SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap()
    });
    let token = token["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {SECRET}");
    let oauth = format!("Authorization: Bearer {token}");
    let basic =
        format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{SECRET}:")));
    let shopify = format!("X-Shopify-Access-Token: {SECRET}");
    let relay = r#"{"query": "query($first: Int!, $after: String) { repository(owner: \"o\", name: \"r\") { issues(first: $first, after: $after) { pageInfo { endCursor hasNextPage } edges { cursor node { id } } } } }", "variables": {"first": 40}}"#;
    let var = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    let cases: Vec<(String, Vec<&str>, Vars, &str)> = vec![
        (
            format!("{base}/examples/github/repos/o/r/issues?state=all&per_page=40"),
            vec!["-H", &bearer],
            var("API_TOKEN", SECRET),
            "kind = \"link_header\"",
        ),
        (
            format!("{base}/examples/stripe/v1/charges?limit=40"),
            vec!["-H", &basic],
            vec![("API_USERNAME".into(), SECRET.into()), ("API_PASSWORD".into(), String::new())],
            "has_more = \"$.has_more\"",
        ),
        (
            format!("{base}/examples/slack/api/conversations.history?channel=C1&limit=40"),
            vec!["-H", &bearer],
            var("API_TOKEN", SECRET),
            "next = \"$.response_metadata.next_cursor\"",
        ),
        (
            format!("{base}/examples/notion/v1/databases/d1/query"),
            vec!["-H", &bearer, "-H", "Notion-Version: 2022-06-28", "-X", "POST", "-d", r#"{"page_size": 40}"#],
            var("API_TOKEN", SECRET),
            "cursor_param = \"start_cursor\"",
        ),
        (
            format!("{base}/examples/shopify/admin/api/2024-10/orders.json?status=any&limit=40"),
            vec!["-H", &shopify],
            var("API_KEY", SECRET),
            "name = \"X-Shopify-Access-Token\"",
        ),
        (
            format!("{base}/examples/hubspot/crm/v3/objects/contacts?limit=40"),
            vec!["-H", &oauth],
            var("API_TOKEN", &token),
            "next = \"$.paging.next.after\"",
        ),
        (
            format!("{base}/examples/salesforce/services/data/v62.0/query?q=SELECT+Id+FROM+Account"),
            vec!["-H", &oauth, "-H", "Sforce-Query-Options: batchSize=200"],
            var("API_TOKEN", &token),
            "next = \"$.nextRecordsUrl\"",
        ),
        (
            format!("{base}/examples/relay/graphql"),
            vec!["-H", &bearer, "-X", "POST", "-d", relay],
            var("API_TOKEN", SECRET),
            "path = \"$.data.repository.issues.edges[*].node\"",
        ),
        (format!("{base}/examples/drf/cursor/items/?page_size=40"), vec![], vec![], "kind = \"next_url\""),
        (format!("{base}/examples/fastapi/items?page=1&size=40"), vec![], vec![], "total_pages = \"$.pages\""),
        (format!("{base}/examples/fastapi/limit-offset/items?limit=40&offset=0"), vec![], vec![], "kind = \"offset\""),
        (format!("{base}/examples/json-server/posts?_page=1&_limit=40"), vec![], vec![], "kind = \"link_header\""),
    ];
    for (url, extra, vars, expect) in &cases {
        let job = dir.path().join("job.toml");
        let mut args = vec!["init", url.as_str(), "--out", job.to_str().unwrap(), "--force", "--name", "guessed"];
        args.extend(extra.iter().copied());
        let init = harvest(&args, &[], dir.path());
        let said = String::from_utf8_lossy(&init.stderr).into_owned();
        assert!(init.status.success(), "init {url}:\n{said}");
        let text = std::fs::read_to_string(&job).unwrap();
        assert!(
            said.contains("confirmed: ") && !text_of(&job).contains("NOT CONFIRMED"),
            "init {url} did not confirm:\n{said}\n{text}"
        );
        assert!(text.contains(expect), "init {url}: no {expect:?} in\n{text}");
        assert!(!text.contains(SECRET) && !text.contains(&token), "init {url} wrote a credential:\n{text}");
        let out = dir.path().join("out");
        let run = harvest(&["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap()], vars, dir.path());
        assert!(run.status.success(), "run of {url}:\n{text}\n{}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(ids(&out.join("guessed")), one_to(RECORDS), "{url}:\n{text}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// A job file's text.
fn text_of(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
