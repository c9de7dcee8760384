//! Progress as people see it: live bars on a terminal (a real pseudo-terminal, its output
//! replayed through a terminal emulator), plain lines when stderr is a pipe.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use harvest_mock::{MockConfig, MockServer};

/// A pseudo-terminal of `rows` x `cols`: the side harvest writes to, and the side read here.
fn pty(rows: u16, cols: u16) -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two new descriptors, which are owned from here on.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and nothing else owns them.
    unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Run harvest with stderr on a terminal; what it drew there, and its stdout.
fn in_terminal(args: &[&str], rows: u16, cols: u16) -> (std::process::ExitStatus, Vec<u8>, String) {
    let (mut master, slave) = pty(rows, cols);
    let mut child = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(args)
        .env("TERM", "xterm-256color")
        .env_remove("HARVEST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("harvest runs");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut drawn = Vec::new();
        let mut buf = [0u8; 65536];
        // Ends with EIO once the last holder of the terminal's other side has exited.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            drawn.extend_from_slice(&buf[..n]);
        }
        drawn
    });
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    (status, reader.join().unwrap(), out)
}

/// Wide enough that no log line wraps, so a torn line shows as a row of its own.
const COLUMNS: u16 = 400;

fn job_file(dir: &std::path::Path, toml: &str) -> String {
    let path = dir.join("job.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn bars_draw_update_and_leave_a_clean_screen_with_whole_log_lines() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let latency = std::time::Duration::from_millis(120);
    let server =
        runtime.block_on(MockServer::start(MockConfig { records: 500, latency, ..Default::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Six partitions side by side: five lines and "+1 more". Every URI fails once with a
    // 503, so retry warnings are logged while the bars are up; 40 requests a second is less
    // than eight in flight would send, so partitions wait on the job's limit.
    let job = job_file(
        dir.path(),
        &format!(
            r#"name = "bars"
[request]
url = "{}/t/{{tenant}}/offset"
params = {{ flaky = "1", flaky_as = "503" }}
[records]
path = "$.items[*]"
[pagination]
kind = "offset"
page_size = 50
total = "$.total"
[partitions]
tenant = ["a", "b", "c", "d", "e", "f"]
[retry]
initial_backoff = "10ms"
[limits]
requests_per_second = 40
"#,
            server.url()
        ),
    );
    let out = dir.path().join("out");
    let (status, drawn, stdout) =
        in_terminal(&["run", &job, "--output-dir", out.to_str().unwrap(), "--concurrency", "8"], 200, COLUMNS);
    let text = String::from_utf8_lossy(&drawn);
    assert!(status.success(), "{text}");
    assert!(stdout.contains("harvested 3000 records"), "{stdout}");

    // Drawn: escape codes, partition lines, the overflow line, a bar once totals are known.
    assert!(text.contains("\x1b["), "no escape codes: bars were not drawn");
    assert!(text.contains("fetching page"), "no partition line drawn");
    assert!(text.contains("+1 more under way"), "no overflow line drawn");
    assert!(text.contains("waiting: requests_per_second = 40, "), "no partition shown waiting on the limit");
    assert!(text.contains("] "), "no bar drawn once every total was known");
    // Updated: the total line shows a growing count of records.
    let counts: Vec<u64> = text
        .match_indices(" records · ")
        .filter_map(|(at, _)| {
            let before = &text[..at];
            let digits = before.rsplit(|c: char| !(c.is_ascii_digit() || c == ',')).next()?;
            digits.replace(',', "").parse().ok()
        })
        .collect();
    let mut distinct = counts.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "the total line was not updated: {counts:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "records went backwards: {counts:?}");

    // The screen as a terminal shows it once harvest has exited.
    let size = |n| std::num::NonZeroU16::new(n).unwrap();
    let mut screen = vt100::Parser::new(size(200), size(COLUMNS), 0);
    screen.process(&drawn);
    let rows: Vec<String> = screen.screen().rows(0, COLUMNS).map(|r| r.trim_end().to_string()).collect();
    let screen_text = rows.join("\n");
    // Ended cleanly: no bar left over, the report below the log.
    assert!(!screen_text.contains(" · "), "a bar was left on screen:\n{screen_text}");
    assert!(!screen_text.contains("fetching page"), "a partition line was left on screen:\n{screen_text}");
    let report = rows.iter().position(|r| r.starts_with("run ") && r.contains("of job bars: complete"));
    let report = report.unwrap_or_else(|| panic!("no report on screen:\n{screen_text}"));
    assert!(rows[report + 1].contains("records: 3,000 in 60 pages"), "{screen_text}");
    // No log line torn: each partition's end is one whole line, and every log line is whole.
    for tenant in ["a", "b", "c", "d", "e", "f"] {
        let line = format!(
            "INFO partition tenant={tenant} ended: 500 records in 10 pages; the announced total (500) was reached"
        );
        assert_eq!(
            rows.iter().filter(|r| r.ends_with(&line)).count(),
            1,
            "partition {tenant}'s line is not whole:\n{screen_text}"
        );
    }
    let logged: Vec<&String> = rows[..report].iter().filter(|r| !r.is_empty()).collect();
    let retries = logged.iter().filter(|r| r.contains("retrying in")).count();
    assert!(retries >= 6, "expected retry warnings while the bars were up:\n{screen_text}");
    for row in logged {
        let timestamp = row.split_whitespace().next().unwrap_or("");
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok()
                && (row.contains(" INFO ") || row.contains(" WARN ")),
            "not a whole log line: {row:?}\n{screen_text}"
        );
        if row.contains("retrying in") {
            assert!(row.ends_with(')'), "a retry line was cut: {row:?}");
        }
    }
}

#[test]
fn without_a_terminal_progress_is_a_plain_line_every_ten_seconds() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let latency = std::time::Duration::from_millis(400);
    let server =
        runtime.block_on(MockServer::start(MockConfig { records: 3000, latency, ..Default::default() })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = job_file(
        dir.path(),
        &format!(
            "name = \"slow\"\n[request]\nurl = \"{}/offset\"\n[records]\npath = \"$.items[*]\"\n\
             [pagination]\nkind = \"offset\"\npage_size = 100\ntotal = \"$.total\"\n[limits]\nconcurrency = 1\n",
            server.url()
        ),
    );
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_harvest"))
        .args(["run", &job, "--output-dir", out.to_str().unwrap()])
        .env_remove("HARVEST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!output.stderr.contains(&0x1b), "escape codes in a pipe:\n{stderr}");
    let at = |line: &str| {
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next().unwrap()).unwrap().timestamp_millis()
    };
    let start = at(stderr.lines().find(|l| l.contains("harvesting job slow")).expect("a start line"));
    let end = at(stderr.lines().find(|l| l.contains("the job ended")).expect("an end line"));
    assert!(end - start > 11_000, "the run was meant to take over 11 s");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" INFO progress: ")).collect();
    assert!(!lines.is_empty(), "no progress line in a run of {} ms:\n{stderr}", end - start);
    let mut last = start;
    for line in &lines {
        let gap = at(line) - last;
        assert!((9_000..=11_000).contains(&gap), "{gap} ms between progress lines:\n{stderr}");
        assert!(line.contains(" records, ") && line.contains(" records/s") && line.contains(" elapsed"), "{line}");
        last = at(line);
    }
    assert!(lines[0].contains(" left"), "the total is known, so the line says how long is left: {}", lines[0]);
}
