//! The response cache for writing jobs (`run --cache`): a second run within the TTL asks the
//! server nothing and writes the same bytes; after the TTL it asks again; entries live in the
//! user's cache folder (mode 0600, named by a digest), never beside the output; two accounts
//! never share one; errors are never kept; `cache clear` empties it.

use std::process::Command;

use crate::support::{part_files, Fixture};

fn harvest(args: &[&str], cache_home: &std::path::Path, token: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(args)
        .env("XDG_CACHE_HOME", cache_home)
        .env("API_TOKEN", token)
        .output()
        .expect("harvest runs")
}

/// The bytes of the job's parts, in order.
fn written(root: &std::path::Path) -> Vec<u8> {
    part_files(root).iter().flat_map(|p| std::fs::read(p).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_within_the_ttl_asks_nothing_and_writes_the_same_bytes() {
    let fixture = Fixture::new(600).await;
    let job = fixture.job(
        "name = \"cached\"\n[request]\nurl = \"{base}/cursor\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"cursor\"\nnext = \"$.next_cursor\"\nlimit_param = \"limit\"\npage_size = 100\n\
         [auth]\nkind = \"bearer\"\ntoken = \"${API_TOKEN}\"\n",
    );
    let cache_home = tempfile::tempdir().unwrap();
    let (job, out, home) = (job.to_str().unwrap().to_string(), fixture.out(), cache_home.path().to_path_buf());
    let run = move |extra: &'static [&'static str], token: &'static str| {
        let (job, out, home) = (job.clone(), out.clone(), home.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let mut args = vec!["run", job.as_str(), "--output-dir", out.to_str().unwrap(), "--fresh"];
                args.extend_from_slice(extra);
                let output = harvest(&args, &home, token);
                assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                String::from_utf8_lossy(&output.stderr).into_owned()
            })
            .await
            .unwrap()
        }
    };
    let root = fixture.out().join("cached");

    run(&["--cache", "10m"], "account-one").await;
    let asked = fixture.server.stats.requests();
    assert_eq!(asked, 6, "six pages");
    let first = written(&root);
    let said = run(&["--cache", "10m"], "account-one").await;
    assert_eq!(fixture.server.stats.requests(), asked, "the second run asked the server again");
    assert_eq!(written(&root), first, "the same bytes");
    assert!(said.contains("6 pages from the response cache"), "{said}");

    // Entries: in the user's cache folder, private, named by a digest; no secret anywhere.
    let entries: Vec<std::path::PathBuf> =
        std::fs::read_dir(cache_home.path().join("harvest/responses")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(entries.len(), 6);
    for entry in &entries {
        let name = entry.file_name().unwrap().to_str().unwrap();
        assert!(name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert!(!entry.starts_with(fixture.out()) && !entry.starts_with(fixture.dir.path()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(entry).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!String::from_utf8_lossy(&std::fs::read(entry).unwrap()).contains("account-one"));
    }

    // Another account's credential: its own entries.
    run(&["--cache", "10m"], "account-two").await;
    assert_eq!(fixture.server.stats.requests(), asked + 6, "two accounts shared an entry");

    // Past the TTL: asked again (entries timed from when they were kept).
    let home = cache_home.path().to_path_buf();
    tokio::task::spawn_blocking(move || harvest(&["cache", "clear"], &home, "")).await.unwrap();
    let asked = fixture.server.stats.requests();
    run(&["--cache", "3s"], "account-one").await;
    run(&["--cache", "3s"], "account-one").await;
    assert_eq!(fixture.server.stats.requests(), asked + 6, "within the TTL the second run asked again");
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    run(&["--cache", "3s"], "account-one").await;
    assert_eq!(fixture.server.stats.requests(), asked + 12, "an expired entry was used");
    let asked = asked + 6;

    // Without --cache nothing is read from it; `cache clear` empties it.
    run(&[], "account-one").await;
    assert_eq!(fixture.server.stats.requests(), asked + 12);
    let home = cache_home.path().to_path_buf();
    let cleared = tokio::task::spawn_blocking(move || harvest(&["cache", "clear"], &home, "")).await.unwrap();
    assert!(String::from_utf8_lossy(&cleared.stdout).starts_with("removed "), "{cleared:?}");
    assert_eq!(std::fs::read_dir(cache_home.path().join("harvest/responses")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_never_kept_and_incremental_jobs_refuse_a_cache() {
    let fixture = Fixture::new(50).await;
    let cache_home = tempfile::tempdir().unwrap();
    // Every page of this job is refused (401): nothing is kept, so a re-run asks again.
    let job = fixture.job(
        "name = \"refused\"\n[request]\nurl = \"{base}/auth/bearer/offset\"\ncache = \"10m\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\n[retry]\nmax_attempts = 1\n",
    );
    let (job_path, out, home) = (job.clone(), fixture.out(), cache_home.path().to_path_buf());
    let runs = tokio::task::spawn_blocking(move || {
        (0..2)
            .map(|_| {
                harvest(
                    &["run", job_path.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--fresh"],
                    &home,
                    "x",
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(runs.iter().all(|r| r.status.code() == Some(1)));
    assert_eq!(fixture.server.stats.requests(), 2, "a 401 was answered from the cache");
    let kept = std::fs::read_dir(cache_home.path().join("harvest/responses")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "an error response was kept");

    let job = fixture.job(
        "name = \"sync\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n\
         [pagination]\nkind = \"offset\"\n[incremental]\nfield = \"$.updated_at\"\nparam = \"updated_since\"\n",
    );
    let (out, home) = (fixture.out(), cache_home.path().to_path_buf());
    let refused = tokio::task::spawn_blocking(move || {
        harvest(&["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "--cache", "5m"], &home, "")
    })
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot go with [incremental]"));
}
