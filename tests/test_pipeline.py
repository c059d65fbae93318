"""The pipeline fed by the real replay driver on the recorded fixtures."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from drivers.replay import ReplayDriver
from drivers.replay_spec import ReplaySettings
from gateway.clock import ManualClock
from gateway.config.processing import AlarmSection
from gateway.driver_api import DeviceContext, DriverFinished
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import (
    AlarmEvent,
    AlarmRecord,
    DeviceFlag,
    DeviceStatusRecord,
    SampleBlock,
    SummaryRecord,
    Vital,
    VitalReading,
)

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
T0 = 1_780_000_000.0


async def _replay(settings: ReplaySettings, pipeline: Pipeline, patient: str, tmp_path: Path) -> PipelineOutput:
    ctx = DeviceContext(settings.id, patient, ManualClock(), tmp_path, base_dir=FIXTURES)
    total = PipelineOutput()
    try:
        async with ReplayDriver(ctx, settings) as drv:
            async for reading in drv.readings():
                total.extend(pipeline.feed(patient, reading))
    except DriverFinished:
        pass
    total.extend(pipeline.flush(1e12))
    return total


def _pipeline() -> Pipeline:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"ox": "replay"})
    return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})


async def test_desaturation_raises_and_clears_one_alarm(tmp_path: Path) -> None:
    settings = ReplaySettings(
        id="ox", vitals=Path("vitals/patient-a.jsonl"), speed=0, start_time="2026-03-01T08:00:00+00:00"
    )  # type: ignore[arg-type]
    out = await _replay(settings, _pipeline(), "p-a", tmp_path)
    alarms = [r for r in out.records if isinstance(r, AlarmRecord)]
    spo2 = [a for a in alarms if a.condition == "spo2_low"]
    assert [a.event for a in spo2] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert spo2[0].alarm_id == spo2[1].alarm_id
    assert spo2[0].value is not None and spo2[0].value < 90
    # desaturation starts at t=120 s; the minimum duration is 10 s once below 90 %
    raised_at = spo2[0].time.timestamp() - settings.start_time.timestamp()  # type: ignore[union-attr]
    assert 120 < raised_at < 150
    sensor = [a for a in alarms if a.condition == "sensor_off"]
    assert [a.event for a in sensor] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert any(a.condition == "body_temperature_high" for a in alarms)


async def test_summaries_cover_the_recording_and_reject_artifacts(tmp_path: Path) -> None:
    settings = ReplaySettings(
        id="ox", vitals=Path("vitals/patient-a.jsonl"), speed=0, start_time="2026-03-01T08:00:00+00:00"
    )  # type: ignore[arg-type]
    out = await _replay(settings, _pipeline(), "p-a", tmp_path)
    spo2 = [r for r in out.records if isinstance(r, SummaryRecord) and r.vital is Vital.SPO2]
    assert len(spo2) == 5  # 300 s in 60 s periods
    assert sum(s.count for s in spo2) + sum(s.rejected for s in spo2) == 300
    assert all(s.min is not None and s.min >= 40 for s in spo2)
    assert sum(s.rejected for s in spo2) >= 15  # sensor-off spell and flagged artefacts
    keys = [r.key for r in out.records]
    assert len(keys) == len(set(keys))
    assert any(isinstance(r, DeviceStatusRecord) for r in out.records)


async def test_ecg_blocks_count_as_data_and_keep_sample_continuity(tmp_path: Path) -> None:
    settings = ReplaySettings(id="strap", ecg=Path("ecg/mitdb_119_0s"), speed=0, block_ms=250)
    ctx = DeviceContext("strap", "p-a", ManualClock(), tmp_path, base_dir=FIXTURES)
    n = expected = 0
    try:
        async with ReplayDriver(ctx, settings) as drv:
            async for r in drv.readings():
                if hasattr(r, "samples"):
                    assert r.first_index == expected
                    expected += len(r.samples)
                    n += 1
    except DriverFinished:
        pass
    assert expected == 108000 and n == 1200


def test_no_data_alarm_only_for_streaming_devices() -> None:
    counter = itertools.count(1)
    setup = PatientSetup(
        "p-a", {}, {"ox": "nonin2", "cuff": "ble-blood-pressure"}, no_data_s={"ox": 300.0, "cuff": 0.0}
    )
    pipe = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})
    t0 = 1_800_000_000.0
    for dev, vital, value in (("ox", Vital.SPO2, 97.0), ("cuff", Vital.SYSTOLIC_BP, 120.0)):
        pipe.feed("p-a", VitalReading(dev, vital, value, "%", t0))
    raised = [r for r in pipe.tick(t0 + 301).records if isinstance(r, AlarmRecord)]
    assert [(a.condition, a.device, a.event) for a in raised] == [("no_data", "ox", AlarmEvent.RAISED)]
    assert not [r for r in pipe.tick(t0 + 86_400).records if isinstance(r, AlarmRecord)]


def test_spot_check_devices_do_not_stream_by_default() -> None:
    from gateway.config.loader import parse_config_text  # noqa: PLC0415
    from gateway.daemon import patient_setups  # noqa: PLC0415

    text = """
gateway: {id: gw}
upstream: {url: "mqtt://127.0.0.1"}
patients:
  - id: p-a
    devices:
      - {id: cuff, driver: ble-blood-pressure, address: "C4:7C:8D:6A:12:3F"}
      - {id: strap, driver: ble-heart-rate, address: "C4:7C:8D:6A:12:40"}
      - {id: scale, driver: ble-weight, address: "C4:7C:8D:6A:12:41", no_data_minutes: 1440}
"""
    cfg = parse_config_text(text, file=Path("t.yaml"))
    assert dict(patient_setups(cfg)["p-a"].no_data_s) == {"cuff": 0.0, "strap": 300.0, "scale": 86_400.0}


def test_close_device_emits_the_periods_holding_its_values_at_once() -> None:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", {}, {"meter": "ble-glucose", "ox": "nonin2"})
    pipe = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})
    t0 = 1_800_000_000.0
    assert not pipe.feed("p-a", VitalReading("meter", Vital.GLUCOSE, 95.0, "mg/dL", t0)).records
    pipe.feed("p-a", VitalReading("ox", Vital.SPO2, 97.0, "%", t0))
    out = pipe.close_device("p-a", "meter")
    assert [(r.vital, r.count, r.mean) for r in out.records if isinstance(r, SummaryRecord)] == [
        (Vital.GLUCOSE, 1, 95.0)
    ]
    # A second value in the same period makes a second summary of that period, not a lost one.
    pipe.feed("p-a", VitalReading("meter", Vital.GLUCOSE, 101.0, "mg/dL", t0 + 5))
    later = [r for r in pipe.flush(t0 + 10).records if isinstance(r, SummaryRecord) and r.vital is Vital.GLUCOSE]
    assert [(r.count, r.mean) for r in later] == [(1, 101.0)]
    assert later[0].period_start == out.records[0].period_start  # type: ignore[union-attr]


def test_snapshot_restores_raised_alarms_and_open_summaries() -> None:
    limits = AlarmSection().limits
    counter = itertools.count(1)

    def make() -> Pipeline:
        setup = PatientSetup("p-a", limits, {"ox": "nonin2"})
        return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})

    t0 = 1_800_000_000.0
    before = make()
    raised = []
    for i in range(15):  # below 90 % long enough to raise, then a few values to keep the period open
        out = before.feed("p-a", VitalReading("ox", Vital.PULSE_RATE, 30.0, "/min", t0 + i))
        raised += [r for r in out.records if isinstance(r, AlarmRecord)]
    assert [(a.condition, a.event) for a in raised] == [("pulse_rate_low", AlarmEvent.RAISED)]
    blob = before.snapshot("p-a")
    assert blob is not None

    after = make()  # a restarted daemon
    assert after.restore("p-a", blob)
    assert not after.restore("p-a", b"{not json")
    out = after.feed("p-a", VitalReading("ox", Vital.PULSE_RATE, 70.0, "/min", t0 + 20))
    cleared = [r for r in out.records if isinstance(r, AlarmRecord)]
    assert [(a.alarm_id, a.event) for a in cleared] == [(raised[0].alarm_id, AlarmEvent.CLEARED)]
    assert cleared[0].detail == "worst 30"
    summary = [r for r in after.flush(t0 + 60).records if isinstance(r, SummaryRecord)]
    assert [(s.count, s.min, s.max) for s in summary] == [(16, 30.0, 70.0)]


def _block(channel: str, t: float, fs: float, n: int, flags: frozenset[DeviceFlag], samples: Any = None) -> SampleBlock:
    data = np.zeros(n) if samples is None else samples
    return SampleBlock(
        "ox", channel, fs, t, data, "mV" if channel == "ecg" else "1", first_index=round(t * fs), flags=flags
    )


def test_waveform_samples_alone_are_no_billing_evidence() -> None:
    """A probe or strap left powered on the nightstand sends samples (flat, sensor off, lead off):
    the device is there (no "no data" alarm), but no day of physiologic data is."""
    pipeline, out = _pipeline(), PipelineOutput()
    for k in range(40):
        out.extend(pipeline.feed("p-a", _block("pleth", T0 + k, 75.0, 75, frozenset({DeviceFlag.SENSOR_OFF}))))
        out.extend(pipeline.feed("p-a", _block("ecg", T0 + k, 250.0, 250, frozenset({DeviceFlag.LEAD_OFF}))))
    assert out.evidence == []


async def test_an_ecg_gives_billing_evidence_through_the_readings_made_from_its_beats(tmp_path: Path) -> None:
    settings = ReplaySettings(id="ox", ecg=Path("ecg/mitdb_119_0s"), speed=0, block_ms=250)
    out = await _replay(settings, _pipeline(), "p-a", tmp_path)
    assert out.evidence
    assert {e.time for e in out.evidence} <= {r.time for r in out.accepted}
