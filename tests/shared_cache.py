"""Directories built once per pytest run and shared by every pytest-xdist worker process.

A module-scoped fixture is built once per process: with `-n 2 --dist loadfile` two test files
in two workers that share a fixture (the tiny RRN export of tests/test_export.py, used by
tests/test_bad_inputs.py too) built it twice, about half a minute each on a loaded machine
(issue 21: suite time). `shared_directory` builds it once under the run's common base
temporary directory, behind an exclusive `fcntl` lock: the other worker waits (without using
the CPU the builder needs) and then reads the finished directory. A build that failed leaves
no `.complete` marker, so the next caller builds again and sees the failure itself.
"""

import fcntl
import os
import shutil

COMPLETE = ".complete"


def run_root(tmp_path_factory):
    """The base temporary directory common to every worker of this run (xdist or not)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # .../pytest-N/popen-gwK -> .../pytest-N, shared by the workers
    return root


def shared_directory(tmp_path_factory, name, build):
    """The directory `name` of this run, `build(path)` filling it once for every worker.

    Returns:
        `(path, built)`: its path, and True in the one process that built it.
    """
    root = run_root(tmp_path_factory)
    path = os.path.join(str(root), f"shared-{name}")
    with open(os.path.join(str(root), f"shared-{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.path.exists(os.path.join(path, COMPLETE)):
                return path, False
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            build(path)
            with open(os.path.join(path, COMPLETE), "w"):
                pass
            return path, True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
