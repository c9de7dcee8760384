"""What the A/B scripts share: a `harvest mock-api` child on a free port, and one harvest run
timed with wait4 (wall, user+system CPU of the child alone) with its records counted."""
import glob, os, shutil, socket, subprocess, time


def start_mock(binary, *args):
    """Start `binary mock-api` on a free loopback port; returns (process, base URL) once it answers."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    mock = subprocess.Popen([binary, "mock-api", "--addr", f"127.0.0.1:{port}", *args], stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return mock, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)


def scratch(name):
    """A folder for outputs, in memory when the machine has /dev/shm."""
    root = f"/dev/shm/{name}" if os.path.isdir("/dev/shm") else f"/tmp/{name}"
    os.makedirs(root, exist_ok=True)
    return root


def timed_run(binary, job, out, job_name, records, env=None, args=("-q", "--progress", "never"), stderr=None):
    """`binary run job` into `out`: (records/s, CPU seconds); checks every record was written."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen([binary, "run", job, "--output-dir", out, *args],
                             stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    assert status == 0, (job, status)
    written = sum(sum(1 for _ in open(f, "rb")) for f in glob.glob(os.path.join(out, job_name, "part-*.ndjson")))
    assert written == records, (job, written)
    shutil.rmtree(out, ignore_errors=True)
    return records / wall, usage.ru_utime + usage.ru_stime
