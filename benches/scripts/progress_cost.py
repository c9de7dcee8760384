"""What live progress costs: the pipeline bench's harvest (NDJSON, offset with a total, pages of
100, concurrency 8; four partitions so that several partition lines are drawn) with its stderr
on a pseudo-terminal, once drawing bars (`--progress auto` on a terminal) and once with
`--progress never`, taking turns against one `harvest mock-api`; each run timed with wait4
(wall, user+system CPU of harvest alone) and its records counted. Prints medians, spreads and
the ratios of bars to never.

    cargo build --release
    python3 benches/scripts/progress_cost.py [ROUNDS=7] [RECORDS=100000]
"""
import fcntl, os, pty, statistics, struct, sys, termios, threading

from harness import scratch, start_mock, timed_run

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "harvest")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
RECORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
TENANTS = ["a", "b", "c", "d"]

mock, base = start_mock(BIN, "--records", str(RECORDS))
out_root = scratch("progress-cost")
job = os.path.join(out_root, "job.toml")
open(job, "w").write(f'name = "cost"\n[request]\nurl = "{base}/t/{{tenant}}/offset"\n[records]\npath = "$.items[*]"\n'
                     f'[pagination]\nkind = "offset"\ntotal = "$.total"\npage_size = 100\n'
                     f'[partitions]\ntenant = {TENANTS!r}\n'.replace("'", '"') +
                     '[limits]\nconcurrency = 8\n[output]\nrows_per_file = 1000000\n')

# A terminal of 50 x 160 whose output is read and thrown away, as a terminal would show it.
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
drawn = [0]
def drain():
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return
        if not chunk:
            return
        drawn[0] += len(chunk)
threading.Thread(target=drain, daemon=True).start()
env = dict(os.environ, TERM="xterm-256color")
MODES = {"bars": ("--progress", "auto"), "never": ("--progress", "never")}

def once(mode):
    return timed_run(BIN, job, os.path.join(out_root, "out"), "cost", RECORDS * len(TENANTS), env=env,
                     args=MODES[mode], stderr=slave)

results = {mode: [] for mode in MODES}
for mode in MODES:
    once(mode)  # warm up
before = drawn[0]
for i in range(ROUNDS):
    order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
    for mode in order:
        results[mode].append(once(mode))
mock.kill()
print(f"{drawn[0] - before:,} bytes drawn to the terminal over {ROUNDS} rounds")
for mode, runs in results.items():
    rates = [r for r, _ in runs]; cpus = [c for _, c in runs]
    print(f"{mode}: {statistics.median(rates):,.0f} records/s ({min(rates):,.0f}-{max(rates):,.0f}); "
          f"CPU {statistics.median(cpus):.3f} s ({min(cpus):.3f}-{max(cpus):.3f})")
rate_ratio = statistics.median([r for r, _ in results["bars"]]) / statistics.median([r for r, _ in results["never"]])
cpu_ratio = statistics.median([c for _, c in results["bars"]]) / statistics.median([c for _, c in results["never"]])
print(f"bars against never: records/s ratio of medians {rate_ratio:.3f}, CPU ratio of medians {cpu_ratio:.3f}")
