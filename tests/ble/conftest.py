"""Fixtures of the BLE tests: the mock BlueZ of ``harness.py`` and a device context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog

from gateway.clock import SyncPolicy, SystemClock
from gateway.driver_api import DeviceContext
from tests.ble.harness import DbusDaemonMissing, MockBluez, running_mock_bluez


@pytest.fixture
async def mock_bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MockBluez]:
    """A private bus with bluezoo on it; this process's bleak talks to it."""
    try:
        async with running_mock_bluez(tmp_path) as mock:
            monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", mock.address)
            yield mock
    except DbusDaemonMissing as e:
        pytest.skip(str(e))


@pytest.fixture
def device_ctx(tmp_path: Path) -> DeviceContext:
    return DeviceContext(
        device_id="dev1",
        patient="p-test",
        clock=SystemClock(policy=SyncPolicy.ASSUME_SYNCED),
        state_dir=tmp_path / "state" / "dev1",
        log=structlog.get_logger(),
    )
