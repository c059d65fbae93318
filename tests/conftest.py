"""Shared fixtures: a private Mosquitto per test (see tests/broker.py)."""

from __future__ import annotations

import faulthandler
import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.broker import MosquittoBroker, Subscriber, TlsFiles, find_mosquitto
from tests.ejabberd_cluster import EjabberdCluster, unusable_reason
from tests.pki import Pki

# The daemon-as-a-child-process fixture (daemon_factory) lives with its harness.
pytest_plugins = ["tests.daemon_harness"]

# pytest-timeout fails a test that overruns by raising in its main thread, but a teardown that then
# waits forever (a thread that never ends, a task that ignores cancellation) is out of its reach, and
# the run would hang until CI's own limit with nothing said. A C-level watchdog, armed for each test a
# grace period past its timeout, writes every thread's stack and ends the run instead. Output captured
# by pytest is lost in that exit, so the stacks go to a file: ./scripts/test prints it.
_HANG_GRACE_S = float(os.environ.get("IOMT_TEST_HANG_GRACE_S", "90"))


class _HangWatchdog:
    def __init__(self) -> None:
        self.report: IO[str] | None = None
        self.armed = False

    def arm(self, item: pytest.Item) -> None:
        marker = item.get_closest_marker("timeout")
        limit = float(marker.args[0] if marker is not None and marker.args else item.config.getini("timeout") or 0)
        path = os.environ.get("IOMT_TEST_HANG_REPORT")
        if limit <= 0 or not path:
            return
        if self.report is None:
            self.report = open(path, "w")  # noqa: SIM115 - open for the whole session, written by C code
        self.report.seek(0)
        self.report.truncate()
        self.report.write(f"{item.nodeid} hung: still running {_HANG_GRACE_S:.0f} s after its {limit:.0f} s "
                          "timeout, or after it failed. The stacks of every thread:\n")
        self.report.flush()
        faulthandler.dump_traceback_later(limit + _HANG_GRACE_S, exit=True, file=self.report)
        self.armed = True

    def rearm_after_failure(self) -> None:
        if self.armed:
            faulthandler.dump_traceback_later(_HANG_GRACE_S, exit=True, file=self.report)

    def disarm(self) -> None:
        if self.armed:
            faulthandler.cancel_dump_traceback_later()
            self.armed = False

    def close(self) -> None:
        if self.report is not None:  # the run ended on its own: nothing to report
            self.report.seek(0)
            self.report.truncate()
            self.report.close()
            self.report = None


_watchdog = _HangWatchdog()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    _watchdog.arm(item)
    try:
        return (yield)
    finally:
        _watchdog.disarm()


@pytest.hookimpl(trylast=True)
def pytest_exception_interact() -> None:
    # pytest's faulthandler plugin cancels any pending dump when a test fails (for pdb's sake); the
    # teardown that follows a failure, a timeout's included, still gets the grace period.
    _watchdog.rearm_after_failure()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _watchdog.close()


def _require_mosquitto() -> str:
    exe = find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto not found (/usr/sbin/mosquitto or on PATH): apt-get install mosquitto")
    return exe


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A started Mosquitto on a free 127.0.0.1 port; killed at teardown whatever the test did."""
    b = MosquittoBroker(tmp_path / "broker", executable=_require_mosquitto())
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A site CA, an unknown CA and a localhost server certificate (tests/pki.py)."""
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_files(pki: Pki) -> TlsFiles:
    """The site CA, the server certificate and a client certificate with CN ``gw-test``."""
    return pki.tls_files("gw-test")


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[MosquittoBroker]:
    """Mosquitto on mqtts:// demanding a client certificate signed by the test CA (mutual TLS)."""
    b = MosquittoBroker(tmp_path / "tls-broker", tls=tls_files, executable=_require_mosquitto())
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
async def subscriber(broker: MosquittoBroker) -> AsyncIterator[Subscriber]:
    """Everything published on ``broker`` (topic ``#``, QoS 1, persistent session)."""
    async with Subscriber("127.0.0.1", broker.port) as sub:
        yield sub


@pytest.fixture(scope="session")
def _ejabberd_session() -> Iterator[EjabberdCluster]:
    reason = unusable_reason()
    if reason is not None:
        pytest.skip(reason)
    # One cluster for the whole run: starting and joining two nodes takes several seconds.
    with EjabberdCluster(nodes=2) as cluster:
        yield cluster


@pytest.fixture
def ejabberd_cluster(_ejabberd_session: EjabberdCluster) -> EjabberdCluster:
    """The session's two-node ejabberd cluster, every node running (a test may have killed one).

    Shared between tests: use a topic prefix and client ids of the test's own.
    """
    _ejabberd_session.heal()
    return _ejabberd_session
