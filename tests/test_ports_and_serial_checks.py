"""``iomt-gateway ports`` and the doctor's serial-port check, on real pseudo-terminals and by-id links."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo

from drivers.serial.checks import check
from drivers.serial.ports_cli import by_id_names, rows
from drivers.serial.settings import MasimoSettings, Nonin2Settings
from gateway.checks import Check

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pty_port(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real character device (the secondary side of a pty) and a by-id style link to it."""
    primary, secondary = os.openpty()
    device = os.ttyname(secondary)
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    link = by_id / "usb-FTDI_FT232R_USB_UART_A10KXYZ-if00-port0"
    link.symlink_to(device)
    try:
        yield device, link
    finally:
        os.close(primary)
        os.close(secondary)


def _port(device: str, vid: int | None = None, pid: int | None = None, product: str | None = None) -> ListPortInfo:
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.product, p.manufacturer = vid, pid, product, "FTDI" if vid else None
    return p


def test_rows_give_the_by_id_name_the_usb_chip_and_the_configured_device(
    tmp_path: Path, pty_port: tuple[str, Path]
) -> None:
    device, link = pty_port
    by_id = by_id_names(link.parent)
    assert by_id == {os.path.realpath(device): str(link)}
    other = tmp_path / "ttyS0"
    other.touch()
    got = rows(
        [_port(device, 0x0403, 0x6001, "FT232R USB UART"), _port(str(other))],
        by_id,
        {os.path.realpath(device): "ox-1 (nonin2)"},
    )
    usb, builtin = sorted(got, key=lambda r: r.usb is None)
    assert usb.device == device and usb.by_id == str(link)
    assert usb.usb == "0403:6001" and usb.chip == "FTDI FT232R USB-serial"
    assert usb.description == "FTDI FT232R USB UART"
    assert usb.configured == "ox-1 (nonin2)" and usb.hint == "in the config"
    assert builtin.by_id is None and builtin.chip is None
    assert builtin.hint == "built-in or virtual port: not a plugged-in device"
    (unconfigured,) = rows([_port(device, 0x1A86, 0x7523)], by_id, {})
    assert unconfigured.chip == "WCH CH340 USB-serial"
    assert unconfigured.hint == f"iomt-gateway serial-probe {link}"  # the stable name, not ttyUSB0


def test_ports_command_runs_on_this_machine() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "ports", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr


def test_serial_check_resolves_by_id_and_names_missing_ports(tmp_path: Path, pty_port: tuple[str, Path]) -> None:
    device, link = pty_port
    plain = tmp_path / "not-a-tty"
    plain.touch()
    devices = [
        Nonin2Settings(id="ox-1", port=str(link)),
        MasimoSettings(id="ox-2", port="/dev/serial/by-id/usb-unplugged-if00-port0"),
        Nonin2Settings(id="ox-3", port=str(plain)),
        Nonin2Settings(id="ox-4", port="socket://10.0.0.7:7000"),
    ]
    got: list[Check] = check(devices)
    assert [(c.ok, c.title) for c in got] == [
        (True, "serial port of ox-1 (nonin2)"),
        (False, "serial port of ox-2 (masimo)"),
        (False, "serial port of ox-3 (nonin2)"),
        (True, "serial port of ox-4 (nonin2)"),
    ]
    assert got[0].detail.startswith(f"{link} -> {os.path.realpath(device)} (group ")
    assert got[1].detail == "/dev/serial/by-id/usb-unplugged-if00-port0 is not there"
    assert "`iomt-gateway ports` lists what is connected" in got[1].fix
    assert got[2].detail == f"{plain} is not a serial device"
    assert got[3].detail == "socket://10.0.0.7:7000 (network port: not probed)"
