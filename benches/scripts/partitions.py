"""Many partitions from a file: partitions/s and peak RSS for 100,000 and 1,000,000 of them.

    cargo build --release && python3 benches/scripts/partitions.py [runs]

Each partition is one request (`/offset?tag={k}`, page_size 1, max_records 1) to a local
`harvest mock-api`, at 64 requests in flight, written as zstd NDJSON: what is measured is
harvest's cost per partition (reading the source, the plan, the checkpoint's ranges, the
manifest), not the server's. The two sizes take turns `runs` times; medians and spread are
printed. The peak RSS should not grow with the partitions (the test
`a_million_partitions_from_a_file_take_no_more_memory_than_a_hundred_thousand` holds it to 10 %)."""
import os, shutil, statistics, subprocess, sys, time

from harness import scratch, start_mock

BINARY = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "harvest")


def job_file(root, base, count):
    values = os.path.join(root, f"k{count}.txt")
    with open(values, "w") as f:
        f.writelines(f"k{i}\n" for i in range(1, count + 1))
    path = os.path.join(root, f"many{count}.toml")
    with open(path, "w") as f:
        f.write(f'name = "many"\n[request]\nurl = "{base}/offset?tag={{k}}"\n[records]\npath = "$.items[*]"\n'
                '[pagination]\nkind = "offset"\npage_size = 1\nmax_records = 1\n[limits]\nconcurrency = 64\n'
                f'[output]\ncompression = "zstd"\n[partitions]\nk = {{ file = "{values}" }}\n')
    return path


def run(job, out):
    """One run: (partitions/s, peak RSS in MB) of the harvest child alone."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen([BINARY, "run", job, "--output-dir", out, "-q", "--progress", "never"],
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert status == 0, (job, status)
    shutil.rmtree(out, ignore_errors=True)
    return wall, usage.ru_maxrss / 1024


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    root = scratch("harvest-partitions")
    mock, base = start_mock(BINARY, "--records", "100")
    try:
        sizes = (100_000, 1_000_000)
        jobs = {count: job_file(root, base, count) for count in sizes}
        results = {count: [] for count in sizes}
        for _ in range(runs):
            for count in sizes:
                wall, rss = run(jobs[count], os.path.join(root, "out"))
                results[count].append((count / wall, rss))
        print(f"| partitions | partitions/s (median, spread) | peak RSS MB (median, spread) |  ({runs} runs each)")
        print("|---|---|---|")
        for count, rows in results.items():
            rates, peaks = [r for r, _ in rows], [p for _, p in rows]
            print(f"| {count:,} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) "
                  f"| {statistics.median(peaks):.1f} ({min(peaks):.1f}-{max(peaks):.1f}) |")
    finally:
        mock.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
