"""Hardware identifiers (BLE addresses, serial by-id names) never leave a driver in clear.

The end-to-end check (the real daemon with BLE devices: nothing upstream or in its journal holds an
address) is in tests/ble/test_daemon_ble.py.
"""

from __future__ import annotations

import io
import json
import logging
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from drivers.serial.driver import SerialDriver
from drivers.serial.settings import Nonin8Settings
from gateway import device_tags, logs
from gateway.clock import SyncPolicy, SystemClock
from gateway.device_tags import KEY_FILE, DeviceTagger
from gateway.driver_api import DeviceContext, DriverConnectFailed, DriverDisconnected, DriverError
from gateway.supervisor import reason_code

ADDR = "C4:7C:8D:6A:12:3F"
BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"


def test_tags_are_stable_per_hub_and_differ_between_hubs(tmp_path: Path) -> None:
    hub = DeviceTagger.load(tmp_path / "a")
    again = DeviceTagger.load(tmp_path / "a")
    other = DeviceTagger.load(tmp_path / "b")
    tag = hub.tag(ADDR)
    assert tag == again.tag(ADDR) == hub.tag(ADDR.lower()) == hub.tag(ADDR.replace(":", "_"))
    assert tag.startswith("ble-") and len(tag) == 4 + 12 and ADDR not in tag
    assert other.tag(ADDR) != tag
    assert hub.tag(BY_ID).startswith("serial-") and hub.tag(BY_ID) != other.tag(BY_ID)
    key = tmp_path / "a" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32


def test_a_damaged_key_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_bytes(b"short")
    with pytest.raises(ValueError, match="expected 32 bytes"):
        DeviceTagger.load(tmp_path)
    assert (tmp_path / KEY_FILE).read_bytes() == b"short"
    with pytest.raises(FileNotFoundError):
        DeviceTagger.load(tmp_path / "none", create=False)
    assert not (tmp_path / "none").exists()


def test_scrub_finds_every_spelling() -> None:
    t = DeviceTagger.ephemeral()
    text = (
        f"Device with address {ADDR} was not found; path /org/bluez/hci0/dev_{ADDR.replace(':', '_')}; "
        f"lower {ADDR.lower()}; port {BY_ID}: no such device"
    )
    out = t.scrub_text(text)
    assert ADDR not in out and ADDR.lower() not in out and "12_3F" not in out and "A50285BI" not in out
    assert out.count(t.tag(ADDR)) == 3 and t.tag(BY_ID) in out
    # Times, UUIDs, hex dumps and IPv6 are left alone.
    keep = "12:30:45 0000180d-0000-1000-8000-00805f9b34fb data=0a1b2c3d4e5f fe80::1 aa:bb:cc"
    assert t.scrub_text(keep) == keep
    assert t.scrub(f"lost {ADDR.lower()} and dev_{ADDR.replace(':', '_')}", ADDR) == (
        f"lost {t.tag(ADDR)} and dev_{t.tag(ADDR)}"
    )


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def test_console_lines_and_their_tracebacks_are_scrubbed_too(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure("info", "console", stream)
    tagger = DeviceTagger.load(tmp_path)
    device_tags.install(tagger)
    try:
        structlog.get_logger("t").warning("device_retry", error=f"cannot connect to {ADDR}")
        try:
            raise DriverDisconnected(f"{ADDR.lower()}: link lost on {BY_ID}")
        except DriverDisconnected:
            structlog.get_logger("t").exception("crash")
    finally:
        device_tags.install(DeviceTagger.ephemeral())
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text and "DriverDisconnected" in text
    for spelled in (ADDR, ADDR.lower(), "A50285BI"):
        assert spelled not in text
    assert text.count(tagger.tag(ADDR)) == 2 and tagger.tag(BY_ID) in text


def test_every_log_line_is_scrubbed(json_logs: io.StringIO, tmp_path: Path) -> None:
    tagger = DeviceTagger.load(tmp_path)
    device_tags.install(tagger)
    try:
        structlog.get_logger("t").warning("device_retry", error=f"cannot connect to {ADDR}", extra=[BY_ID])
        logging.getLogger("bleak.backends.bluezdbus.manager").warning("dev_%s vanished", ADDR.replace(":", "_"))
        try:
            raise DriverDisconnected(f"{ADDR.lower()}: link lost")
        except DriverDisconnected:
            structlog.get_logger("t").exception("crash")
    finally:
        device_tags.install(DeviceTagger.ephemeral())
    text = json_logs.getvalue()
    lines = [json.loads(line[line.index("{") :]) for line in text.splitlines()]
    assert [e["event"] for e in lines][:1] == ["device_retry"] and len(lines) == 3
    for spelled in (ADDR, ADDR.lower(), ADDR.replace(":", "_"), "A50285BI"):
        assert spelled not in text
    assert lines[0]["error"] == f"cannot connect to {tagger.tag(ADDR)}" and lines[0]["extra"] == [tagger.tag(BY_ID)]
    assert tagger.tag(ADDR) in lines[1]["event"] and tagger.tag(ADDR) in lines[2]["exception"]


def test_status_detail_is_a_reason_code_never_the_message() -> None:
    e = DriverDisconnected(f"{ADDR}: link lost during read: org.bluez.Error.Failed", reason="link_lost")
    assert reason_code(e) == "link_lost"
    assert reason_code(DriverConnectFailed(f"cannot connect to {ADDR}")) == "connect_failed"
    assert reason_code(DriverError("x")) == "driver_error"
    assert reason_code(ValueError(ADDR)) == "driver_crashed"


async def test_serial_by_id_name_is_tagged_in_driver_errors(tmp_path: Path) -> None:
    tagger = DeviceTagger.load(tmp_path)
    ctx = DeviceContext("ox-1", "p-1", SystemClock(SyncPolicy.ASSUME_SYNCED), tmp_path, tag=tagger.tag)
    driver = SerialDriver(ctx, Nonin8Settings(id="ox-1", driver="nonin8", port=BY_ID))
    with pytest.raises(DriverConnectFailed) as info:
        await driver.connect()
    assert info.value.reason == "port_absent"
    assert "A50285BI" not in str(info.value) and tagger.tag(BY_ID) in str(info.value)


def test_device_tag_command_lists_the_configured_devices(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "gateway: {id: hub-1}\nupstream: {url: 'mqtt://127.0.0.1'}\n"
        f"storage: {{path: '{tmp_path / 'state'}'}}\n"
        "patients:\n  - id: p1\n    devices:\n"
        f"      - {{id: hr-1, driver: ble-heart-rate, address: '{ADDR}'}}\n"
        f"      - {{id: ox-1, driver: nonin8, port: '{BY_ID}'}}\n"
    )
    cmd = [sys.executable, "-m", "gateway.cli", "device-tag", "-c", str(cfg)]
    before = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert before.returncode == 1 and "makes it when it first starts" in before.stderr
    assert before.stderr.startswith("iomt-gateway device-tag: ")
    assert not (tmp_path / "state").exists()  # a tool must not make the service's key
    tagger = DeviceTagger.load(tmp_path / "state")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [
        f"{tagger.tag(ADDR)}  hr-1 (p1, ble-heart-rate): {ADDR}",
        f"{tagger.tag(BY_ID)}  ox-1 (p1, nonin8): {BY_ID}",
    ]
