"""Merge against replace on a table of RECORDS rows: a Delta table loaded once by a merge job
(incremental on updated_at, primary_key id) and once by a replace job, then ROUNDS rounds of:
a share CHANGED of the keys edited in the API (POST /_admin/touch, ids drawn from a seeded
RNG), the merge job's sync (fetches the changed records, merges them by id) and the replace
job's run (fetches every record, replaces every row), the two taking turns going first. Each
run timed with wait4 (wall, user+system CPU, peak RSS of the child alone); bytes written are
the sizes of the files its version added (from its _delta_log entry). After each round the
two tables hold the same rows (checked with the deltalake package when it is installed).

    cargo build --release
    python3 benches/scripts/merge.py [ROUNDS=5] [RECORDS=1000000] [CHANGED=0.01]
"""
import glob, json, os, random, shutil, statistics, subprocess, sys, time, urllib.request

from harness import scratch, start_mock

BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "harvest")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
RECORDS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
CHANGED = float(sys.argv[3]) if len(sys.argv) > 3 else 0.01
mock, url = start_mock(BINARY, "--records", str(RECORDS))
base = scratch("merge-bench")
out = os.path.join(base, "out")
shutil.rmtree(out, ignore_errors=True)  # both tables loaded from this mock's records


def job(name, mode):
    path = os.path.join(base, f"{name}.toml")
    extra = {
        "merge": '[incremental]\nfield = "$.updated_at"\nparam = "updated_since"\nstart = "2023-01-01T00:00:00Z"\n'
                 '[output]\nformat = "delta"\nmode = "merge"\nprimary_key = ["id"]\n',
        "replace": '[output]\nformat = "delta"\nmode = "replace"\n',
    }[mode]
    open(path, "w").write(f'name = "{name}"\n[request]\nurl = "{url}/offset"\n[records]\npath = "$.items[*]"\n'
                          f'[pagination]\nkind = "offset"\ntotal = "$.total"\npage_size = 1000\n'
                          f'[limits]\nconcurrency = 8\n{extra}rows_per_file = 250000\n')
    return path


def written(name):
    """Bytes of the files the table's newest version added."""
    log = sorted(glob.glob(os.path.join(out, name, "_delta_log", "*.json")))[-1]
    actions = [json.loads(line) for line in open(log)]
    return sum(a["add"]["size"] for a in actions if "add" in a)


def once(name, mode):
    """One run: (wall seconds, CPU seconds, peak RSS in MB, bytes the version wrote)."""
    started = time.perf_counter()
    child = subprocess.Popen([BINARY, "run", job(name, mode), "--output-dir", out, "-q", "--progress", "never"],
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert status == 0, (name, status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, written(name)


def same_rows():
    """Whether the two tables hold the same rows, read by the deltalake package in a process of
    its own (a child forked from a Python that loaded it would start with its memory, and the
    runs' peak RSS would count it)."""
    script = ("import deltalake, os, sys\n"
              "rows = [deltalake.DeltaTable(p).to_pyarrow_table(columns=['id', 'updated_at']).sort_by('id')"
              " for p in sys.argv[1:]]\n"
              "print(rows[0].equals(rows[1]), flush=True)\nos._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script] + [os.path.join(out, n) for n in ("merged", "replaced")],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


load = {"merge": once("merged", "merge"), "replace": once("replaced", "replace")}
print(f"load of {RECORDS:,} rows: merge {load['merge'][0]:.1f} s ({load['merge'][2]:.0f} MB), "
      f"replace {load['replace'][0]:.1f} s ({load['replace'][2]:.0f} MB)", flush=True)
rng = random.Random(7)
res = {"merge": [], "replace": []}
for i in range(ROUNDS):
    ids = rng.sample(range(1, RECORDS + 1), int(RECORDS * CHANGED))
    for at in range(0, len(ids), 2000):  # a URL holds about 64 KiB
        chunk = ",".join(map(str, ids[at:at + 2000]))
        urllib.request.urlopen(urllib.request.Request(f"{url}/_admin/touch?ids={chunk}", method="POST"))
    order = ["merge", "replace"] if i % 2 == 0 else ["replace", "merge"]
    for mode in order:
        res[mode].append(once("merged" if mode == "merge" else "replaced", mode))
    print(f"round {i + 1}: merge {res['merge'][-1][0]:.2f} s, replace {res['replace'][-1][0]:.2f} s, "
          f"same rows: {same_rows()}", flush=True)
mock.kill()
for mode in ("merge", "replace"):
    walls = [w for w, _, _, _ in res[mode]]; cpus = [c for _, c, _, _ in res[mode]]
    rss = [m for _, _, m, _ in res[mode]]; wrote = [b for _, _, _, b in res[mode]]
    print(f"{mode}: wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f}); "
          f"CPU median {statistics.median(cpus):.2f} s; peak RSS median {statistics.median(rss):.0f} MB; "
          f"written median {statistics.median(wrote) / 1e6:.1f} MB")
ratios = [m[0] / r[0] for m, r in zip(res["merge"], res["replace"])]
print(f"merge/replace wall per round: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
      f"max {max(ratios):.3f})")
