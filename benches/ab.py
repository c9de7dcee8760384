"""A/B of two harvest builds: NDJSON at concurrency 8 (offset, total, pages of 100) against
one `harvest mock-api`, the old and the new binary taking turns, each run timed with wait4
(wall, user+system CPU) and its records counted in the output. Medians, spreads, and the
new/old ratio per round and of the medians.

    git worktree add /tmp/old <rev>
    CARGO_TARGET_DIR=/tmp/old-target cargo build --release --manifest-path /tmp/old/Cargo.toml
    cargo build --release
    python3 benches/ab.py /tmp/old-target/release/harvest [ROUNDS=7] [RECORDS=200000]
"""
import os, socket, statistics, subprocess, sys, time, glob, shutil
OLD = sys.argv[1]
NEW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "harvest")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
RECORDS = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
mock = subprocess.Popen([NEW, "mock-api", "--addr", f"127.0.0.1:{port}", "--records", str(RECORDS)], stderr=subprocess.DEVNULL)
while True:
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError:
        time.sleep(0.05)
base = "/dev/shm/ab" if os.path.isdir("/dev/shm") else "/tmp/ab/out"
os.makedirs(base, exist_ok=True)
job = os.path.join(base, "job.toml")
open(job, "w").write(f'name = "ab"\n[request]\nurl = "http://127.0.0.1:{port}/offset"\n[records]\npath = "$.items[*]"\n'
                     f'[pagination]\nkind = "offset"\ntotal = "$.total"\npage_size = 100\n[limits]\nconcurrency = 8\n'
                     f'[output]\nformat = "ndjson"\nrows_per_file = 100000\n')
def once(binary, i):
    out = os.path.join(base, f"out-{'new' if binary == NEW else 'old'}-{i}")
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.Popen([binary, "run", job, "--output-dir", out, "-q", "--progress", "never"], stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    assert status == 0, status
    n = sum(sum(1 for _ in open(f, "rb")) for f in glob.glob(os.path.join(out, "ab", "part-*.ndjson")))
    assert n == RECORDS, n
    shutil.rmtree(out, ignore_errors=True)
    return RECORDS / wall, ru.ru_utime + ru.ru_stime
res = {"old": [], "new": []}
once(NEW, -1); once(OLD, -1)  # warm up
for i in range(ROUNDS):
    order = [("old", OLD), ("new", NEW)] if i % 2 == 0 else [("new", NEW), ("old", OLD)]
    for name, b in order:
        res[name].append(once(b, i))
mock.kill()
for name in ("old", "new"):
    rates = [r for r, _ in res[name]]; cpus = [c for _, c in res[name]]
    print(f"{name}: records/s median {statistics.median(rates):,.0f} (min {min(rates):,.0f}, max {max(rates):,.0f}); "
          f"CPU median {statistics.median(cpus):.3f} s (min {min(cpus):.3f}, max {max(cpus):.3f})")
ratios = [n[0] / o[0] for n, o in zip(res["new"], res["old"])]
print(f"new/old records/s per round: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
      f"rounds {ROUNDS}; ratio of medians {statistics.median([r for r,_ in res['new']]) / statistics.median([r for r,_ in res['old']]):.3f}")
