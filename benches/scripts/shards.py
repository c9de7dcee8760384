"""A run as 1, 2 and 4 shards on this machine: each shard's records/s and the whole run's.

    cargo build --release && python3 benches/scripts/shards.py [runs] [records]

The mock serves `records` records with 5 ms of latency a response; the job is one large
partition with a total (dealt out by page among the shards) and 8 partitions (dealt out by
key), at the job's limits of 16 requests in flight and no rate limit. The shards of a run start
together and share those limits, as they would on N machines against one API: the total should
stay what one process gets, less what sharding costs. Each shard count runs `runs` times, taking
turns; medians and spread are printed."""
import os, shutil, statistics, subprocess, sys, time

from harness import scratch, start_mock

BINARY = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "harvest")


def job_file(root, base, name, partitions):
    text = (f'name = "{name}"\n[request]\nurl = "{base}/t/{{tenant}}/offset"\n[records]\npath = "$.items[*]"\n'
            '[pagination]\nkind = "offset"\npage_size = 500\ntotal = "$.total"\n[limits]\nconcurrency = 16\n'
            f'[partitions]\ntenant = [{", ".join(f"{chr(34)}t{i}{chr(34)}" for i in range(partitions))}]\n')
    path = os.path.join(root, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_shards(job, out, count, run_id):
    """Every shard of a run side by side: (wall seconds of the run, each shard's wall seconds)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    children = [subprocess.Popen([BINARY, "run", job, "--output-dir", out, "--shard", f"{i}/{count}",
                                  "--run-id", run_id, "-q", "--progress", "never"], stdout=subprocess.DEVNULL)
                for i in range(count)]
    walls = []
    for child in children:
        child.wait()
        assert child.returncode == 0, child.returncode
        walls.append(time.perf_counter() - started)
    return time.perf_counter() - started, walls


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    root = scratch("harvest-shards")
    mock, base = start_mock(BINARY, "--records", str(records), "--latency", "5ms")
    try:
        for name, partitions in (("large", 1), ("many", 8)):
            job = job_file(root, base, name, partitions)
            total = records * partitions
            results = {count: [] for count in (1, 2, 4)}
            for turn in range(runs):
                for count in results:
                    wall, walls = run_shards(job, os.path.join(root, "out"), count, f"{name}-{count}-{turn}")
                    results[count].append((total / wall, [total / count / w for w in walls]))
            print(f"{name}: {partitions} partition(s) x {records:,} records, {runs} runs each (median, spread)")
            for count, rows in results.items():
                totals = [t for t, _ in rows]
                each = [statistics.median(per) for _, per in rows]
                print(f"  {count} shard(s): whole run {statistics.median(totals):,.0f} records/s "
                      f"({min(totals):,.0f}-{max(totals):,.0f}); each shard about {statistics.median(each):,.0f}/s")
    finally:
        mock.kill()
        shutil.rmtree(root, ignore_errors=True)


main()
