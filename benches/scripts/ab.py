"""A/B of two harvest builds: NDJSON at concurrency 8 (offset, total, pages of 100) against
one `harvest mock-api`, the old and the new binary taking turns, each run timed with wait4
(wall, user+system CPU) and its records counted in the output. Medians, spreads, and the
new/old ratio per round and of the medians.

    git worktree add /tmp/old <rev>
    CARGO_TARGET_DIR=/tmp/old-target cargo build --release --manifest-path /tmp/old/Cargo.toml
    cargo build --release
    python3 benches/scripts/ab.py /tmp/old-target/release/harvest [ROUNDS=7] [RECORDS=200000]
"""
import os, statistics, sys

from harness import scratch, start_mock, timed_run
OLD = sys.argv[1]
NEW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "harvest")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
RECORDS = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
mock, url = start_mock(NEW, "--records", str(RECORDS))
base = scratch("ab")
job = os.path.join(base, "job.toml")
open(job, "w").write(f'name = "ab"\n[request]\nurl = "{url}/offset"\n[records]\npath = "$.items[*]"\n'
                     f'[pagination]\nkind = "offset"\ntotal = "$.total"\npage_size = 100\n[limits]\nconcurrency = 8\n'
                     f'[output]\nformat = "ndjson"\nrows_per_file = 100000\n')


def once(binary, i):
    return timed_run(binary, job, os.path.join(base, f"out-{'new' if binary == NEW else 'old'}-{i}"), "ab", RECORDS)


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
