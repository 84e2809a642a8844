"""The CI guard of issue 21: `.ci/run` runs the README command twice, the second time with a
busy core (`tests/conftest.py`, `REFSEG_TEST_BUSY_CORES`)."""

import os
import re
import time

import pytest

from tests import conftest
from tests.helpers import REPO_ROOT


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_busy_loop_burns_a_core_and_stops():
    (process,) = conftest.start_busy_loops(1, 60)
    try:
        deadline = time.monotonic() + 30  # a loaded machine gives it a share of a core
        while _cpu_seconds(process.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None
        assert _cpu_seconds(process.pid) >= 0.5  # it computes, it does not sleep
    finally:
        conftest.stop_busy_loops()
    assert process.poll() is not None


def test_busy_loop_ends_on_its_own():
    (process,) = conftest.start_busy_loops(1, 0.5)
    try:
        process.wait(timeout=30)
    finally:
        conftest.stop_busy_loops()
    assert process.returncode == 0


def test_bad_busy_settings_name_the_variable(monkeypatch):
    monkeypatch.setenv(conftest.BUSY_CORES_VARIABLE, "two")
    with pytest.raises(ValueError, match=conftest.BUSY_CORES_VARIABLE):
        conftest._busy_settings()


def test_ci_runs_the_readme_command_twice_and_fails_if_either_fails():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    command = re.search(r'pip install -e "\.\[test\]" && (python -m pytest[^\n]*)', readme).group(1)
    with open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8") as f:
        script = f.read()
    assert f"README_TESTS=({command})" in script
    assert script.count('run_suite "run') == 2 and "REFSEG_TEST_BUSY_CORES=1 run_suite" in script
    assert "--durations=20" in script and "-p no:randomly" in script
    assert "exit 1" in script and "5)" in script
