"""Alarms by source: a spot-check device's reading raises at once; each device's readings have
their own rules; a late reading changes nothing; the minimum duration counts over readings that
keep coming; ids never repeat; a reload keeps a pending wait; a state saved before rules were kept
per device still clears its alarms.  Through the real pipeline where a source matters."""

from __future__ import annotations

import itertools

from gateway.alarms import AlarmEngine
from gateway.config.processing import AlarmSection, Limit, VitalLimits
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, ClockQuality, Vital, VitalReading

T0 = 1_780_000_000.0
LOW = Limit(raise_at=90, clear_at=93, min_duration_s=10, severity="high")
PULSE = Limit(raise_at=40, clear_at=45, min_duration_s=10, severity="high")


def pipeline(spot: frozenset[str] = frozenset()) -> Pipeline:
    counter = itertools.count(1)
    setup = PatientSetup("p", AlarmSection().limits, {"ox": "nonin2", "spot": "ble-plx-spot", "cuff": "ble-bp"},
                         spot_devices=spot)  # fmt: skip
    return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p": setup})


def feed(p: Pipeline, readings: list[VitalReading]) -> list[AlarmRecord]:
    out = PipelineOutput()
    for r in readings:
        out.extend(p.feed("p", r))
    return [r for r in out.records if isinstance(r, AlarmRecord)]


def reading(device: str, vital: Vital, value: float, t: float) -> VitalReading:
    unit = "%" if vital is Vital.SPO2 else "/min"
    return VitalReading(device, vital, value, unit, T0 + t, ClockQuality.SYNCED)


def test_a_single_low_spot_check_raises_at_once_and_the_next_normal_one_clears() -> None:
    p = pipeline(spot=frozenset({"spot"}))
    alarms = feed(p, [reading("spot", Vital.SPO2, 84.0, 0.0)])
    assert [(a.condition, a.event) for a in alarms] == [("spo2_low", AlarmEvent.RAISED)]
    later = feed(p, [reading("spot", Vital.SPO2, 97.0, 12 * 3600.0)])
    assert [(a.event, a.alarm_id) for a in later] == [(AlarmEvent.CLEARED, alarms[0].alarm_id)]
    # The same reading from a streaming oximeter waits for its minimum duration.
    assert feed(pipeline(spot=frozenset({"spot"})), [reading("ox", Vital.SPO2, 84.0, 0.0)]) == []


def test_another_devices_reading_neither_clears_nor_breaks_an_alarm() -> None:
    engine = AlarmEngine("p", {"pulse_rate": VitalLimits(low=PULSE)})
    raised = []
    for t in range(15):
        raised += engine.observe(Vital.PULSE_RATE, 38.0, float(t), "ox")
        if t == 5:  # a cuff's pulse during the oximeter's wait
            assert engine.observe(Vital.PULSE_RATE, 72.0, float(t), "cuff", immediate=True) == []
    assert [tr.event for tr in raised] == [AlarmEvent.RAISED] and raised[0].time == 10.0
    assert engine.observe(Vital.PULSE_RATE, 72.0, 20.0, "cuff", immediate=True) == []  # not cleared by the cuff
    (cleared,) = engine.observe(Vital.PULSE_RATE, 72.0, 21.0, "ox")
    assert cleared.event is AlarmEvent.CLEARED and cleared.alarm_id == raised[0].alarm_id


def test_a_late_reading_changes_nothing() -> None:
    engine = AlarmEngine("p", {"spo2": VitalLimits(low=LOW)})
    raised = [tr for t in range(12) for tr in engine.observe(Vital.SPO2, 85.0, 3600.0 + t, "ox")]
    assert [tr.event for tr in raised] == [AlarmEvent.RAISED]
    assert engine.observe(Vital.SPO2, 98.0, 0.0, "ox") == []  # buffered an hour: no clear dated before the raise
    assert engine.observe(Vital.SPO2, 98.0, 3612.0, "ox")[0].event is AlarmEvent.CLEARED


def test_the_minimum_duration_does_not_count_a_silence() -> None:
    engine = AlarmEngine("p", {"pulse_rate": VitalLimits(low=PULSE)})
    assert engine.observe(Vital.PULSE_RATE, 40.0 - 1, 0.0, "ox") == []
    assert engine.observe(Vital.PULSE_RATE, 39.0, 1200.0, "ox") == []  # 20 min of silence: the wait starts again
    raised = [tr for t in range(1201, 1212) for tr in engine.observe(Vital.PULSE_RATE, 39.0, float(t), "ox")]
    assert [tr.time for tr in raised] == [1210.0]


def test_an_alarm_raised_again_within_a_millisecond_gets_a_new_id() -> None:
    engine = AlarmEngine("p", {"systolic_bp": VitalLimits(high=Limit(raise_at=180, min_duration_s=0))})
    first = engine.observe(Vital.SYSTOLIC_BP, 190.0, 5.0, "cuff")
    cleared = engine.observe(Vital.SYSTOLIC_BP, 120.0, 5.0, "cuff")
    again = engine.observe(Vital.SYSTOLIC_BP, 195.0, 5.0, "cuff")
    assert [first[0].event, cleared[0].event, again[0].event] == [
        AlarmEvent.RAISED,
        AlarmEvent.CLEARED,
        AlarmEvent.RAISED,
    ]
    assert first[0].alarm_id == cleared[0].alarm_id != again[0].alarm_id


def test_a_reload_keeps_a_pending_wait() -> None:
    engine = AlarmEngine("p", {"spo2": VitalLimits(low=LOW)})
    for t in range(6):
        engine.observe(Vital.SPO2, 85.0, float(t), "ox")
    engine.update_limits({"spo2": VitalLimits(low=LOW), "body_temperature": VitalLimits(high=Limit(raise_at=39))})
    raised = [tr for t in range(6, 12) for tr in engine.observe(Vital.SPO2, 85.0, float(t), "ox")]
    assert [tr.time for tr in raised] == [10.0]  # waiting since t=0, not since the reload


def test_an_alarm_saved_before_rules_were_kept_per_device_clears_once() -> None:
    engine = AlarmEngine("p", {"spo2": VitalLimits(low=LOW)})
    raised = [tr for t in range(12) for tr in engine.observe(Vital.SPO2, 85.0, float(t), "ox")]
    snap = engine.snapshot()
    for item in snap["threshold"]:
        del item["device"]  # as saved by the version before
    restarted = AlarmEngine("p", {"spo2": VitalLimits(low=LOW)})
    restarted.restore(snap)
    assert restarted.active_conditions() == ["spo2_low"]
    (cleared,) = restarted.observe(Vital.SPO2, 97.0, 20.0, "ox")
    assert cleared.event is AlarmEvent.CLEARED and cleared.alarm_id == raised[0].alarm_id
    assert restarted.active_conditions() == []


def test_a_late_reading_does_not_make_no_data_flap() -> None:
    p = pipeline()
    out = PipelineOutput()
    for t in range(0, 600, 1):
        out.extend(p.feed("p", reading("ox", Vital.PULSE_RATE, 70.0, float(t))))
        if t == 400:
            out.extend(p.feed("p", reading("ox", Vital.PULSE_RATE, 70.0, -3600.0)))  # an hour late
        out.extend(p.tick(T0 + t))
    assert not [r for r in out.records if isinstance(r, AlarmRecord) and r.condition == "no_data" and r.device == "ox"]


def test_a_streaming_device_that_never_sends_raises_no_data() -> None:
    """After a start (or a restart), an oximeter that never comes back is alarmed like one that
    stopped; a spot-check device is not (its no-data time is 0 unless configured)."""
    counter = itertools.count(1)
    setup = PatientSetup("p", AlarmSection().limits, {"ox": "nonin2", "cuff": "ble-blood-pressure"},
                         no_data_s={"ox": 300.0, "cuff": 0.0})  # fmt: skip
    p = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p": setup})
    out = PipelineOutput()
    for t in range(0, 400, 10):
        out.extend(p.tick(T0 + t))
    raised = [(r.device, r.time.timestamp() - T0) for r in out.records if isinstance(r, AlarmRecord)]
    assert raised == [("ox", 300.0)]


def test_alarms_of_a_device_or_patient_removed_on_reload_are_cleared() -> None:
    counter = itertools.count(1)
    limits = AlarmSection().limits

    def setups(devices: dict[str, str], *, with_q: bool = True) -> dict[str, PatientSetup]:
        out = {"p": PatientSetup("p", limits, devices)}
        if with_q:
            out["q"] = PatientSetup("q", limits, {"ox-q": "nonin2"})
        return out

    p = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients=setups({"ox": "nonin2", "hr": "x"}))
    raised = []
    for t in range(15):
        raised += feed(
            p, [reading("ox", Vital.PULSE_RATE, 35.0, float(t)), reading("hr", Vital.PULSE_RATE, 35.0, float(t))]
        )
        raised += [
            r
            for r in p.feed("q", reading("ox-q", Vital.PULSE_RATE, 35.0, float(t))).records
            if isinstance(r, AlarmRecord)
        ]
    assert sorted(r.device for r in raised) == ["hr", "ox", "ox-q"]
    out = p.reconfigure(setups({"hr": "x"}, with_q=False), T0 + 20)
    cleared = [r for r in out.records if isinstance(r, AlarmRecord)]
    assert sorted((r.patient, r.device, r.event) for r in cleared) == [
        ("p", "ox", AlarmEvent.CLEARED),
        ("q", "ox-q", AlarmEvent.CLEARED),
    ]
    by_id = {r.alarm_id: r for r in raised}
    assert all(r.alarm_id in by_id and "removed from the config" in r.detail for r in cleared)
    # The device that stays keeps its alarm, and the removed one raises no no_data later.
    later = [r for t in range(20, 1000, 10) for r in p.tick(T0 + t).records if isinstance(r, AlarmRecord)]
    assert not [r for r in later if r.device == "ox"]
