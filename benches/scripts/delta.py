"""Delta append against Parquet: the same job (offset, total, pages of 100, concurrency 8) into
Parquet parts and into a Delta table (append, a fresh table each run: the first commit creates
it), one `harvest mock-api`, the two formats taking turns. Each run timed with wait4 (wall,
user+system CPU, peak RSS of the child alone); its records counted from its manifest. Medians,
spreads, and the delta/parquet ratio per round and of the medians.

    cargo build --release
    python3 benches/scripts/delta.py [ROUNDS=7] [RECORDS=200000]
"""
import glob, json, os, shutil, statistics, subprocess, sys, time

from harness import scratch, start_mock

BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "harvest")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
RECORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
mock, url = start_mock(BINARY, "--records", str(RECORDS))
base = scratch("delta-bench")


def job(fmt):
    path = os.path.join(base, f"{fmt}.toml")
    open(path, "w").write(f'name = "{fmt}"\n[request]\nurl = "{url}/offset"\n[records]\npath = "$.items[*]"\n'
                          f'[pagination]\nkind = "offset"\ntotal = "$.total"\npage_size = 100\n[limits]\nconcurrency = 8\n'
                          f'[output]\nformat = "{fmt}"\nmode = "append"\nrows_per_file = 100000\n')
    return path


def once(fmt):
    """One run of the `fmt` job into a fresh folder: (records/s, CPU seconds, peak RSS in MB)."""
    out = os.path.join(base, f"out-{fmt}")
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen([BINARY, "run", job(fmt), "--output-dir", out, "-q", "--progress", "never"],
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert status == 0, (fmt, status)
    [manifest] = glob.glob(os.path.join(out, fmt, "_harvest", "runs", "*.json"))
    assert json.load(open(manifest))["records"] == RECORDS
    if fmt == "delta":
        assert os.path.exists(os.path.join(out, fmt, "_delta_log", "00000000000000000000.json"))
    shutil.rmtree(out, ignore_errors=True)
    return RECORDS / wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


res = {"parquet": [], "delta": []}
once("parquet"); once("delta")  # warm up
for i in range(ROUNDS):
    order = ["parquet", "delta"] if i % 2 == 0 else ["delta", "parquet"]
    for fmt in order:
        res[fmt].append(once(fmt))
mock.kill()
for fmt in ("parquet", "delta"):
    rates = [r for r, _, _ in res[fmt]]; cpus = [c for _, c, _ in res[fmt]]; rss = [m for _, _, m in res[fmt]]
    print(f"{fmt}: records/s median {statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f}); "
          f"CPU median {statistics.median(cpus):.3f} s; peak RSS median {statistics.median(rss):.1f} MB "
          f"(max {max(rss):.1f})")
ratios = [d[0] / p[0] for d, p in zip(res["delta"], res["parquet"])]
print(f"delta/parquet records/s per round: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
      f"max {max(ratios):.3f}); rounds {ROUNDS}; records {RECORDS:,}")
