"""check-config refuses configurations that are valid to the schema but impossible in the world.

Each case: the exact problem line a technician sees and the exit status (2 = config error), through
``check_config_command`` (what ``iomt-gateway check-config`` runs) and, for the alias bomb, through the
real command line so that the exit status and the absence of a traceback are the process's own.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config.commands import check_config_command

ROOT = Path(__file__).resolve().parent.parent

HEAD = """\
gateway:
  id: hub-01
upstream:
  url: mqtts://broker
"""


def _check(tmp_path: Path, text: str) -> tuple[int, str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    rc = check_config_command(path, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def _problem(tmp_path: Path, text: str) -> str:
    """The single problem line, without the file name prefix; asserts exit status 2."""
    rc, out, err = _check(tmp_path, text)
    assert rc == 2 and out == "", (rc, out, err)
    lines = err.splitlines()
    assert lines[0] == f"iomt-gateway check-config: {tmp_path / 'c.yaml'}: 1 problem in the configuration", err
    assert len(lines) == 2, err
    prefix = f"{tmp_path / 'c.yaml'}:"
    assert lines[1].startswith(prefix)
    return lines[1].removeprefix(prefix)


def _replay_patient(pid: str = "p1", dev: str = "d1") -> str:
    return f"  - id: {pid}\n    devices:\n      - {{id: {dev}, driver: replay, vitals: a.jsonl}}\n"


# ----------------------------------------------------------------------------- alarm limits


def test_spo2_limit_of_900_is_outside_the_physiological_range(tmp_path: Path) -> None:
    text = HEAD + "alarms:\n  limits:\n    spo2:\n      low: {raise_at: 900, clear_at: 920}\n"
    text += "patients:\n" + _replay_patient()
    assert _problem(tmp_path, text) == (
        "8: alarms.limits.spo2.low.raise_at: 900 is outside the possible range of spo2 (0–100 %)"
    )


def test_clear_at_outside_the_range_is_named_too(tmp_path: Path) -> None:
    text = HEAD + "alarms:\n  limits:\n    spo2:\n      low:\n        raise_at: 90\n        clear_at: 101\n"
    text += "patients:\n" + _replay_patient()
    assert _problem(tmp_path, text) == (
        "10: alarms.limits.spo2.low.clear_at: 101 is outside the possible range of spo2 (0–100 %)"
    )


def test_per_patient_temperature_in_fahrenheit_is_refused(tmp_path: Path) -> None:
    text = HEAD + "patients:\n" + _replay_patient()
    text += "    alarms:\n      limits:\n        body_temperature:\n          high: {raise_at: 101.3, clear_at: 100}\n"
    assert _problem(tmp_path, text) == (
        "12: patients[0].alarms.limits.body_temperature.high.raise_at: "
        "101.3 is outside the possible range of body_temperature (25–45 °C)"
    )


@pytest.mark.parametrize(
    ("vital", "limit", "expected"),
    [
        ("heart_rate", "high: {raise_at: 350}", "350 is outside the possible range of heart_rate (0–300/min)"),
        ("pulse_rate", "low: {raise_at: -5}", "-5 is outside the possible range of pulse_rate (0–300/min)"),
        ("systolic_bp", "high: {raise_at: 320}", "320 is outside the possible range of systolic_bp (0–300 mmHg)"),
        (
            "respiratory_rate",
            "high: {raise_at: 200}",
            "200 is outside the possible range of respiratory_rate (0–120/min)",
        ),
    ],
)
def test_other_vitals_have_ranges(tmp_path: Path, vital: str, limit: str, expected: str) -> None:
    text = HEAD + f"alarms:\n  limits:\n    {vital}:\n      {limit}\n" + "patients:\n" + _replay_patient()
    direction = limit.split(":", maxsplit=1)[0]
    assert _problem(tmp_path, text) == f"8: alarms.limits.{vital}.{direction}.raise_at: {expected}"


def test_low_alarm_clearing_below_its_limit_is_refused_at_clear_at(tmp_path: Path) -> None:
    text = HEAD + "alarms:\n  limits:\n    spo2:\n      low:\n        raise_at: 90\n        clear_at: 85\n"
    text += "patients:\n" + _replay_patient()
    assert _problem(tmp_path, text) == (
        "10: alarms.limits.spo2.low.clear_at: a low alarm clears above its limit: clear_at (85) must be at least "
        "raise_at (90)"
    )


def test_high_alarm_clearing_above_its_limit_is_refused_at_clear_at(tmp_path: Path) -> None:
    text = HEAD + "alarms:\n  limits:\n    heart_rate:\n      high:\n        raise_at: 130\n        clear_at: 140\n"
    text += "patients:\n" + _replay_patient()
    assert _problem(tmp_path, text) == (
        "10: alarms.limits.heart_rate.high.clear_at: a high alarm clears below its limit: clear_at (140) must be "
        "at most raise_at (130)"
    )


def test_low_limit_above_high_limit(tmp_path: Path) -> None:
    text = HEAD + "alarms:\n  limits:\n    heart_rate:\n      low: {raise_at: 140}\n      high: {raise_at: 130}\n"
    text += "patients:\n" + _replay_patient()
    assert _problem(tmp_path, text) == (
        "8: alarms.limits.heart_rate.low.raise_at: low.raise_at (140) must be below high.raise_at (130)"
    )


def test_limits_at_the_ends_of_the_range_are_accepted(tmp_path: Path) -> None:
    text = HEAD + "alarms:\n  limits:\n    spo2:\n      low: {raise_at: 0, clear_at: 100}\n"
    text += "    body_temperature:\n      low: {raise_at: 25}\n      high: {raise_at: 45}\n"
    rc, _, err = _check(tmp_path, text + "patients:\n" + _replay_patient())
    assert rc == 0, err


# ----------------------------------------------------------------------------- shared links


def test_two_devices_on_one_serial_port(tmp_path: Path) -> None:
    text = HEAD + "patients:\n"
    text += "  - id: p1\n    devices:\n      - id: ox-1\n        driver: nonin2\n        port: /dev/ttyUSB0\n"
    text += "  - id: p2\n    devices:\n      - id: ox-2\n        driver: masimo\n        port: /dev/ttyUSB0\n"
    assert _problem(tmp_path, text) == (
        "15: patients[1].devices[0].port: serial port '/dev/ttyUSB0' is already used by device 'ox-1': "
        "one device per serial port (first at line 10)"
    )


def test_by_id_name_and_kernel_name_of_one_port_are_the_same_port(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "serial" / "by-id").mkdir(parents=True)
    (dev / "ttyUSB3").touch()
    by_id = dev / "serial" / "by-id" / "usb-FTDI_FT232R_A10KXYZ-if00-port0"
    by_id.symlink_to("../../ttyUSB3")
    text = HEAD + "patients:\n  - id: p1\n    devices:\n"
    text += f"      - {{id: ox-1, driver: nonin2, port: {by_id}}}\n"
    text += f"      - {{id: ox-2, driver: nonin7, port: {dev / 'ttyUSB3'}}}\n"
    assert _problem(tmp_path, text) == (
        f"9: patients[0].devices[1].port: serial port '{dev / 'ttyUSB3'}' is already used by device 'ox-1': "
        "one device per serial port (first at line 8)"
    )


def test_same_ble_address_twice_whatever_the_case(tmp_path: Path) -> None:
    text = HEAD + "patients:\n  - id: p1\n    devices:\n"
    text += '      - {id: cuff, driver: ble-blood-pressure, address: "A0:9E:1A:00:11:22"}\n'
    text += '      - {id: scale, driver: ble-weight, address: "a0:9e:1a:00:11:22"}\n'
    assert _problem(tmp_path, text) == (
        "9: patients[0].devices[1].address: BLE address 'a0:9e:1a:00:11:22' is already used by device 'cuff': "
        "one device per BLE address (first at line 8)"
    )


def test_different_ports_and_addresses_are_fine(tmp_path: Path) -> None:
    text = HEAD + "patients:\n  - id: p1\n    devices:\n"
    text += "      - {id: ox-1, driver: nonin2, port: /dev/ttyUSB0}\n"
    text += "      - {id: ox-2, driver: nonin2, port: /dev/ttyUSB1}\n"
    text += '      - {id: cuff, driver: ble-blood-pressure, address: "A0:9E:1A:00:11:22"}\n'
    text += '      - {id: strap, driver: polar-ecg, address: "C4:7C:8D:6A:12:3F"}\n'
    rc, out, err = _check(tmp_path, text)
    assert rc == 0, err
    lines = out.splitlines()
    assert "    ox-1   nonin2             serial port /dev/ttyUSB0" in lines
    assert "    ox-2   nonin2             serial port /dev/ttyUSB1" in lines
    assert "    cuff   ble-blood-pressure BLE address A0:9E:1A:00:11:22" in lines
    assert "    strap  polar-ecg          BLE address C4:7C:8D:6A:12:3F" in lines


# ----------------------------------------------------------------------------- BLE address in words


@pytest.mark.parametrize("address", ["A0-9E-1A-00-11-22", "A09E1A001122", "A0:9E:1A:00:11", "G0:9E:1A:00:11:22"])
def test_malformed_ble_address_is_explained_in_words(tmp_path: Path, address: str) -> None:
    text = HEAD + "patients:\n  - id: p1\n    devices:\n      - id: cuff\n        driver: ble-blood-pressure\n"
    text += f'        address: "{address}"\n'
    line = _problem(tmp_path, text)
    assert line == (
        "10: patients[0].devices[0].address: a BLE address is six pairs of hex digits separated by colons, "
        "e.g. A0:9E:1A:12:34:56 (`iomt-gateway scan` lists the devices in range with their addresses) "
        f"(got '{address}')"
    )
    assert "[0-9A-Fa-f]" not in line


def test_malformed_adapter_is_explained_in_words(tmp_path: Path) -> None:
    text = HEAD + "patients:\n  - id: p1\n    devices:\n"
    text += '      - {id: cuff, driver: ble-blood-pressure, address: "A0:9E:1A:00:11:22", adapter: bluetooth0}\n'
    assert _problem(tmp_path, text) == (
        "8: patients[0].devices[0].adapter: must name a Bluetooth adapter as hci0, hci1, ... "
        "(`hciconfig` or `bluetoothctl list`) (got 'bluetooth0')"
    )


# ----------------------------------------------------------------------------- aliases


def _alias_bomb(devices: int, patients: int) -> str:
    """Patients × devices through one aliased list: a few KiB of text."""
    text = HEAD + "patients:\n  - id: p0\n    devices: &devs\n"
    text += "".join(f"      - {{driver: replay, vitals: a.jsonl, id: d{i}}}\n" for i in range(devices))
    text += "".join(f"  - id: p{i}\n    devices: *devs\n" for i in range(1, patients))
    return text


def test_alias_expansion_is_bounded_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(100, 400))  # 40,000 devices from 17 KB
    assert path.stat().st_size < 20_000
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"iomt-gateway check-config: {path}: 1 problem in the configuration",
        f"{path}: YAML aliases (*name) expand this file to more than 50,000 values; write the repeated parts "
        "out, or reuse fewer aliases inside aliases",
    ]
    print(f"alias bomb refused in {elapsed:.2f} s (process start included)")


def test_nested_aliases_billion_laughs(tmp_path: Path) -> None:
    text = HEAD + "processing:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"  {name}: &{name} [{', '.join(['*' + prev] * 10)}]\n"
    text += "patients:\n" + _replay_patient()
    line = _problem(tmp_path, text)
    assert line.startswith(" YAML aliases (*name) expand this file to more than 50,000 values")


def test_modest_aliases_still_work(tmp_path: Path) -> None:
    text = HEAD + "patients:\n  - id: p0\n    devices:\n      - &ox {driver: replay, vitals: a.jsonl, id: d0}\n"
    text += "      - {<<: *ox, id: d1}\n"
    rc, out, err = _check(tmp_path, text)
    assert rc == 0, err
    assert "devices      2 (replay: 2)" in out


# ----------------------------------------------------------------------------- time zones


def test_summary_shows_each_patients_effective_time_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    text = HEAD + "patients:\n"
    text += "  - id: p1\n    timezone: America/Chicago\n    devices:\n"
    text += "      - {id: d1, driver: replay, vitals: a.jsonl}\n"
    text += _replay_patient("p2", "d2")
    rc, out, err = _check(tmp_path, text)
    assert rc == 0, err
    lines = out.splitlines()
    assert "  patient p1: time zone America/Chicago (patient's own)" in lines
    host = "this computer's zone: the hub uses its own; set timezone: to be sure"
    assert f"  patient p2: time zone Pacific/Auckland ({host})" in lines
    rc, out, err = _check(tmp_path, text + "billing:\n  timezone: Europe/Paris\n")
    assert rc == 0, err
    assert "  patient p2: time zone Europe/Paris (billing.timezone)" in out.splitlines()
