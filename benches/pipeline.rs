//! End-to-end benchmarks: `cargo bench --bench pipeline` (add `-- --quick` for a short run,
//! `-- --throughput` for the first table only).
//!
//! The mock API runs as its own process (`harvest mock-api`), so its CPU is not harvest's, and
//! every row reports it. Each harvest runs as a child process, measured with wait4 (wall,
//! user+system CPU, peak RSS), and so does the bare-loop floor (this benchmark re-run as
//! `--bare-loop`), built in the same shape as harvest: a task per page, the same window of
//! pages and requests in flight, a writer thread behind a queue of 16 pages, a 1 MiB buffer,
//! an fsync at the end. The floor and the harvest rows take turns, `ROUNDS` times each, and
//! every run's records are counted in its output. The fetch-only and fetch+parse rows run the
//! library in this process to show where the time goes. Output goes to /dev/shm when there is
//! one, so that the disk is not what is measured. Prints the markdown tables the README carries.

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
/// Runs of each row of the throughput table that runs as a child, the rows taking turns; the
/// median is shown, and the floor comparison gives the spread.
const ROUNDS: usize = 5;

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

/// Run `command` as a child and measure it (reaped by wait4, which also reports its resource
/// usage).
#[allow(clippy::zombie_processes)]
fn measure(command: &mut Command, what: &str) -> Usage {
    let started = Instant::now();
    let child = command.stdout(Stdio::null()).spawn().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert!(pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{what} failed");
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage { wall, cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime), max_rss_mb: usage.ru_maxrss as f64 / 1024.0 }
}

/// `harvest run job`, measured; the records it wrote are counted from its parts.
fn harvest(job: &Path, out: &Path, expected: u64) -> Usage {
    let usage = measure(
        Command::new(BIN).args([
            "run",
            job.to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
            "-q",
            "--progress",
            "never",
        ]),
        &format!("the harvest of {}", job.display()),
    );
    let name = job.file_stem().unwrap();
    let written = count_records(&out.join(name));
    assert_eq!(written, expected, "{}: records written", job.display());
    usage
}

/// Records in the part files of a job's output folder (NDJSON lines, Parquet rows).
fn count_records(root: &Path) -> u64 {
    let mut count = 0;
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("part-") {
            continue;
        }
        count += if name.ends_with(".parquet") {
            use parquet::file::reader::FileReader;
            let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            reader.metadata().file_metadata().num_rows() as u64
        } else {
            count_lines(&path)
        };
    }
    count
}

/// Lines in a file, read a buffer at a time: a child forked from a process holding the whole
/// file would count it in its own peak RSS.
fn count_lines(path: &Path) -> u64 {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buffer = vec![0u8; 1 << 16];
    let mut lines = 0;
    loop {
        match std::io::Read::read(&mut file, &mut buffer).unwrap() {
            0 => return lines,
            n => lines += memchr::memchr_iter(b'\n', &buffer[..n]).count() as u64,
        }
    }
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
                    let judged = fetcher.fetch_with(&request, None, |fetched: &Fetched| -> Result<u64, Reject<()>> {
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

/// The floor a hand-written harvester sets, in harvest's shape: each page fetched with reqwest
/// on its own task (`2 x concurrency` pages fetched ahead, `concurrency` requests in flight),
/// split into records by serde_json's borrowed `RawValue` parse into a buffer the size of the
/// body, and handed in page order to a writer thread behind a queue of 16 pages, which appends
/// them to a file through a 1 MiB buffer and fsyncs it at the end. No limiter, retries,
/// minifying, checkpoints or manifest. Returns the records written.
fn bare_loop(base: &str, records: u64, page: u64, concurrency: usize, out: &Path) -> u64 {
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        items: Vec<&'a serde_json::value::RawValue>,
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<u8>, u64)>(16);
    let out = out.to_path_buf();
    let writer = std::thread::spawn(move || {
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out).unwrap());
        let mut written = 0;
        while let Some((lines, count)) = rx.blocking_recv() {
            std::io::Write::write_all(&mut file, &lines).unwrap();
            written += count;
        }
        file.into_inner().unwrap().sync_all().unwrap();
        written
    });
    runtime.block_on(async {
        let pages = futures::StreamExt::buffered(
            futures::stream::iter((0..records).step_by(page as usize).map(|offset| {
                let request = client.get(format!("{base}/offset?offset={offset}&limit={page}"));
                let permits = permits.clone();
                tokio::spawn(async move {
                    let body = {
                        let _permit = permits.acquire().await.unwrap();
                        request.send().await.unwrap().bytes().await.unwrap()
                    };
                    let page: Page = serde_json::from_slice(&body).unwrap();
                    let mut lines = Vec::with_capacity(body.len());
                    for record in &page.items {
                        lines.extend_from_slice(record.get().as_bytes());
                        lines.push(b'\n');
                    }
                    (lines, page.items.len() as u64)
                })
            })),
            2 * concurrency,
        );
        futures::StreamExt::for_each(pages, |page| {
            let tx = tx.clone();
            async move { tx.send(page.unwrap()).await.unwrap() }
        })
        .await;
    });
    drop(tx);
    writer.join().unwrap()
}

/// `pipeline --bare-loop URL RECORDS PAGE CONCURRENCY OUT`: the floor as a process of its own,
/// measured like a harvest.
fn bare_loop_child(args: &[String]) {
    let [url, records, page, concurrency, out] = args else { panic!("--bare-loop URL RECORDS PAGE CONCURRENCY OUT") };
    let written =
        bare_loop(url, records.parse().unwrap(), page.parse().unwrap(), concurrency.parse().unwrap(), Path::new(out));
    assert_eq!(written, records.parse::<u64>().unwrap());
}

/// The median of `values` and their spread (min, max).
fn median(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--bare-loop") {
        bare_loop_child(&args[at + 1..]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let records: u64 = if quick { 50_000 } else { 200_000 };
    // Output goes to memory (tmpfs) where there is one: this measures the harvester, not the disk.
    let dir = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };

    let record_bytes = {
        let sample = harvest_mock::Dataset::new(1000);
        (0..1000).map(|i| sample.record(i).len() + 1).sum::<usize>() as f64 / 1000.0
    };
    println!(
        "\n### Throughput: {records} records of ~{record_bytes:.0} bytes, 100 a page, mock API in its own process\n"
    );
    println!("| run | records/s | MB/s | CPU-s per million records | wall s | peak RSS MB | mock CPU-s |");
    println!("|---|---|---|---|---|---|---|");
    let mock = Mock::start(&["--records", &records.to_string()]);
    let megabytes = records as f64 * record_bytes / 1e6;
    for (concurrency, parse) in [(8, false), (8, true)] {
        let mock_cpu = mock.cpu();
        let (n, wall, cpu) = fetch_rows(&mock.url(), records, 100, concurrency, parse);
        let mock_cpu = mock.cpu() - mock_cpu;
        assert_eq!(n, records);
        let what =
            if parse { "fetch + parse (records located, nothing written)" } else { "fetch only (bodies discarded)" };
        println!(
            "| {what}, concurrency {concurrency}, in the benchmark's process | {:.0} | {:.0} | {:.2} | {wall:.2} | | {mock_cpu:.2} |",
            records as f64 / wall,
            megabytes / wall,
            cpu / (records as f64 / 1e6)
        );
    }
    // The floor and each harvest row run ROUNDS times, the rows taking turns, so that they all
    // share the machine's quiet and busy moments; each row shows its median run.
    let rows: [(&str, &str, usize); 5] = [
        ("bare loop (the floor: reqwest, `RawValue` split, a writer thread), concurrency 8", "bare", 8),
        ("harvest to NDJSON, concurrency 1", "ndjson", 1),
        ("harvest to NDJSON, concurrency 8", "ndjson", 8),
        ("harvest to Parquet (zstd), concurrency 1", "parquet", 1),
        ("harvest to Parquet (zstd), concurrency 8", "parquet", 8),
    ];
    let mut runs: Vec<Vec<(Usage, f64)>> = rows.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for ((_, format, concurrency), runs) in rows.iter().zip(&mut runs) {
            let mock_cpu = mock.cpu();
            let usage = match *format {
                "bare" => {
                    let out = dir.path().join("bare.ndjson");
                    let usage = measure(
                        Command::new(std::env::current_exe().unwrap()).args([
                            "--bare-loop",
                            &mock.url(),
                            &records.to_string(),
                            "100",
                            &concurrency.to_string(),
                            out.to_str().unwrap(),
                        ]),
                        "the bare loop",
                    );
                    let written = count_lines(&out);
                    assert_eq!(written, records, "the bare loop's records");
                    usage
                }
                format => {
                    let job = write_job(
                        dir.path(),
                        &format!("{format}{concurrency}"),
                        &mock.url(),
                        &format!("page_size = 100\n[limits]\nconcurrency = {concurrency}\n[output]\nformat = \"{format}\"\nrows_per_file = {ROWS_PER_FILE}\n"),
                    );
                    harvest(&job, &dir.path().join("out"), records)
                }
            };
            runs.push((usage, mock.cpu() - mock_cpu));
        }
    }
    let rate = |usage: &Usage| records as f64 / usage.wall;
    for ((what, _, _), runs) in rows.iter().zip(&runs) {
        let pick = |f: &dyn Fn(&(Usage, f64)) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>()).0;
        let wall = pick(&|(u, _)| u.wall);
        println!(
            "| {what} | {:.0} | {:.0} | {:.2} | {wall:.2} | {:.0} | {:.2} |",
            records as f64 / wall,
            megabytes / wall,
            pick(&|(u, _)| u.cpu) / (records as f64 / 1e6),
            pick(&|(u, _)| u.max_rss_mb),
            pick(&|(_, m)| *m),
        );
    }
    // Ratios of runs side by side in one round.
    let ratio = |row: usize, of: usize, f: &dyn Fn(&Usage) -> f64| {
        median(&mut runs[row].iter().zip(&runs[of]).map(|((a, _), (b, _))| f(a) / f(b)).collect::<Vec<_>>())
    };
    let (r, r_min, r_max) = ratio(2, 0, &rate);
    let (c, c_min, c_max) = ratio(2, 0, &|u| u.cpu);
    let floor = format!(
        "\nharvest to NDJSON at concurrency 8 against the bare loop, {ROUNDS} rounds: {r:.2}x its records/s \
         ({r_min:.2}-{r_max:.2}), {c:.2}x its CPU ({c_min:.2}-{c_max:.2}).",
    );
    let (p1, p1_min, p1_max) = ratio(3, 1, &rate);
    let (p8, p8_min, p8_max) = ratio(4, 2, &rate);
    let ratios = format!(
        "{floor}\nParquet's records/s against NDJSON's: {:.0}% at concurrency 1 ({:.0}-{:.0}%), {:.0}% at concurrency 8 ({:.0}-{:.0}%).\n",
        100.0 * p1, 100.0 * p1_min, 100.0 * p1_max, 100.0 * p8, 100.0 * p8_min, 100.0 * p8_max
    );
    drop(mock);
    if args.iter().any(|a| a == "--throughput") {
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
            let mock_cpu = mock.cpu();
            let u = harvest(&job, &dir.path().join("out"), big);
            println!(
                "| harvest to {name}, concurrency 8, {big} records (one run) | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} |",
                big as f64 / u.wall,
                big as f64 * record_bytes / 1e6 / u.wall,
                u.cpu / (big as f64 / 1e6),
                u.wall,
                u.max_rss_mb,
                mock.cpu() - mock_cpu
            );
        }
    }

    println!("{ratios}");
    println!("\n### Latency-bound: 20 ms a response, 10 records a page\n");
    println!("| concurrency | pages | pages/s | ideal (concurrency / latency) | share of ideal | mock CPU-s |");
    println!("|---|---|---|---|---|---|");
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
        let mock_cpu = mock.cpu();
        let u = harvest(&job, &dir.path().join("out"), pages * 10);
        let rate = pages as f64 / u.wall;
        let ideal = concurrency as f64 / 0.020;
        println!(
            "| {concurrency} | {pages} | {rate:.0} | {ideal:.0} | {:.0}% | {:.2} |",
            100.0 * rate / ideal,
            mock.cpu() - mock_cpu
        );
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
    let mock_cpu = mock.cpu();
    let u = harvest(&job, &dir.path().join("out"), pages * 10);
    // The first request goes at once; the other pages - 1 are paced at 50/s.
    let rate = (pages - 1) as f64 / u.wall.max(1e-9);
    println!("| pages | seconds | achieved requests/s | limit | share | mock CPU-s |\n|---|---|---|---|---|---|");
    println!(
        "| {pages} | {:.2} | {rate:.1} | 50 | {:.0}% | {:.2} |",
        u.wall,
        100.0 * rate / 50.0,
        mock.cpu() - mock_cpu
    );
}
