//! A program that embeds harvest: the mock API started in-process, a job given as text (its
//! URL from the environment it is read with), run to completion, the records read back.
//!
//! `cargo run --release --example embed` (writes under output/embed/).

use std::path::Path;
use std::sync::Arc;

const JOB: &str = r#"
name = "embedded"

[request]
url = "${API_URL}/cursor"

[records]
path = "$.items[*]"

[pagination]
kind = "cursor"
next = "$.next_cursor"
page_size = 100

[output]
dir = "output/embed"
format = "ndjson"
mode = "replace"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let api =
        harvest_mock::MockServer::start(harvest_mock::MockConfig { records: 1_000, ..Default::default() }).await?;
    let path = Path::new("embedded.toml");
    let mut env = harvest::Env::for_job(path);
    env.set("API_URL", &api.url());
    let job = harvest::parse(path, JOB, &env, &harvest::Overrides::default())?;
    let summary = harvest::run(Arc::new(job), harvest::RunOptions::default()).await?;
    println!("{summary}");
    let mut ids = 0;
    for part in &summary.parts {
        ids += std::fs::read_to_string(part)?.lines().count();
    }
    assert_eq!((ids as u64, summary.records), (1_000, 1_000), "every record once, in the parts");
    println!("read back {ids} records from {} part file(s)", summary.parts.len());
    Ok(())
}
