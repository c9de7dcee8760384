//! End-to-end benchmarks: `cargo bench --bench pipeline` (add `-- --quick` for a short run,
//! `-- --throughput` for the first table only).
//!
//! The mock API runs as its own process (`harvest mock-api`), so its CPU is not harvest's;
//! each harvest runs as a child process, measured with wait4 (wall, user+system CPU, peak
//! RSS). The fetch-only and fetch+parse rows run the library in this process to show where
//! the time goes. Output goes to /dev/shm when there is one, so that the disk is not what is
//! measured. Prints the markdown tables the README carries.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harvest::fetch::{Fetched, Fetcher, Outgoing, Reject};
use harvest::job::{self, Env, Overrides};
use harvest::jsonpath::{Document, JsonPath};
use harvest::plan::Method;

const BIN: &str = env!("CARGO_BIN_EXE_harvest");

/// Parts of the same size in every run, so that the 200,000 and 2,000,000 record runs differ
/// only in how many records they harvest (an open part's index grows with its rows).
const ROWS_PER_FILE: u64 = 100_000;
/// Runs of each harvest row in the throughput table; the fastest is shown.
const ROUNDS: usize = 3;

/// A `harvest mock-api` child process.
struct Mock {
    child: Child,
    addr: SocketAddr,
}

impl Mock {
    fn start(args: &[&str]) -> Mock {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(BIN)
            .args(["mock-api", "--addr", &addr.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .expect("the mock starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "the mock did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Mock { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// User+system CPU seconds the mock has used so far.
    fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one harvest process used.
struct Usage {
    wall: f64,
    cpu: f64,
    max_rss_mb: f64,
}

/// Run `harvest run job` as a child and measure it (reaped by wait4, which also reports its
/// resource usage).
#[allow(clippy::zombie_processes)]
fn harvest(job: &Path, out: &Path) -> Usage {
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["run", job.to_str().unwrap(), "--output-dir", out.to_str().unwrap(), "-q", "--progress", "never"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the harvest failed: {job:?}");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage { wall, cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime), max_rss_mb: usage.ru_maxrss as f64 / 1024.0 }
}

fn write_job(dir: &Path, name: &str, base: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[request]\nurl = \"{base}/offset\"\n[records]\npath = \"$.items[*]\"\n[pagination]\nkind = \"offset\"\ntotal = \"$.total\"\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn self_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Fetch every page of the mock at `concurrency` in this process; with `parse`, locate the
/// records too. Returns (records, wall seconds, CPU seconds).
fn fetch_rows(base: &str, records: u64, page: u64, concurrency: usize, parse: bool) -> (u64, f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let job =
        write_job(dir.path(), "fetch", base, &format!("page_size = {page}\n[limits]\nconcurrency = {concurrency}\n"));
    let text = std::fs::read_to_string(&job).unwrap();
    let plan = job::parse(&job, &text, &Env::default(), &Overrides::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let fetcher = Arc::new(Fetcher::new(&plan).unwrap());
    let path = Arc::new(JsonPath::parse("$.items[*]").unwrap());
    let (cpu0, started) = (self_cpu(), Instant::now());
    let found: u64 = runtime.block_on(async {
        let offsets: Vec<u64> = (0..records).step_by(page as usize).collect();
        let tasks = futures::StreamExt::buffer_unordered(
            futures::stream::iter(offsets.into_iter().map(|offset| {
                let (fetcher, path) = (fetcher.clone(), path.clone());
                let url = format!("{base}/offset?offset={offset}&limit={page}").parse().unwrap();
                tokio::spawn(async move {
                    let request = Outgoing { method: Method::Get, url, headers: vec![], body: None };
                    let judged = fetcher.fetch_with(&request, |fetched: &Fetched| -> Result<u64, Reject<()>> {
                        if !parse {
                            return Ok(page);
                        }
                        let doc = Document::parse(&fetched.body).unwrap();
                        let mut lines = Vec::with_capacity(fetched.body.len());
                        Ok(path.write_records(&doc, &mut lines).unwrap())
                    });
                    judged.await.ok().expect("the page arrives")
                })
            })),
            concurrency,
        );
        futures::StreamExt::fold(tasks, 0, |sum, n| async move { sum + n.unwrap() }).await
    });
    (found, started.elapsed().as_secs_f64(), self_cpu() - cpu0)
}

/// The floor the issue sets beside harvest: a bare loop that fetches `concurrency` pages at a
/// time with reqwest, splits each into records with borrowed `RawValue` parsing and appends
/// them to a file, with no limiter, ordering, minifying or checkpoints. Returns (records,
/// wall seconds, CPU seconds).
fn bare_loop(base: &str, records: u64, page: u64, concurrency: usize, out: &Path) -> (u64, f64, f64) {
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        items: Vec<&'a serde_json::value::RawValue>,
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let (cpu0, started) = (self_cpu(), Instant::now());
    let found = runtime.block_on(async {
        let pages = futures::StreamExt::buffer_unordered(
            futures::stream::iter((0..records).step_by(page as usize).map(|offset| {
                let request = client.get(format!("{base}/offset?offset={offset}&limit={page}"));
                async move { request.send().await.unwrap().bytes().await.unwrap() }
            })),
            concurrency,
        );
        futures::StreamExt::fold(pages, 0u64, |sum, body| {
            let page: Page = serde_json::from_slice(&body).unwrap();
            for record in &page.items {
                std::io::Write::write_all(&mut file, record.get().as_bytes()).unwrap();
                std::io::Write::write_all(&mut file, b"\n").unwrap();
            }
            std::future::ready(sum + page.items.len() as u64)
        })
        .await
    });
    std::io::Write::flush(&mut file).unwrap();
    (found, started.elapsed().as_secs_f64(), self_cpu() - cpu0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let records: u64 = if quick { 50_000 } else { 200_000 };
    // Output goes to memory (tmpfs) where there is one: this measures the harvester, not the disk.
    let dir = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };

    let record_bytes = {
        let sample = harvest::mock::Dataset::new(1000);
        (0..1000).map(|i| sample.record(i).len() + 1).sum::<usize>() as f64 / 1000.0
    };
    println!(
        "\n### Throughput: {records} records of ~{record_bytes:.0} bytes, 100 a page, mock API in its own process\n"
    );
    println!(
        "| run | records/s | MB/s | harvest CPU-s per million records | harvest wall s | peak RSS MB | mock CPU-s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mock = Mock::start(&["--records", &records.to_string()]);
    let megabytes = records as f64 * record_bytes / 1e6;
    for (concurrency, parse) in [(8, false), (8, true)] {
        let (n, wall, cpu) = fetch_rows(&mock.url(), records, 100, concurrency, parse);
        assert_eq!(n, records);
        let what =
            if parse { "fetch + parse (records located, nothing written)" } else { "fetch only (bodies discarded)" };
        println!(
            "| {what}, concurrency {concurrency} | {:.0} | {:.0} | {:.2} | {wall:.2} | | |",
            records as f64 / wall,
            megabytes / wall,
            cpu / (records as f64 / 1e6)
        );
    }
    let (n, wall, cpu) = bare_loop(&mock.url(), records, 100, 8, &dir.path().join("bare.ndjson"));
    assert_eq!(n, records);
    println!(
        "| bare loop (reqwest, RawValue split, appended to a file), concurrency 8 | {:.0} | {:.0} | {:.2} | {wall:.2} | | |",
        records as f64 / wall,
        megabytes / wall,
        cpu / (records as f64 / 1e6)
    );
    // Each harvest row is run ROUNDS times, the rows taking turns, and its fastest run shown:
    // the rows then share the machine's quiet and busy moments alike.
    let rows = [("NDJSON", "ndjson", 1), ("NDJSON", "ndjson", 8), ("Parquet", "parquet", 1), ("Parquet", "parquet", 8)];
    let mut best: Vec<Option<(Usage, f64)>> = rows.iter().map(|_| None).collect();
    for _ in 0..ROUNDS {
        for ((_, format, concurrency), best) in rows.iter().zip(&mut best) {
            let job = write_job(
                dir.path(),
                &format!("{format}{concurrency}"),
                &mock.url(),
                &format!("page_size = 100\n[limits]\nconcurrency = {concurrency}\n[output]\nformat = \"{format}\"\nrows_per_file = {ROWS_PER_FILE}\n"),
            );
            let mock_cpu = mock.cpu();
            let u = harvest(&job, &dir.path().join("out"));
            let mock_cpu = mock.cpu() - mock_cpu;
            if best.as_ref().is_none_or(|(b, _)| u.wall < b.wall) {
                *best = Some((u, mock_cpu));
            }
        }
    }
    let rate = |row: usize| best[row].as_ref().map_or(0.0, |(u, _)| records as f64 / u.wall);
    let ratios = format!(
        "\nParquet's records/s against NDJSON's: {:.0}% at concurrency 1, {:.0}% at concurrency 8.\n",
        100.0 * rate(2) / rate(0),
        100.0 * rate(3) / rate(1)
    );
    for ((name, _, concurrency), best) in rows.iter().zip(best) {
        let (u, mock_cpu) = best.expect("each row ran");
        println!(
            "| harvest to {name}, concurrency {concurrency} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {mock_cpu:.2} |",
            records as f64 / u.wall,
            megabytes / u.wall,
            u.cpu / (records as f64 / 1e6),
            u.wall,
            u.max_rss_mb,
        );
    }
    drop(mock);
    if std::env::args().any(|a| a == "--throughput") {
        println!("{ratios}");
        return;
    }

    if !quick {
        let big = 2_000_000u64;
        let mock = Mock::start(&["--records", &big.to_string()]);
        for (name, format) in [("NDJSON", "ndjson"), ("Parquet", "parquet")] {
            let job = write_job(
                dir.path(),
                &format!("big{format}"),
                &mock.url(),
                &format!("page_size = 100\n[limits]\nconcurrency = 8\n[output]\nformat = \"{format}\"\nrows_per_file = {ROWS_PER_FILE}\n"),
            );
            let u = harvest(&job, &dir.path().join("out"));
            println!(
                "| harvest to {name}, concurrency 8, {big} records | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | |",
                big as f64 / u.wall,
                big as f64 * record_bytes / 1e6 / u.wall,
                u.cpu / (big as f64 / 1e6),
                u.wall,
                u.max_rss_mb
            );
        }
    }

    println!("{ratios}");
    println!("\n### Latency-bound: 20 ms a response, 10 records a page\n");
    println!("| concurrency | pages | pages/s | ideal (concurrency / latency) | share of ideal |");
    println!("|---|---|---|---|---|");
    let pages_per_unit: u64 = if quick { 25 } else { 100 };
    let max = 32 * pages_per_unit * 10;
    let mock = Mock::start(&["--records", &max.to_string(), "--latency", "20ms"]);
    for concurrency in [1u64, 8, 32] {
        let pages = concurrency * pages_per_unit;
        let job = write_job(
            dir.path(),
            &format!("lat{concurrency}"),
            &mock.url(),
            &format!("page_size = 10\nmax_pages = {pages}\n[limits]\nconcurrency = {concurrency}\n"),
        );
        let u = harvest(&job, &dir.path().join("out"));
        let rate = pages as f64 / u.wall;
        let ideal = concurrency as f64 / 0.020;
        println!("| {concurrency} | {pages} | {rate:.0} | {ideal:.0} | {:.0}% |", 100.0 * rate / ideal);
    }
    drop(mock);

    println!("\n### Rate-limited: requests_per_second = 50, burst 1\n");
    let seconds = if quick { 4 } else { 10 };
    let mock = Mock::start(&["--records", "100000"]);
    let pages = 50 * seconds;
    let job = write_job(
        dir.path(),
        "rate",
        &mock.url(),
        &format!(
            "page_size = 10\nmax_pages = {pages}\n[limits]\nconcurrency = 8\nrequests_per_second = 50.0\nburst = 1\n"
        ),
    );
    let u = harvest(&job, &dir.path().join("out"));
    // The first request goes at once; the other pages - 1 are paced at 50/s.
    let rate = (pages - 1) as f64 / u.wall.max(1e-9);
    println!("| pages | seconds | achieved requests/s | limit | share |\n|---|---|---|---|---|");
    println!("| {pages} | {:.2} | {rate:.1} | 50 | {:.0}% |", u.wall, 100.0 * rate / 50.0);
}
