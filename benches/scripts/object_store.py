"""What object storage costs against the local filesystem, for the same job, in one run.

    cargo build --release && python3 benches/scripts/object_store.py [runs] [records]

`harvest mock-api` serves `records` records (no latency); the job (offset with a total, pages
of 500, concurrency 8, NDJSON, parts of 100,000 rows, checkpoints every 60 s) runs into a tmpfs
folder and into a local S3 server (moto's, from PyPI: `pip install "moto[server]"`), taking
turns `runs` times each. Medians and spread of records/s and of harvest's CPU seconds are
printed, and the ratio of medians. moto is a Python server: what it costs to take the parts is
part of the figure, more than a real store would add."""
import os, shutil, socket, statistics, subprocess, sys, time, urllib.request

from harness import scratch, start_mock, timed_run

BINARY = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "harvest")
BUCKET = "harvest-bench"


def start_moto():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"))
            return moto, endpoint
        except OSError:
            time.sleep(0.1)


def s3_run(job, records, env):
    """`harvest run` into the store: (records/s, CPU seconds)."""
    started = time.perf_counter()
    child = subprocess.Popen([BINARY, "run", job, "-q", "--progress", "never"], stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    assert status == 0, status
    return records / (time.perf_counter() - started), usage.ru_utime + usage.ru_stime


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    root = scratch("harvest-object-store")
    mock, base = start_mock(BINARY, "--records", str(records))
    moto, endpoint = start_moto()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_REGION="us-east-1")
    common = (f'[request]\nurl = "{base}/offset"\n[records]\npath = "$.items[*]"\n[pagination]\nkind = "offset"\n'
              'page_size = 500\ntotal = "$.total"\n[limits]\nconcurrency = 8\n')
    local_job, s3_job = os.path.join(root, "local.toml"), os.path.join(root, "s3.toml")
    with open(local_job, "w") as f:
        f.write(f'name = "bench"\n{common}[output]\nrows_per_file = 100000\n')
    with open(s3_job, "w") as f:
        f.write(f'name = "bench"\n{common}[output]\nrows_per_file = 100000\ndir = "s3://{BUCKET}/runs"\n'
                f'endpoint = "{endpoint}"\nallow_http = true\n')
    try:
        local, s3 = [], []
        for _ in range(runs):
            local.append(timed_run(BINARY, local_job, os.path.join(root, "out"), "bench", records))
            s3.append(s3_run(s3_job, records, env))
        print(f"{records:,} records, NDJSON, {runs} runs each (median, spread)")
        for name, rows in (("local filesystem (tmpfs)", local), ("object storage (moto S3)", s3)):
            rates, cpu = [r for r, _ in rows], [c for _, c in rows]
            print(f"  {name}: {statistics.median(rates):,.0f} records/s ({min(rates):,.0f}-{max(rates):,.0f}), "
                  f"CPU {statistics.median(cpu):.3f} s ({min(cpu):.3f}-{max(cpu):.3f})")
        ratio = statistics.median([r for r, _ in s3]) / statistics.median([r for r, _ in local])
        cpu = statistics.median([c for _, c in s3]) / statistics.median([c for _, c in local])
        print(f"  object storage / local, ratio of medians: {ratio:.3f} records/s, {cpu:.3f} CPU")
    finally:
        mock.kill(); moto.kill()
        shutil.rmtree(root, ignore_errors=True)


main()
