"""Readings a driver gets wrong are set aside with the reason, and nothing a driver sends breaks the
pipeline (``gateway.reading_checks``).  Found by the property test below: a NaN or out-of-range
time (``datetime.fromtimestamp``), a sample rate of 0 (a division) or NaN, a battery level of NaN
in a status record (the JSON encoder refuses it)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.replay import RecordingError, parse_vitals_line
from gateway.config.processing import AlarmSection, EvidenceSection
from gateway.pipeline import PatientSetup, Pipeline
from gateway.reading_checks import LATEST_S, MAX_SAMPLE_RATE_HZ, unusable
from gateway.readings import (
    VITAL_UNITS,
    ClockQuality,
    DeviceEvent,
    DeviceFlag,
    DeviceState,
    SampleBlock,
    Vital,
    VitalReading,
)
from gateway.records import DeviceStatusRecord
from tests.daemon_harness import events_named, replay_device, write_config

T = 1.75e9
ROOT = Path(__file__).resolve().parent.parent


def _block(fs: float = 250.0, t: float = T, samples: Any = None) -> SampleBlock:
    return SampleBlock("strap", "ecg", fs, t, np.zeros(25) if samples is None else samples, "mV")


def test_unusable_worked_examples() -> None:
    assert unusable(VitalReading("ox", Vital.SPO2, 97.0, "%", T)) is None
    assert unusable(VitalReading("ox", Vital.SPO2, math.nan, "%", T)) is None  # a value is judged later, and kept
    assert unusable(VitalReading("ox", Vital.SPO2, 97.0, "%", 0.0)) is None  # a Pi's clock before NTP: flagged, kept
    nan_time = VitalReading("ox", Vital.SPO2, 97.0, "%", math.nan)
    assert unusable(nan_time) == ("time", "nan is not a Unix time from 1970 to 9999")
    assert unusable(DeviceEvent("ox", DeviceState.CONNECTED, LATEST_S))[0] == "time"  # type: ignore[index]
    assert unusable(DeviceEvent("ox", DeviceState.CONNECTED, -1.0))[0] == "time"  # type: ignore[index]
    assert unusable(_block()) is None and unusable(_block(fs=MAX_SAMPLE_RATE_HZ)) is None
    for fs in (0.0, -250.0, math.nan, math.inf, 2 * MAX_SAMPLE_RATE_HZ):
        assert unusable(_block(fs=fs))[0] == "sample_rate_hz", fs  # type: ignore[index]
    assert unusable(_block(samples=np.zeros((2, 25)))) == ("samples", "not a one-dimensional array")
    assert unusable(_block(t=math.inf))[0] == "first_sample_time"  # type: ignore[index]


def _pipeline() -> Pipeline:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"ox": "replay", "strap": "replay", "bp": "replay"})
    return Pipeline(
        gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup}, evidence=EvidenceSection()
    )


def test_a_reading_set_aside_says_why_and_a_nan_battery_is_left_out() -> None:
    pl = _pipeline()
    out = pl.feed("p-a", VitalReading("ox", Vital.SPO2, 97.0, "%", math.nan))
    assert out.rejected == [("ox", "time", "nan is not a Unix time from 1970 to 9999")] and not out.records
    out = pl.feed("p-a", _block(fs=0.0))
    assert [r[:2] for r in out.rejected] == [("strap", "sample_rate_hz")]
    # A status event keeps its state; a battery level that is no number is not one.
    out = pl.feed("p-a", DeviceEvent("bp", DeviceState.CONNECTED, T, battery_pct=math.nan))
    status = [r for r in out.records if isinstance(r, DeviceStatusRecord)]
    assert len(status) == 1 and status[0].battery_pct is None and not out.rejected
    json.loads(status[0].model_dump_json())
    out = pl.feed("p-a", DeviceEvent("bp", DeviceState.CONNECTED, T + 1, battery_pct=5.0))
    assert any(getattr(r, "condition", None) == "battery_low" for r in out.records)


_REC = wfdb.rdrecord(str(ROOT / "hil_fixtures" / "ecg" / "vfdb_424_1200s"))
_ECG = np.ascontiguousarray(_REC.p_signal[:, 0])
_DEVICES = ["ox", "strap", "bp"]
_VALUES = st.one_of(st.floats(), st.none(), st.sampled_from([0.0, -1.0, 97.0, 60.0, 300.0]))
_TIMES = st.one_of(
    st.floats(T, T + 3600), st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1e10, 1e15, LATEST_S])
)
_FLAGS = st.frozensets(st.sampled_from(list(DeviceFlag)), max_size=2)
_VITAL = st.builds(
    VitalReading,
    st.sampled_from(_DEVICES),
    st.sampled_from(list(Vital)),
    _VALUES,
    st.one_of(st.sampled_from(sorted(set(VITAL_UNITS.values()))), st.text(max_size=4)),
    _TIMES,
    st.sampled_from(list(ClockQuality)),
    _FLAGS,
)
_EVENT = st.builds(
    DeviceEvent,
    st.sampled_from(_DEVICES),
    st.sampled_from(list(DeviceState)),
    _TIMES,
    st.text(max_size=12),
    st.one_of(st.none(), st.floats()),
)


@st.composite
def _blocks(draw: st.DrawFn) -> SampleBlock:
    n = draw(st.integers(0, 600))
    start = draw(st.integers(0, len(_ECG) - 700))
    s = _ECG[start : start + n] * draw(st.sampled_from([1.0, 1000.0, 1e200, 0.0]))
    if draw(st.booleans()):
        s[:: draw(st.integers(1, 50))] = draw(st.sampled_from([np.nan, np.inf]))
    return SampleBlock(
        draw(st.sampled_from(_DEVICES)),
        draw(st.sampled_from(["ecg", "pleth", "resp", ""])),
        draw(st.sampled_from([250.0, 130.0, 75.0, 0.0, math.nan, 1e9])),
        draw(_TIMES),
        s,
        draw(st.sampled_from(["mV", "uV", "1", ""])),
        first_index=draw(st.integers(0, 10**7)),
        gap_before=draw(st.booleans()),
        flags=draw(_FLAGS),
        pace=tuple(draw(st.lists(st.integers(-10, 700), max_size=3))),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_VITAL, _EVENT, _blocks()), min_size=1, max_size=60))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nothing_a_driver_sends_breaks_the_pipeline(readings: list[Any]) -> None:
    pl = _pipeline()
    for r in readings:
        out = pl.feed("p-a", r)
        for rec in out.records:
            json.loads(rec.model_dump_json())  # what the outbox stores: every record encodes
        assert len(out.rejected) <= 1
    for rec in pl.flush(T + 7200).records:
        json.loads(rec.model_dump_json())


def test_a_recording_whose_time_is_no_number_is_refused_with_its_line() -> None:
    with pytest.raises(RecordingError, match="line 7: 't' must be a finite number"):
        parse_vitals_line('{"t": NaN, "vital": "spo2", "value": 97}', 7)
    with pytest.raises(RecordingError, match="line 8: 't' must be a finite number"):
        parse_vitals_line('{"t": Infinity, "event": "connected"}', 8)


async def test_the_journal_names_the_device_whose_readings_are_set_aside(tmp_path: Path, daemon_factory: Any) -> None:
    # A recording whose last readings lie beyond year 9999: a driver's time gone wrong.
    rows = [{"t": i, "vital": "spo2", "value": 97.0} for i in range(20)]
    rows += [{"t": 1e12 + i, "vital": "spo2", "value": 97.0} for i in range(12)]
    vitals = tmp_path / "odd.jsonl"
    vitals.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = write_config(
        tmp_path, broker_url="mqtt://127.0.0.1:9", patients={"p-a": [replay_device("ox-a", vitals=vitals, speed=0)]}
    )
    d = daemon_factory(cfg)
    d.start()
    for _ in range(150):
        if len(events_named(d.log_events(), "reading_rejected")) >= 2:
            break
        await asyncio.sleep(0.2)
    rejected = events_named(d.log_events(), "reading_rejected")
    assert d.stop() == 0
    # The 1st and the 10th of the 12 are logged, not every one.
    assert [(e["device"], e["field"], e["count"], e["level"]) for e in rejected] == [
        ("ox-a", "time", 1, "warning"),
        ("ox-a", "time", 10, "warning"),
    ]
    assert "is not a Unix time" in rejected[0]["reason"] and rejected[0]["patient"] == "p-a"
    assert not events_named(d.log_events(), "pipeline_error")
