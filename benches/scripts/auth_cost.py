"""What auth costs harvest: the same NDJSON harvest at concurrency 8 (offset, total, pages of
100) against one `harvest mock-api`, without auth, with a bearer token and with OAuth2 client
credentials, the three taking turns; each run timed with wait4 (wall, user+system CPU of
harvest alone) and its records counted. Prints medians, spreads and the CPU per record of
each kind against none.

    cargo build --release
    python3 benches/scripts/auth_cost.py [ROUNDS=7] [RECORDS=200000]
"""
import os, statistics, sys

from harness import scratch, start_mock, timed_run

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "harvest")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 7
RECORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
SECRET = "bench-secret"

mock, base = start_mock(BIN, "--records", str(RECORDS), "--secret", SECRET)
out_root = scratch("auth-cost")
KINDS = {
    "none": ("/offset", ""),
    "bearer": ("/auth/bearer/offset", '[auth]\nkind = "bearer"\ntoken = "${BENCH_SECRET}"\n'),
    "client_credentials": ("/auth/oauth/offset", '[auth]\nkind = "oauth2_client_credentials"\n'
                           f'token_url = "{base}/oauth/token"\nclient_id = "harvest-client"\n'
                           'client_secret = "${BENCH_SECRET}"\n'),
}
jobs = {}
for kind, (path, auth) in KINDS.items():
    jobs[kind] = os.path.join(out_root, f"{kind}.toml")
    open(jobs[kind], "w").write(f'name = "cost"\n[request]\nurl = "{base}{path}"\n[records]\npath = "$.items[*]"\n'
                                f'[pagination]\nkind = "offset"\ntotal = "$.total"\npage_size = 100\n{auth}'
                                f'[limits]\nconcurrency = 8\n[output]\nrows_per_file = 100000\n')

def once(kind):
    rate, cpu = timed_run(BIN, jobs[kind], os.path.join(out_root, f"out-{kind}"), "cost", RECORDS,
                          env=dict(os.environ, BENCH_SECRET=SECRET))
    return rate, cpu / RECORDS * 1e6


results = {kind: [] for kind in KINDS}
for kind in KINDS:
    once(kind)  # warm up
for i in range(ROUNDS):
    order = list(KINDS) if i % 2 == 0 else list(reversed(KINDS))
    for kind in order:
        results[kind].append(once(kind))
mock.kill()
none_cpu = [c for _, c in results["none"]]
for kind, runs in results.items():
    rates = [r for r, _ in runs]; cpus = [c for _, c in runs]
    ratios = [c / n for (_, c), n in zip(runs, none_cpu)]
    print(f"{kind}: {statistics.median(rates):,.0f} records/s ({min(rates):,.0f}-{max(rates):,.0f}); "
          f"CPU {statistics.median(cpus):.3f} us/record ({min(cpus):.3f}-{max(cpus):.3f}); "
          f"against none, per round: median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}); "
          f"ratio of medians {statistics.median(cpus) / statistics.median(none_cpu):.3f}")
