"""The BLE package's small parts, without a bus: device clock, sequence store, queue, settings, CLIs."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.ble import decode_cli
from drivers.ble.device_time import DeviceClock, decode_current_time
from drivers.ble.driver import BleDriver, SequenceStore
from drivers.ble.link import NO_RSSI, AdapterScanner, BleLink, Notification
from drivers.ble.sequence_store import Held
from drivers.ble.settings import GlucoseSettings, HeartRateSettings, PolarEcgSettings
from drivers.ble.wire import DecodeError, DeviceDateTime
from gateway.clock import ManualClock
from gateway.driver_api import DeviceContext, DriverDisconnected, DriverError, registry
from gateway.records import ClockQuality, VitalReading

ROOT = Path(__file__).resolve().parents[2]


# --- device clock ------------------------------------------------------------------------------


def test_current_time_offset_corrects_stored_readings() -> None:
    host = ManualClock(t=1_800_000_000.0)
    dc = DeviceClock(host)
    device_now = DeviceDateTime(2027, 1, 15, 7, 0, 0)  # device shows this while the host says t
    correction = dc.calibrate(device_now)
    assert correction is not None and correction.source == "current-time"
    stamp = device_now.as_naive_unix()
    assert stamp is not None
    p = dc.place(stamp - 600, received_at=host.now())
    assert p.time == pytest.approx(host.now() - 600)
    assert (p.clock, p.device_time) == (ClockQuality.CORRECTED, stamp - 600)


def test_corrected_against_an_unsynced_host_is_only_unsynced() -> None:
    host = ManualClock(t=1_800_000_000.0, synced=False)
    dc = DeviceClock(host)
    dc.calibrate(DeviceDateTime(2027, 1, 15, 7, 0, 0))
    assert dc.place(1_800_000_000.0, host.now()).clock is ClockQuality.UNSYNCED


def test_unset_device_clock_falls_back_to_receipt_time() -> None:
    host = ManualClock(t=1_800_000_000.0)
    dc = DeviceClock(host)
    assert dc.calibrate(DeviceDateTime(0, 0, 0, 0, 0, 0)) is None  # clock never set
    unset = DeviceDateTime(2000, 1, 1, 0, 5, 0).as_naive_unix()  # reset after a battery change
    p = dc.place(unset, received_at=host.now())
    assert (p.time, p.clock, p.device_time) == (host.now(), ClockQuality.SYNCED, unset)
    future = dc.place(host.now() + 86400, received_at=host.now())
    assert future.time == host.now()
    assert dc.place(None, host.now()).device_time is None


def test_plausible_device_time_without_reference_is_kept_as_device_time() -> None:
    host = ManualClock(t=1_800_000_000.0)
    p = DeviceClock(host).place(host.now() - 3600, received_at=host.now())
    assert (p.time, p.clock) == (host.now() - 3600, ClockQuality.DEVICE)


def test_current_time_characteristic() -> None:
    assert decode_current_time(bytes.fromhex("EA070B1B0E1E2D050000")) == DeviceDateTime(2026, 11, 27, 14, 30, 45)
    with pytest.raises(DecodeError):
        decode_current_time(bytes.fromhex("EA070D1B0E1E2D050000"))  # month 13


# --- glucose sequence store --------------------------------------------------------------------


def test_sequence_store_round_trip_and_foreign_meter(tmp_path: Path) -> None:
    store = SequenceStore(tmp_path / "dev" / "ble-glucose.json", "aa:bb:cc:dd:ee:03")
    assert store.load() == Held()
    store.save(Held(41, {44, 45}))
    assert store.load() == Held(41, {44, 45})
    assert not list((tmp_path / "dev").glob("*.tmp"))  # replaced atomically, no leftovers
    other = SequenceStore(store.path, "AA:BB:CC:DD:EE:99")
    assert other.load() == Held()  # another meter at this device id: fetch everything


def test_sequence_store_reads_a_file_saved_before_gaps_were_kept(tmp_path: Path) -> None:
    path = tmp_path / "ble-glucose.json"
    path.write_text(json.dumps({"address": "AA:BB:CC:DD:EE:03", "last_sequence": 41}))
    assert SequenceStore(path, "AA:BB:CC:DD:EE:03").load() == Held(41)


def test_sequence_store_corrupt_file_means_fetch_all(tmp_path: Path) -> None:
    path = tmp_path / "ble-glucose.json"
    path.write_text("{not json")
    assert SequenceStore(path, "AA:BB:CC:DD:EE:03").load() == Held()
    path.write_text(json.dumps({"address": "AA:BB:CC:DD:EE:03", "last_sequence": 70000}))
    assert SequenceStore(path, "AA:BB:CC:DD:EE:03").load() == Held()
    path.write_text(json.dumps({"address": "AA:BB:CC:DD:EE:03", "last_sequence": 5, "held_above": ["x"]}))
    assert SequenceStore(path, "AA:BB:CC:DD:EE:03").load() == Held(5)  # fetched again rather than missed


# --- notification queue ------------------------------------------------------------------------


async def test_full_queue_drops_oldest_and_counts() -> None:
    link = BleLink("AA:BB:CC:DD:EE:01", "hci0", ManualClock(), queue_size=16)
    for i in range(20):
        link._put(Notification("u", bytes([i]), float(i)))
    assert link.dropped == 4
    first = await link.next(0.1)
    assert first is not None and first.data == bytes([4])


async def test_disconnect_ends_the_stream_with_a_typed_error() -> None:
    link = BleLink("AA:BB:CC:DD:EE:01", "hci0", ManualClock(), queue_size=16)
    link._put(Notification("u", b"\x01", 0.0))
    link._on_disconnect(None)  # type: ignore[arg-type]
    first = await link.next()
    assert first is not None and first.data == b"\x01"
    with pytest.raises(DriverDisconnected):
        await link.next()


async def test_silence_beyond_the_timeout_is_none() -> None:
    link = BleLink("AA:BB:CC:DD:EE:01", "hci0", ManualClock(), queue_size=16)
    assert await link.next(0.01) is None  # the driver decides what silence means


# --- settings ----------------------------------------------------------------------------------


def test_settings_validate_and_default_modes() -> None:
    hr = HeartRateSettings(id="hr", address="c4:7c:8d:6a:12:3f")
    assert (hr.mode, hr.adapter, hr.driver) == ("connected", "hci0", "ble-heart-rate")
    assert GlucoseSettings(id="g", address="C4:7C:8D:6A:12:3F").mode == "passive"
    with pytest.raises(ValidationError):
        HeartRateSettings(id="hr", address="not-an-address")
    with pytest.raises(ValidationError):
        HeartRateSettings(id="hr", address="C4:7C:8D:6A:12:3F", adapter="usb0")
    with pytest.raises(ValidationError):
        PolarEcgSettings(id="ecg", address="C4:7C:8D:6A:12:3F", mode="passive")


def test_settings_and_decoders_do_not_import_bleak() -> None:
    code = (
        "import sys; import drivers.ble.settings, drivers.ble.decode_cli; "
        "from gateway.driver_api import registry; registry(); "
        "sys.exit('bleak' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


# --- decode CLI --------------------------------------------------------------------------------


def test_decode_cli_prints_json_and_flags_rejects(capsys: pytest.CaptureFixture[str]) -> None:
    assert decode_cli.blood_pressure_cmd(["15 BD F0 0B 00 9F F0 3C 00 12 00"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decoded"]["systolic"] == 18.9 and out["decoded"]["unit"] == "kPa"
    assert decode_cli.heart_rate_cmd(["1E5532002100", "17 01 01", "zz"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["decoded"]["rr_intervals_1024"] == [33]
    assert "error" in lines[1] and lines[2]["error"] == "not hexadecimal"
    assert decode_cli.glucose_cmd(["06 00 01 06"]) == 0
    assert json.loads(capsys.readouterr().out)["decoded"]["result"] == "no_records_found"
    assert decode_cli.polar_ecg_cmd([]) == 2


# --- drivers: garbage from the air never escapes as anything but a counted drop ----------------

_DRIVERS = [
    "ble-heart-rate",
    "ble-pulse-oximeter",
    "ble-blood-pressure",
    "ble-thermometer",
    "ble-weight",
    "ble-glucose",
    "polar-ecg",
]


def _driver(name: str, tmp: Path) -> BleDriver:
    spec = registry()[name]
    cfg = spec.settings.model_validate({"id": "d", "address": "AA:BB:CC:DD:EE:01"})
    ctx = DeviceContext("d", "p", ManualClock(), tmp / name)
    driver = spec.load()(ctx, cfg)
    assert isinstance(driver, BleDriver)
    return driver


@pytest.mark.parametrize("name", _DRIVERS)
def test_any_notification_is_decoded_or_rejected(name: str, tmp_path: Path) -> None:
    driver = _driver(name, tmp_path)
    uuids = driver.SUBSCRIBE

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(uuids), st.binary(max_size=40))
    def check(uuid: str, data: bytes) -> None:
        try:
            readings = driver._decode(Notification(uuid, data, 1_800_000_000.0))
        except DecodeError:
            return
        except DriverError:
            assert name == "polar-ecg" and data[:1] == b"\xf0"  # the strap refusing the ECG start
            return
        for r in readings:
            if isinstance(r, VitalReading) and r.value is not None:
                assert math.isfinite(r.value)

    check()


async def test_scanner_takes_only_fresh_advertisements() -> None:
    """bleak reports every property change while scanning; only a new RSSI means 'advertising now'."""
    scanner = AdapterScanner("hci0")
    fut: asyncio.Future[BLEDevice] = asyncio.get_running_loop().create_future()
    scanner._waiters["AA:BB:CC:DD:EE:01"] = [fut]
    dev = BLEDevice("aa:bb:cc:dd:ee:01", "strap", {})

    def adv(rssi: int) -> AdvertisementData:
        return AdvertisementData(None, {}, {}, [], None, rssi, ())

    scanner._last_rssi["AA:BB:CC:DD:EE:01"] = -55  # as last heard before it connected
    scanner._on_advertisement(dev, adv(-55))  # e.g. Connected=False after it left: same RSSI
    scanner._on_advertisement(dev, adv(NO_RSSI))  # nothing heard in this scan
    assert not fut.done()
    scanner._on_advertisement(dev, adv(-61))
    assert fut.done() and fut.result() is dev
    assert "AA:BB:CC:DD:EE:01" not in scanner._waiters


def test_a_device_clock_tells_local_wall_time_in_the_patients_zone() -> None:
    """A cuff with no Current Time, its clock set by hand in Chicago, stamps 02:30 on Mar 3: that is
    08:30 UTC (CST), not 02:30 UTC, which would put it 6 h and a day of data earlier."""
    chicago = ZoneInfo("America/Chicago")
    measured = datetime(2026, 3, 3, 2, 30, tzinfo=chicago).timestamp()
    host = ManualClock(t=measured + 40)
    stamp = DeviceDateTime(2026, 3, 3, 2, 30, 0).as_naive_unix()
    assert stamp is not None
    p = DeviceClock(host, chicago).place(stamp, received_at=host.now())
    assert (p.time, p.clock, p.device_time) == (measured, ClockQuality.DEVICE, stamp)
    assert datetime.fromtimestamp(p.time, chicago).date() == date(2026, 3, 3)
    # Daylight saving time: 02:30 on Jul 3 is 07:30 UTC (CDT).
    july = DeviceDateTime(2026, 7, 3, 2, 30, 0).as_naive_unix()
    assert july is not None
    summer = DeviceClock(ManualClock(t=july + 6 * 3600), chicago).place(july, received_at=july + 6 * 3600)
    assert summer.time == datetime(2026, 7, 3, 7, 30, tzinfo=UTC).timestamp()
    # With Current Time read, the offset measured carries the zone already.
    dc = DeviceClock(host, chicago)
    dc.calibrate(DeviceDateTime(2026, 3, 3, 2, 30, 40))
    assert dc.place(stamp, received_at=host.now()).time == pytest.approx(measured)


def test_a_clock_not_set_is_still_placed_by_current_time_read_from_it() -> None:
    """A meter whose clock restarted at 2000-01-01 after a battery change flags its records with a
    time fault; read through Current Time from the same clock they are placed where they were
    taken, not all at receipt time (an old low read as a current one).  A record stamped before the
    restart comes out years away: receipt time."""
    host = ManualClock(t=1_800_000_000.0)
    dc = DeviceClock(host)
    device_now = DeviceDateTime(2000, 1, 1, 5, 0, 0)  # five hours after the restart
    dc.calibrate(device_now)
    now_stamp = device_now.as_naive_unix()
    assert now_stamp is not None
    taken = dc.place(now_stamp - 3 * 3600, received_at=host.now(), clock_not_set=True)
    assert (taken.time, taken.clock) == (host.now() - 3 * 3600, ClockQuality.CORRECTED)
    before_restart = DeviceDateTime(2026, 6, 1, 8, 0, 0).as_naive_unix()
    stale = dc.place(before_restart, received_at=host.now(), clock_not_set=True)
    assert (stale.time, stale.clock, stale.device_time) == (host.now(), ClockQuality.SYNCED, before_restart)
