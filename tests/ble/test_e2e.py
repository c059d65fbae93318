"""End to end through real bleak and bleak-retry-connector against bluezoo on a private D-Bus.

The drivers are built the way the daemon builds them: settings validated from a config mapping by
the registered ``DriverSpec``, class loaded through the entry point.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
import wfdb
from scipy.signal import resample_poly

from drivers.ble import blood_pressure, glucose, heart_rate, plx, polar_pmd, scan_cli, thermometer
from gateway.clock import SyncPolicy, SystemClock
from gateway.config.loader import parse_config_text
from gateway.config.processing import AlarmSection
from gateway.driver_api import DeviceContext, Driver, DriverConnectFailed, DriverDisconnected, registry
from gateway.pipeline import PatientSetup, Pipeline
from gateway.records import (
    ClockQuality,
    DeviceEvent,
    DeviceFlag,
    DeviceState,
    Reading,
    SampleBlock,
    Vital,
    VitalReading,
)
from tests.ble.devices import GlucoseMeter, PolarH10, bp_cuff, bp_payload, heart_rate_strap, hr_payload, naive
from tests.ble.harness import MockBluez
from tests.ble.peripheral import CharSpec, Peripheral, ServiceSpec

pytestmark = pytest.mark.timeout(60)

# Low bleak timeouts keep the suite fast; the mock answers in milliseconds.
FAST = {"scan_timeout_s": 3.0, "connect_timeout_s": 3.0}


def utc_wall_clock() -> datetime:
    """Now as a device would show it if set to UTC (naive, whole seconds)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def make_driver(ctx: DeviceContext, config: dict[str, Any]) -> Driver:
    spec = registry()[config["driver"]]
    settings = spec.settings.model_validate({"id": ctx.device_id, **FAST, **config})
    return spec.load()(ctx, settings)


async def take(it: AsyncIterator[Reading], n: int, within_s: float = 10.0) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(within_s):
        while len(out) < n:
            out.append(await anext(it))
    return out


def vitals(readings: list[Reading], vital: Vital) -> list[VitalReading]:
    return [r for r in readings if isinstance(r, VitalReading) and r.vital is vital]


async def test_heart_rate_strap_streams(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    address = mock_bluez.peripherals[0]
    strap = heart_rate_strap(mock_bluez.adapter_of(address), battery_pct=15)
    await strap.start()
    driver = make_driver(device_ctx, {"driver": "ble-heart-rate", "address": address})
    try:
        async with driver:
            it = aiter(driver.readings())
            (battery,) = await take(it, 1)
            assert isinstance(battery, DeviceEvent)
            assert (battery.state, battery.battery_pct) == (DeviceState.BATTERY_LOW, 15.0)
            await strap.wait_subscribed(heart_rate.MEASUREMENT)
            for bpm in (61, 62, 63):
                strap.notify(heart_rate.MEASUREMENT, hr_payload(bpm, [1000, 990]))
            got = await take(it, 9)
    finally:
        await strap.stop()
    assert [r.value for r in vitals(got, Vital.HEART_RATE)] == [61.0, 62.0, 63.0]
    rr = vitals(got, Vital.RR_INTERVAL)
    assert [r.value for r in rr] == pytest.approx([1000 * 1000 / 1024, 990 * 1000 / 1024] * 3)
    assert all(r.unit == "ms" and r.device_id == "dev1" for r in rr)


async def test_absent_device_is_a_connect_failure(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    driver = make_driver(
        device_ctx, {"driver": "ble-heart-rate", "address": mock_bluez.peripherals[0], "scan_timeout_s": 0.5}
    )
    with pytest.raises(DriverConnectFailed):
        async with driver:
            pass


async def test_bp_cuff_passive_visit(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """The cuff appears with one reading, indicates it and goes away; the session waits for the next."""
    address = mock_bluez.peripherals[1]
    host_now = utc_wall_clock()
    skew = timedelta(hours=-1, seconds=-20)  # the cuff's clock is 1 h 20 s behind (DST never set)
    cuff_now = host_now + skew
    measured_at = cuff_now - timedelta(seconds=30)
    driver = make_driver(device_ctx, {"driver": "ble-blood-pressure", "address": address})
    assert driver.settings.mode == "passive"  # type: ignore[attr-defined]
    async with driver:
        it = aiter(driver.readings())
        pending = asyncio.ensure_future(take(it, 6, within_s=15))
        for _visit in range(2):
            cuff = bp_cuff(mock_bluez.adapter_of(address), cuff_now)
            await cuff.start()
            await cuff.wait_subscribed(blood_pressure.MEASUREMENT)
            cuff.notify(blood_pressure.MEASUREMENT, bp_payload(128, 82, 97, 66, measured_at))
            await asyncio.sleep(0.2)
            await cuff.stop()
            if _visit == 0:
                got = await pending
                pending = asyncio.ensure_future(take(it, 6, within_s=15))
        got2 = await pending
    for visit in (got, got2):
        connected, *values, gone = visit
        assert isinstance(connected, DeviceEvent) and connected.state is DeviceState.CONNECTED
        # The correction measured from Current Time is recorded with the visit.
        assert connected.extra["clock_source"] == "current-time"
        assert connected.extra["clock_offset_s"] == pytest.approx(-skew.total_seconds(), abs=3)
        assert isinstance(gone, DeviceEvent) and gone.state is DeviceState.DISCONNECTED
        by = {v.vital: v for v in values if isinstance(v, VitalReading)}
        assert [by[k].value for k in (Vital.SYSTOLIC_BP, Vital.DIASTOLIC_BP, Vital.MEAN_BP, Vital.PULSE_RATE)] == [
            128,
            82,
            97,
            66,
        ]
        sys_ = by[Vital.SYSTOLIC_BP]
        assert sys_.clock is ClockQuality.CORRECTED
        assert sys_.device_time == naive(measured_at)
        # Corrected onto the host's time line: 30 s before the host's "now", not 1 h 20 min earlier.
        assert sys_.time == pytest.approx(naive(host_now) - 30, abs=3)


@pytest.mark.parametrize("user_id", [None, 2])
async def test_a_shared_cuff_gives_only_its_patients_readings(
    mock_bluez: MockBluez, device_ctx: DeviceContext, user_id: int | None
) -> None:
    """A cuff two people share marks each reading with its user; with ``user_id`` set only that
    user's come out, and either way the journal names the users the cuff marked."""
    address = mock_bluez.peripherals[1]
    now = utc_wall_clock()
    config = {"driver": "ble-blood-pressure", "address": address, "user_id": user_id}
    driver = make_driver(device_ctx, {k: v for k, v in config.items() if v is not None})
    expected = 2 * 4 if user_id is None else 4  # systolic, diastolic, mean, pulse per reading taken
    with structlog.testing.capture_logs() as logs:
        async with driver:
            pending = asyncio.ensure_future(take(aiter(driver.readings()), expected + 2, within_s=15))
            cuff = bp_cuff(mock_bluez.adapter_of(address), now)
            await cuff.start()
            await cuff.wait_subscribed(blood_pressure.MEASUREMENT)
            cuff.notify(blood_pressure.MEASUREMENT, bp_payload(151, 95, 114, 88, now - timedelta(seconds=40), user=1))
            cuff.notify(blood_pressure.MEASUREMENT, bp_payload(118, 76, 90, 64, now - timedelta(seconds=20), user=2))
            await asyncio.sleep(0.2)
            await cuff.stop()
            got = await pending
    systolic = [v.value for v in got if isinstance(v, VitalReading) and v.vital is Vital.SYSTOLIC_BP]
    assert systolic == ([151, 118] if user_id is None else [118])
    users = [(e["user"], e["taken"], "hint" in e) for e in logs if e["event"] == "ble_reading_user"]
    assert users == ([(1, True, True), (2, True, True)] if user_id is None else [(1, False, False), (2, True, False)])


async def run_glucose_session(
    mock_bluez: MockBluez, ctx: DeviceContext, meter: GlucoseMeter, expected: int
) -> list[Reading]:
    address = mock_bluez.peripherals[2]
    driver = make_driver(ctx, {"driver": "ble-glucose", "address": address})
    async with driver:
        it = aiter(driver.readings())
        pending = asyncio.ensure_future(take(it, expected + 2, within_s=15))  # + connected, disconnected
        await meter.peripheral.start()
        got = await pending
        await meter.peripheral.stop()
    return got


async def test_glucose_records_fetched_across_restart(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    address = mock_bluez.peripherals[2]
    now = utc_wall_clock()
    meter = GlucoseMeter(mock_bluez.adapter_of(address), now)
    for seq, mg in ((1, 95), (2, 110), (3, 142)):
        meter.add(seq, now - timedelta(hours=10 - seq), mg)

    first = await run_glucose_session(mock_bluez, device_ctx, meter, 3)
    assert [r.value for r in vitals(first, Vital.GLUCOSE)] == [95.0, 110.0, 142.0]
    assert isinstance(first[-1], DeviceEvent) and first[-1].state is DeviceState.DISCONNECTED
    state = json.loads((device_ctx.state_dir / "ble-glucose.json").read_text())
    assert state == {"address": address, "last_sequence": 3, "held_above": []}

    # The meter took two more readings while away; a new driver (a daemon restart) fetches only those.
    meter.add(4, now - timedelta(hours=2), 88)
    meter.add(5, now - timedelta(hours=1), 201)
    second = await run_glucose_session(mock_bluez, device_ctx, meter, 2)
    assert [r.value for r in vitals(second, Vital.GLUCOSE)] == [88.0, 201.0]
    assert meter.requests == [glucose.racp_all_records(), glucose.racp_records_from(4)]
    assert json.loads((device_ctx.state_dir / "ble-glucose.json").read_text())["last_sequence"] == 5
    g = vitals(second, Vital.GLUCOSE)[0]
    assert g.device_time == naive(now - timedelta(hours=2))
    assert g.clock is ClockQuality.CORRECTED


async def test_glucose_records_lost_to_a_full_queue_are_fetched_on_the_next_visit(
    mock_bluez: MockBluez, device_ctx: DeviceContext
) -> None:
    """A first download of 60 records through a 16-notification queue, read slowly: the meter sends
    faster than the gateway takes, and the oldest queued notifications are dropped.  The place
    does not move past the first gap, so the next visit fetches the lost records; across the two
    visits every record arrives exactly once."""
    address = mock_bluez.peripherals[2]
    now = utc_wall_clock()
    meter = GlucoseMeter(mock_bluez.adapter_of(address), now)
    for seq in range(1, 61):
        meter.add(seq, now - timedelta(minutes=200 - seq), 40 + seq)

    async def visit() -> list[float]:
        driver = make_driver(device_ctx, {"driver": "ble-glucose", "address": address, "queue_size": 16})
        got: list[float] = []
        async with driver:
            it = aiter(driver.readings())
            await meter.peripheral.start()
            async with asyncio.timeout(20):
                while not isinstance(r := await anext(it), DeviceEvent) or r.state is not DeviceState.DISCONNECTED:
                    if isinstance(r, VitalReading) and r.vital is Vital.GLUCOSE and r.value is not None:
                        got.append(r.value)
                        await asyncio.sleep(0.02)  # a slow consumer: the queue overflows
            await meter.peripheral.stop()
        return got

    first = await visit()
    assert 0 < len(first) < 60  # some were lost to the full queue
    state = json.loads((device_ctx.state_dir / "ble-glucose.json").read_text())
    assert state["last_sequence"] is None or state["last_sequence"] < 60
    assert state["held_above"]  # the records past the first gap, held apart
    # Each visit loses some again to the same slow reading, and takes what it gets: the lost ones
    # come on a later visit, and none twice.
    taken = list(first)
    for _visit in range(8):
        more = await visit()
        assert more  # every visit makes progress
        taken += more
        state = json.loads((device_ctx.state_dir / "ble-glucose.json").read_text())
        if state["last_sequence"] == 60 and not state["held_above"]:
            break
    assert sorted(taken) == [40.0 + seq for seq in range(1, 61)]  # each once, none missing


async def test_glucose_meter_numbering_restarted(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """Nothing newer than the number held, and the meter's newest record is below it: the meter was
    reset, so everything it stores now is new to the gateway."""
    address = mock_bluez.peripherals[2]
    now = utc_wall_clock()
    meter = GlucoseMeter(mock_bluez.adapter_of(address), now)
    for seq, mg in ((1, 95), (2, 110), (3, 142)):
        meter.add(seq, now - timedelta(hours=10 - seq), mg)
    await run_glucose_session(mock_bluez, device_ctx, meter, 3)

    meter.factory_reset()
    meter.add(1, now - timedelta(hours=2), 99)
    meter.add(2, now - timedelta(hours=1), 123)
    after_reset = await run_glucose_session(mock_bluez, device_ctx, meter, 2)
    assert [r.value for r in vitals(after_reset, Vital.GLUCOSE)] == [99.0, 123.0]
    assert meter.requests == [
        glucose.racp_all_records(),
        glucose.racp_records_from(4),
        glucose.racp_last_record(),
        glucose.racp_all_records(),
    ]
    assert json.loads((device_ctx.state_dir / "ble-glucose.json").read_text())["last_sequence"] == 2

    # Nothing new since: one probe, no repeats, the meter is let go.
    nothing = await run_glucose_session(mock_bluez, device_ctx, meter, 0)
    assert vitals(nothing, Vital.GLUCOSE) == []
    assert meter.requests[-2:] == [glucose.racp_records_from(3), glucose.racp_last_record()]


async def test_vanishing_strap_then_new_session(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """One strap vanishes mid-stream: DriverDisconnected; a new session connects when it returns.
    Another strap streams on, unaffected."""
    a1, a2 = mock_bluez.peripherals[0], mock_bluez.peripherals[1]
    s1, s2 = heart_rate_strap(mock_bluez.adapter_of(a1)), heart_rate_strap(mock_bluez.adapter_of(a2))
    await s1.start()
    await s2.start()
    ctx2 = replace(device_ctx, device_id="dev2", state_dir=device_ctx.state_dir.parent / "dev2")
    d1 = make_driver(device_ctx, {"driver": "ble-heart-rate", "address": a1})
    d2 = make_driver(ctx2, {"driver": "ble-heart-rate", "address": a2})
    try:
        async with d1, d2:
            it1, it2 = aiter(d1.readings()), aiter(d2.readings())
            await take(it1, 1)
            await take(it2, 1)  # battery events
            await s1.wait_subscribed(heart_rate.MEASUREMENT)
            await s2.wait_subscribed(heart_rate.MEASUREMENT)
            s1.notify(heart_rate.MEASUREMENT, bytes([0, 70]))
            assert [r.value for r in await take(it1, 1)] == [70.0]
            await s1.stop()
            with pytest.raises(DriverDisconnected):
                await take(it1, 1)
            s2.notify(heart_rate.MEASUREMENT, bytes([0, 80]))
            assert [r.value for r in await take(it2, 1)] == [80.0]
            await d1.close()

            await s1.start()  # back in range: the supervisor's next session connects
            d1b = make_driver(device_ctx, {"driver": "ble-heart-rate", "address": a1})
            async with d1b:
                it1b = aiter(d1b.readings())
                await take(it1b, 1)
                await s1.wait_subscribed(heart_rate.MEASUREMENT)
                s1.notify(heart_rate.MEASUREMENT, bytes([0, 72]))
                s2.notify(heart_rate.MEASUREMENT, bytes([0, 81]))
                assert [r.value for r in await take(it1b, 1)] == [72.0]
                assert [r.value for r in await take(it2, 1)] == [81.0]
    finally:
        await s1.stop()
        await s2.stop()


async def test_polar_ecg_stream_with_lost_frame(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    address = mock_bluez.peripherals[0]
    strap = PolarH10(mock_bluez.adapter_of(address))
    await strap.peripheral.start()
    driver = make_driver(device_ctx, {"driver": "polar-ecg", "address": address})
    try:
        async with driver:
            pending = asyncio.ensure_future(take(aiter(driver.readings()), 4))
            async with asyncio.timeout(10):
                await strap.started.wait()
            n = PolarH10.FRAME
            for k in range(5):
                frame = strap.frame(k * n, skip=(k == 2))
                if frame is not None:
                    strap.peripheral.notify(polar_pmd.DATA, frame)
            blocks = await pending
    finally:
        await strap.peripheral.stop()
    assert all(isinstance(b, SampleBlock) for b in blocks)
    sb = [b for b in blocks if isinstance(b, SampleBlock)]
    assert [b.first_index for b in sb] == [0, n, 3 * n, 4 * n]
    assert [b.gap_before for b in sb] == [False, False, True, False]
    assert sb[0].samples[:3].tolist() == [0.0, 10.0, 20.0]
    assert (sb[0].channel, sb[0].unit, sb[0].sample_rate_hz) == ("ecg", "uV", 130.0)
    assert strap.peripheral.writes[0] == (polar_pmd.CONTROL_POINT, polar_pmd.START_ECG)


async def test_scan_lists_health_devices(mock_bluez: MockBluez, capsys: pytest.CaptureFixture[str]) -> None:
    strap = heart_rate_strap(mock_bluez.adapter_of(mock_bluez.peripherals[0]))
    meter = GlucoseMeter(mock_bluez.adapter_of(mock_bluez.peripherals[2]), utc_wall_clock())
    await strap.start()
    await meter.peripheral.start()
    try:
        found = await scan_cli.scan("hci0", 1.0)
        # The command as a technician runs it (its own event loop, hence a thread here).
        rc = await asyncio.to_thread(scan_cli.main, ["--", "--seconds", "1", "--json"])
    finally:
        await strap.stop()
        await meter.peripheral.stop()
    by = {f.address: f for f in found}
    assert by[mock_bluez.peripherals[0]].drivers == ["ble-heart-rate"]
    assert by[mock_bluez.peripherals[2]].drivers == ["ble-glucose"]
    assert by[mock_bluez.peripherals[2]].name == "Glucose-Meter"
    assert rc == 0
    printed = {json.loads(line)["address"]: json.loads(line) for line in capsys.readouterr().out.splitlines()}
    assert printed[mock_bluez.peripherals[0]]["services"] == ["heart rate"]


async def test_devices_configured_from_yaml(mock_bluez: MockBluez, tmp_path: Path) -> None:
    """The config loader builds the BLE settings from YAML; the registry gives the drivers; a strap
    streams while a meter hands over its records, side by side."""
    hr_addr, g_addr = mock_bluez.peripherals[0], mock_bluez.peripherals[2]
    text = f"""
gateway: {{id: hub-ble}}
upstream: {{url: "mqtt://127.0.0.1:1883"}}
patients:
  - id: p-ble
    timezone: UTC
    devices:
      - id: hr-1
        driver: ble-heart-rate
        address: "{hr_addr}"
        adapter: hci0
        scan_timeout_s: 3
        connect_timeout_s: 3
      - id: bg-1
        driver: ble-glucose
        address: "{g_addr.lower()}"
        connect_timeout_s: 3
"""
    cfg = parse_config_text(text, file=tmp_path / "gateway.yaml")
    hr_settings, g_settings = cfg.patients[0].devices
    clock = SystemClock(SyncPolicy.ASSUME_SYNCED)

    def driver_for(settings: Any) -> Driver:
        ctx = DeviceContext(settings.id, "p-ble", clock, tmp_path / "state" / settings.id)
        return registry()[settings.driver].load()(ctx, settings)

    strap = heart_rate_strap(mock_bluez.adapter_of(hr_addr))
    meter = GlucoseMeter(mock_bluez.adapter_of(g_addr), utc_wall_clock())
    meter.add(1, utc_wall_clock() - timedelta(hours=3), 104)
    await strap.start()
    try:
        async with driver_for(hr_settings) as hr, driver_for(g_settings) as bg:
            hr_it, bg_it = aiter(hr.readings()), aiter(bg.readings())
            bg_pending = asyncio.ensure_future(take(bg_it, 3))
            await take(hr_it, 1)  # battery
            await strap.wait_subscribed(heart_rate.MEASUREMENT)
            await meter.peripheral.start()
            strap.notify(heart_rate.MEASUREMENT, bytes([0, 77]))
            assert [r.value for r in await take(hr_it, 1)] == [77.0]
            bg_got = await bg_pending
            strap.notify(heart_rate.MEASUREMENT, bytes([0, 78]))
            assert [r.value for r in await take(hr_it, 1)] == [78.0]
    finally:
        await strap.stop()
        await meter.peripheral.stop()
    assert [r.value for r in vitals(bg_got, Vital.GLUCOSE)] == [104.0]
    assert {r.device_id for r in bg_got} == {"bg-1"}


async def test_passive_device_released_when_idle(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """A thermometer that stays connected after its reading is let go after idle_timeout_s; garbage
    in between is counted and dropped, the session goes on."""
    address = mock_bluez.peripherals[1]
    thermo = Peripheral(
        "Thermo",
        mock_bluez.adapter_of(address),
        [ServiceSpec(thermometer.SERVICE, [CharSpec(thermometer.MEASUREMENT, ["indicate"])])],
    )
    driver = make_driver(device_ctx, {"driver": "ble-thermometer", "address": address, "idle_timeout_s": 0.5})
    await thermo.start()
    try:
        async with driver:
            pending = asyncio.ensure_future(take(aiter(driver.readings()), 3))
            await thermo.wait_subscribed(thermometer.MEASUREMENT)
            thermo.notify(thermometer.MEASUREMENT, bytes.fromhex("01FFFF"))  # truncated FLOAT: rejected
            thermo.notify(thermometer.MEASUREMENT, bytes.fromhex("00720100FF"))  # 37.0 °C, no timestamp
            connected, temp, released = await pending
    finally:
        await thermo.stop()
    assert isinstance(connected, DeviceEvent) and connected.state is DeviceState.CONNECTED
    assert isinstance(temp, VitalReading) and temp.value == pytest.approx(37.0)
    assert temp.clock is ClockQuality.SYNCED and temp.device_time is None
    assert isinstance(released, DeviceEvent) and released.state is DeviceState.DISCONNECTED
    assert "released" in released.detail
    assert driver.decode_errors == 1  # type: ignore[attr-defined]


async def test_pulse_oximeter_continuous_and_spot_check(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    address = mock_bluez.peripherals[0]
    ox = Peripheral(
        "PLX",
        mock_bluez.adapter_of(address),
        [
            ServiceSpec(
                plx.SERVICE,
                [CharSpec(plx.CONTINUOUS, ["notify"]), CharSpec(plx.SPOT_CHECK, ["indicate"])],
            )
        ],
    )
    await ox.start()
    driver = make_driver(device_ctx, {"driver": "ble-pulse-oximeter", "address": address})
    try:
        async with driver:
            pending = asyncio.ensure_future(take(aiter(driver.readings()), 6))
            await ox.wait_subscribed(plx.CONTINUOUS)
            await ox.wait_subscribed(plx.SPOT_CHECK)
            ox.notify(plx.CONTINUOUS, bytes.fromhex("1C5F005A00200000000057F0"))
            ox.notify(plx.SPOT_CHECK, bytes.fromhex("0FACF3BEF5E8070B1D1708392040220000" + "66E3"))
            got = await pending
    finally:
        await ox.stop()
    live, spot = got[:3], got[3:]
    assert [r.value for r in live if isinstance(r, VitalReading)] == [95.0, 90.0, pytest.approx(8.7)]
    assert all(isinstance(r, VitalReading) and DeviceFlag.SEARCHING in r.flags for r in live)
    s = spot[0]
    assert isinstance(s, VitalReading) and (s.vital, s.value) == (Vital.SPO2, 94.0)
    # A 2024 spot-check stamp on a device without Current Time: kept as the device's time, not "now".
    assert s.device_time == naive(datetime(2024, 11, 29, 23, 8, 57))
    assert DeviceFlag.LOW_PERFUSION in s.flags


async def test_adapter_choice(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """The configured adapter is the one that scans and connects."""
    address = mock_bluez.peripherals[0]
    strap = heart_rate_strap(mock_bluez.adapter_of(address))
    await strap.start()
    driver = make_driver(device_ctx, {"driver": "ble-heart-rate", "address": address, "adapter": "hci3"})
    try:
        async with driver:
            client = driver.link._client  # type: ignore[attr-defined]
            assert client is not None and client.is_connected
            path: str = client._backend._device_path
            assert path.startswith("/org/bluez/hci3/"), path
    finally:
        await strap.stop()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_lost_links_leak_no_connections(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """Weeks of a strap coming and going: each lost link's D-Bus connection is released on close."""
    address = mock_bluez.peripherals[0]

    async def cycle() -> None:
        strap = heart_rate_strap(mock_bluez.adapter_of(address))
        await strap.start()
        driver = make_driver(device_ctx, {"driver": "ble-heart-rate", "address": address})
        async with driver:
            it = aiter(driver.readings())
            await take(it, 1)
            await strap.stop()  # device-side drop
            with pytest.raises(DriverDisconnected):
                await take(it, 1)

    await cycle()  # bleak's own long-lived connection is opened on first use
    baseline = _open_fds()
    for _ in range(4):
        await cycle()
    assert _open_fds() <= baseline


async def test_two_passive_devices_share_the_adapter(mock_bluez: MockBluez, device_ctx: DeviceContext) -> None:
    """A cuff and a thermometer wait on the same adapter at once.  BlueZ allows one discovery per
    client (a second StartDiscovery is InProgress, one StopDiscovery ends it): both must still be caught."""
    cuff_addr, thermo_addr = mock_bluez.peripherals[1], mock_bluez.peripherals[0]
    ctx2 = replace(device_ctx, device_id="dev2", state_dir=device_ctx.state_dir.parent / "dev2")
    bp = make_driver(device_ctx, {"driver": "ble-blood-pressure", "address": cuff_addr})
    th = make_driver(ctx2, {"driver": "ble-thermometer", "address": thermo_addr, "idle_timeout_s": 0.3})
    cuff = bp_cuff(mock_bluez.adapter_of(cuff_addr), utc_wall_clock())
    thermo = Peripheral(
        "Thermo",
        mock_bluez.adapter_of(thermo_addr),
        [ServiceSpec(thermometer.SERVICE, [CharSpec(thermometer.MEASUREMENT, ["indicate"])])],
    )
    async with bp, th:
        bp_pending = asyncio.ensure_future(take(aiter(bp.readings()), 6))
        th_pending = asyncio.ensure_future(take(aiter(th.readings()), 3))
        await asyncio.sleep(0.3)  # both sessions are scanning before anything advertises
        try:
            await thermo.start()
            await thermo.wait_subscribed(thermometer.MEASUREMENT)
            thermo.notify(thermometer.MEASUREMENT, bytes.fromhex("00720100FF"))
            th_got = await th_pending  # connected, 37.0, released: its scan has stopped meanwhile
            await cuff.start()
            await cuff.wait_subscribed(blood_pressure.MEASUREMENT)
            cuff.notify(blood_pressure.MEASUREMENT, bp_payload(120, 80, 93, 70, utc_wall_clock()))
            await asyncio.sleep(0.2)
            await cuff.stop()
            bp_got = await bp_pending
        finally:
            await thermo.stop()
            await cuff.stop()
    assert [r.value for r in th_got if isinstance(r, VitalReading)] == [pytest.approx(37.0)]
    assert [r.value for r in vitals(bp_got, Vital.SYSTOLIC_BP)] == [120.0]


async def test_simultaneous_connects_keep_their_own_timeouts(
    mock_bluez: MockBluez, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two devices connecting at once, each with its own connect timeout: neither may take the
    other's (bleak-retry-connector reads a module global after an await)."""
    import bleak_retry_connector  # noqa: PLC0415 - only this test wraps them
    from bleak import BleakClient  # noqa: PLC0415

    from drivers.ble.link import BleLink  # noqa: PLC0415

    seen: dict[str, float] = {}
    real_connect = BleakClient.connect

    async def recording_connect(self: BleakClient, **kw: Any) -> None:
        seen[self.address.upper()] = kw["timeout"]
        await real_connect(self, **kw)

    monkeypatch.setattr(BleakClient, "connect", recording_connect)
    # With BlueZ's object manager already running this lookup returns without suspending; on a
    # first connection (or other versions of the library) it is a D-Bus round trip. Make it one.
    real_lookup = bleak_retry_connector.get_connected_devices

    async def lookup_with_a_round_trip(device: Any) -> Any:
        await asyncio.sleep(0.01)
        return await real_lookup(device)

    monkeypatch.setattr(bleak_retry_connector, "get_connected_devices", lookup_with_a_round_trip)
    clock = SystemClock(policy=SyncPolicy.ASSUME_SYNCED)
    addrs = mock_bluez.peripherals[:2]
    straps = [heart_rate_strap(mock_bluez.adapter_of(a)) for a in addrs]
    links = [BleLink(a, "hci0", clock, connect_timeout_s=t) for a, t in zip(addrs, (3.0, 4.0), strict=True)]
    for s in straps:
        await s.start()
    try:
        found = await asyncio.gather(*(link.find(5.0) for link in links))
        assert all(found)
        await asyncio.gather(*(link.connect(d) for link, d in zip(links, found, strict=True) if d is not None))
    finally:
        for link in links:
            await link.close()
        for s in straps:
            await s.stop()
    assert seen == {addrs[0]: 3.0, addrs[1]: 4.0}


def _strap_ecg_uv() -> list[int]:
    """A minute of MIT-BIH 119 as a Polar H10 streams it: 130 Hz, whole microvolts."""
    rec = wfdb.rdrecord(str(Path(__file__).resolve().parents[2] / "hil_fixtures" / "ecg" / "mitdb_119_0s"))
    return [int(v) for v in resample_poly(rec.p_signal[: 360 * 60, 0], 13, 36) * 1000.0]


def _ecg_frames(strap: PolarH10, uv: list[int]) -> list[bytes]:
    """The strap's PMD frames for these samples (uV), 73 a frame, on its running sensor clock."""
    n = PolarH10.FRAME
    return [f for k in range(0, len(uv) - n + 1, n) if (f := strap.frame(samples=uv[k : k + n])) is not None]


async def test_polar_ecg_reconnect_keeps_the_heart_rate_coming(
    mock_bluez: MockBluez, device_ctx: DeviceContext
) -> None:
    """A strap whose link drops comes back in a new session, whose time line numbers the samples
    from 0 again: the pipeline's ECG channel for the strap must go on.  It raised at its first
    decision after the restart, and at every block after it: no heart rate, VF or asystole
    detection for the strap until the daemon restarted (``tests/test_ecg_channel_robustness.py``)."""
    uv = _strap_ecg_uv()
    counter = itertools.count(1)
    setup = PatientSetup("p-test", AlarmSection().limits, {"dev1": "polar-ecg"})
    pipeline = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-test": setup})
    address = mock_bluez.peripherals[0]
    strap = PolarH10(mock_bluez.adapter_of(address))
    rates: list[list[float]] = []
    firsts: list[int] = []
    await strap.peripheral.start()
    try:
        for half in (uv[: len(uv) // 2], uv[len(uv) // 2 :]):  # two sessions of 30 s
            strap.started.clear()
            driver = make_driver(device_ctx, {"driver": "polar-ecg", "address": address})
            frames = _ecg_frames(strap, half)
            async with driver:
                pending = asyncio.ensure_future(take(aiter(driver.readings()), len(frames), within_s=30))
                async with asyncio.timeout(10):
                    await strap.started.wait()
                for frame in frames:
                    strap.peripheral.notify(polar_pmd.DATA, frame)
                blocks = [b for b in await pending if isinstance(b, SampleBlock)]
            firsts.append(blocks[0].first_index)
            session: list[float] = []
            for b in blocks:
                out = pipeline.feed("p-test", b)
                session += [r.value for r in out.accepted if r.vital is Vital.HEART_RATE and r.value is not None]
            rates.append(session)
    finally:
        await strap.peripheral.stop()
    assert firsts == [0, 0]  # the new link's time line starts again
    assert len(rates[0]) > 10 and len(rates[1]) > 10, rates
    assert all(55 < statistics.median(r) < 85 for r in rates), rates  # 119: ~70 /min, PVCs in bigeminy at times
