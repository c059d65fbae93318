"""Shared fixtures: a private Mosquitto per test (see tests/broker.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.broker import MosquittoBroker, Subscriber, TlsFiles, find_mosquitto
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
