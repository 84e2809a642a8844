"""Shared test set-up: quiet TensorFlow; an optional busy core (`REFSEG_TEST_BUSY_CORES`).

`REFSEG_TEST_BUSY_CORES=N` (`.ci/run` sets 1) starts N busy-loop processes when the session
starts and stops them when it ends, so the suite runs as on a loaded machine: oneDNN then
splits work differently and float results change in their last bits, which a test comparing
two forward passes bit for bit does not survive (issue 21). Each loop also ends on its own
after `REFSEG_TEST_BUSY_SECONDS` (default 3600) and when pytest exits (atexit), so none
outlives a crashed run.
"""

import atexit
import gc
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BUSY_CORES_VARIABLE = "REFSEG_TEST_BUSY_CORES"
BUSY_SECONDS_VARIABLE = "REFSEG_TEST_BUSY_SECONDS"
# The parent's pid is checked so that a loop whose pytest was killed (-9) stops too.
_BUSY_LOOP = (
    "import os, sys, time\n"
    "parent, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])\n"
    "count = 0\n"
    "while time.monotonic() < end:\n"
    "    count += 1\n"
    "    if count % 1000000 == 0 and os.getppid() != parent:\n"
    "        break\n"
)
_busy = []


def _busy_settings():
    raw = os.environ.get(BUSY_CORES_VARIABLE, "0").strip() or "0"
    seconds = os.environ.get(BUSY_SECONDS_VARIABLE, "3600").strip() or "3600"
    try:
        cores, seconds = int(raw), float(seconds)
    except ValueError:
        raise ValueError(
            f"{BUSY_CORES_VARIABLE} must be an integer and {BUSY_SECONDS_VARIABLE} a number; "
            f"received {raw!r} and {seconds!r}."
        ) from None
    if cores < 0 or seconds <= 0:
        raise ValueError(
            f"{BUSY_CORES_VARIABLE} must be >= 0 and {BUSY_SECONDS_VARIABLE} > 0; "
            f"received {cores} and {seconds}."
        )
    return cores, seconds


def start_busy_loops(cores, seconds):
    """Starts `cores` busy-loop processes (each ends after `seconds` or with this process)."""
    for _ in range(cores):
        _busy.append(subprocess.Popen(
            [sys.executable, "-c", _BUSY_LOOP, str(os.getpid()), str(seconds)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
    return list(_busy)


def stop_busy_loops():
    """Stops the busy loops this process started."""
    while _busy:
        process = _busy.pop()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


atexit.register(stop_busy_loops)


def pytest_sessionstart(session):
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller owns the loops
        return
    cores, seconds = _busy_settings()
    if cores:
        start_busy_loops(cores, seconds)
        session.config._refseg_busy_cores = cores


def pytest_report_header(config):
    cores, _ = _busy_settings()
    if cores:
        return f"{BUSY_CORES_VARIABLE}={cores}: {cores} busy-loop process(es) run beside the tests"
    return None


def pytest_sessionfinish(session, exitstatus):
    stop_busy_loops()


# Python's cyclic garbage collector scans every tracked object of a generation it collects; a
# worker holds about 400k objects once TensorFlow, Keras and the test modules are imported, all
# of them alive to the end. Frozen, they are never scanned again: a worker's collections took
# 13-15 s of a 250 s run instead of 17-19 s (issue 21: suite time). Thresholds raised as well
# (20000, 20, 20) cost more in middle-generation collections than they saved; left as they are.
def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()
