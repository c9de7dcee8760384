//! Bad job files, one row a case: the message, with file:line:col, is asserted.

use std::path::Path;

use harvest::job::{self, Env, Overrides};

const HEAD: &str = "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\n[records]\npath = \"$.items[*]\"\n";

fn error_of(text: &str) -> String {
    let env = Env::from_pairs([("SET_TOKEN".to_string(), "s3cr3t".to_string())]);
    match job::parse(Path::new("jobs/bad.toml"), text, &env, &Overrides::default()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_job_files_are_reported_with_their_position() {
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown key in [pagination], with a hint",
            format!("{HEAD}[pagination]\nkind = \"offset\"\noffest_param = \"skip\"\n"),
            "jobs/bad.toml:8:1: unknown key `offest_param` in [pagination]; did you mean `offset_param`?",
        ),
        (
            "a pagination fact that is neither a path nor a header",
            format!("{HEAD}[pagination]\nkind = \"page\"\ntotal = 5\n"),
            "jobs/bad.toml:8:9: total must be a JSONPath (\"$.total\"), { header = \"X-Total-Count\" } or { header = \"X-Pagination\", path = \"$.total\" }",
        ),
        (
            "an unknown key in a header fact",
            format!("{HEAD}[pagination]\nkind = \"offset\"\ntotal = {{ header = \"X-Total-Count\", pth = \"$.t\" }}\n"),
            "jobs/bad.toml:8:9: unknown key `pth` in total",
        ),
        (
            "a header fact whose header cannot be a header",
            format!("{HEAD}[pagination]\nkind = \"cursor\"\nnext = {{ header = \"X Next\" }}\n"),
            "jobs/bad.toml:8:8: next.header \"X Next\" is not a header name",
        ),
        (
            "a header fact's path that is no JSONPath",
            format!("{HEAD}[pagination]\nkind = \"page\"\ntotal_pages = {{ header = \"X-Pagination\", path = \"total\" }}\n"),
            "jobs/bad.toml:8:15:",
        ),
        (
            "unknown key in [auth]",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[auth]\nkind = \"none\"\ntokn = \"x\"\n"),
            "jobs/bad.toml:10:1: unknown key `tokn` in [auth]; did you mean `token`?",
        ),
        (
            "unknown section, with a hint",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[limit]\nconcurrency = 2\n"),
            "jobs/bad.toml:8:2: unknown key `limit`; did you mean `limits`?",
        ),
        (
            "a key of another pagination kind",
            format!("{HEAD}[pagination]\nkind = \"offset\"\ncursor_param = \"c\"\n"),
            "jobs/bad.toml:8:16: `cursor_param` does not apply to pagination kind \"offset\" (it is for kind cursor)",
        ),
        (
            "unknown pagination kind",
            format!("{HEAD}[pagination]\nkind = \"cursr\"\n"),
            "jobs/bad.toml:7:8: pagination kind \"cursr\" is not one of offset, page, cursor, next_url, link_header, none; did you mean `cursor`?",
        ),
        (
            "wrong type",
            format!("{HEAD}[pagination]\nkind = \"offset\"\npage_size = \"ten\"\n"),
            "jobs/bad.toml:8:13: invalid type: string \"ten\", expected u64",
        ),
        (
            "bad duration",
            "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\ntimeout = \"5 parsecs\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n".to_string(),
            "jobs/bad.toml:4:11: \"5 parsecs\" is not a duration",
        ),
        (
            "missing environment variable",
            "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\nheaders = { Authorization = \"Bearer ${NOPE_TOKEN}\" }\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n".to_string(),
            "jobs/bad.toml:4:11: environment variable NOPE_TOKEN is not set",
        ),
        (
            "invalid JSONPath",
            "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\n[records]\npath = \"$.items[\"\n[pagination]\nkind = \"none\"\n".to_string(),
            "jobs/bad.toml:5:8: invalid JSONPath \"$.items[\"",
        ),
        (
            "missing required key",
            "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\n[records]\nerrors = \"\"\n[pagination]\nkind = \"none\"\n".to_string(),
            "jobs/bad.toml:4:1: missing required key `path` in [records]",
        ),
        (
            "a name that cannot name a folder",
            format!("name = \"My Job\"\n{}[pagination]\nkind = \"none\"\n", &HEAD[11..]),
            "jobs/bad.toml:1:8: name \"My Job\" must match [a-z0-9_-]+",
        ),
        (
            "a placeholder without a partition",
            "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/{repo}/items\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n".to_string(),
            "jobs/bad.toml:3:7: request.url uses {repo}, but the job has no [partitions]",
        ),
        (
            "[incremental] without its param",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[incremental]\nfield = \"$.updated_at\"\n"),
            "jobs/bad.toml:8:1: missing required key `param` in [incremental]",
        ),
        (
            "[incremental] field not a JSONPath",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[incremental]\nfield = \"$.updated_at[\"\nparam = \"since\"\n"),
            "jobs/bad.toml:9:9: incremental.field is not a valid JSONPath",
        ),
        (
            "[incremental] lookback not a duration",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[incremental]\nfield = \"$.t\"\nparam = \"since\"\nlookback = \"soon\"\n"),
            "jobs/bad.toml:11:12: \"soon\" is not a duration",
        ),
        (
            "an auth kind without its key",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[auth]\nkind = \"oauth2_jwt_bearer\"\ntoken_url = \"http://h/token\"\n"),
            "jobs/bad.toml:10:13: oauth2_jwt_bearer needs private_key or key_file",
        ),
        (
            "a Parquet key on NDJSON output",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[output]\nrow_group_size = 10\n"),
            "jobs/bad.toml:9:18: row_group_size applies to format = \"parquet\" or \"delta\" only",
        ),
        (
            "an NDJSON compression on Parquet output",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[output]\nformat = \"parquet\"\ncompression = \"gzip\"\n"),
            "jobs/bad.toml:10:15: compression = \"gzip\" is not one of \"zstd\", \"snappy\", \"none\"",
        ),
        (
            "a schema file that is not there",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[output]\nformat = \"parquet\"\nschema = \"no/such.json\"\n"),
            "jobs/bad.toml:10:10: schema file jobs/no/such.json cannot be read: No such file or directory (os error 2)",
        ),
        (
            "on_mismatch without a schema",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[output]\nformat = \"parquet\"\non_mismatch = \"json\"\n"),
            "jobs/bad.toml:10:15: on_mismatch needs a declared schema (schema = \"file.json\")",
        ),
        (
            "a date range with hours between dates",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[partitions]\nday = {{ start = \"2024-01-01\", end = \"2024-02-01\", step = \"6h\" }}\n"),
            "jobs/bad.toml:9:7: partition day: dates step in whole days",
        ),
        (
            "zero concurrency",
            format!("{HEAD}[pagination]\nkind = \"none\"\n[limits]\nconcurrency = 0\n"),
            "jobs/bad.toml:9:15: concurrency must be at least 1",
        ),
        (
            "a cursor in the body of a GET",
            format!("{HEAD}[pagination]\nkind = \"cursor\"\ncursor_in = \"body\"\n"),
            "jobs/bad.toml:6:1: params_in = \"body\" (or cursor_in = \"body\") needs request.method = \"POST\"",
        ),
        (
            "a body on GET",
            "name = \"t\"\n[request]\nurl = \"http://127.0.0.1:9/items\"\nbody = { q = 1 }\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"none\"\n".to_string(),
            "jobs/bad.toml:4:8: request.body needs method = \"POST\"",
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, expected) in cases {
        let message = error_of(text);
        if !message.contains(expected) {
            failures.push(format!("{what}:\n  expected: {expected}\n  got:      {message}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn secrets_never_show_in_job_errors() {
    let text = format!(
        "{HEAD}[pagination]\nkind = \"none\"\n[auth]\nkind = \"bearer\"\ntoken = \"${{SET_TOKEN}}\"\nheader = \"X Bad\"\n"
    );
    let error = error_of(&text);
    assert!(error.contains("is not a valid HTTP header name") && !error.contains("s3cr3t"), "{error}");
}

#[test]
fn env_defaults_and_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "FROM_DOTENV=dotenv-value\n").unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        "name = \"t\"\n[request]\nurl = \"${BASE_FOR_TEST:-http://127.0.0.1:9}/items\"\nheaders = { X-Key = \"${FROM_DOTENV}\" }\n[records]\npath = \"$[*]\"\n[pagination]\nkind = \"none\"\n",
    )
    .unwrap();
    let plan = job::load(&path, &Overrides::default()).unwrap();
    assert_eq!(plan.request.url, "http://127.0.0.1:9/items");
    assert_eq!(plan.request.headers, vec![("X-Key".to_string(), "dotenv-value".to_string())]);
    assert!(plan.redactor.contains_secret("dotenv-value"), "values from the environment are secrets");
}
