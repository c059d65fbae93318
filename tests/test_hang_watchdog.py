"""The suite's hang watchdog (tests/conftest.py): a test whose teardown never ends, after its timeout
has failed it, ends the run with every thread's stack in the report file instead of hanging CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HANGING = '''
import threading
import time

import pytest


@pytest.mark.timeout(1)
def test_teardown_waits_forever(request):
    never = threading.Event()
    request.addfinalizer(never.wait)
    time.sleep(30)
'''


def test_a_teardown_that_never_ends_is_reported_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGING)
    report = tmp_path / "hang.txt"
    env = {**os.environ, "IOMT_TEST_HANG_REPORT": str(report), "IOMT_TEST_HANG_GRACE_S": "2"}
    # Our conftest as a plugin, the hanging test from its own directory.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_hangs.py")],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    text = report.read_text()
    assert "test_hangs.py::test_teardown_waits_forever hung" in text
    assert "Timeout (0:00:02)!" in text
    assert "in wait" in text and "teardown_exact" in text


def test_a_run_that_ends_leaves_the_report_empty(tmp_path: Path) -> None:
    (tmp_path / "test_fine.py").write_text("import pytest\n\n\n@pytest.mark.timeout(60)\ndef test_fine():\n    pass\n")
    report = tmp_path / "hang.txt"
    env = {**os.environ, "IOMT_TEST_HANG_REPORT": str(report)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_fine.py")],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert report.read_text() == ""
