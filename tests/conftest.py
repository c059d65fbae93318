"""Shared fixtures: a private Mosquitto per test (see tests/broker.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.broker import MosquittoBroker, Subscriber, TlsFiles, find_mosquitto
from tests.ejabberd_cluster import EjabberdCluster, unusable_reason
from tests.pki import Pki

# The daemon-as-a-child-process fixture (daemon_factory) lives with its harness.
pytest_plugins = ["tests.daemon_harness"]


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
