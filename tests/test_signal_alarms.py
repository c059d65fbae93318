"""Alarm engine properties (hypothesis): one raise and one clear per alarm, minimum duration,
hysteresis bounds the number of alarms, technical alarms are idempotent, reload keeps alarms."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.alarms import AlarmEngine, AlarmTransition
from gateway.config.processing import Limit, VitalLimits
from gateway.records import AlarmEvent, Severity, Vital
from gateway.summaries import SummaryAggregator

LOW = Limit(raise_at=90, clear_at=93, min_duration_s=10, severity="high")
LIMITS = {"spo2": VitalLimits(low=LOW)}

samples = st.lists(
    st.tuples(st.floats(0.1, 5.0), st.floats(80.0, 100.0)),  # (time step, value)
    min_size=1,
    max_size=300,
)


def run(engine: AlarmEngine, seq: list[tuple[float, float]]) -> tuple[list[float], list[float], list[AlarmTransition]]:
    t = 0.0
    times, values, out = [], [], []
    for dt, v in seq:
        t += dt
        times.append(t)
        values.append(v)
        out.extend(engine.observe(Vital.SPO2, v, t))
    return times, values, out


@settings(max_examples=200, deadline=None)
@given(samples)
def test_each_alarm_is_one_raise_then_one_clear_with_the_same_id(seq: list[tuple[float, float]]) -> None:
    _, _, out = run(AlarmEngine("p", LIMITS), seq)
    events = [tr.event for tr in out]
    assert events == [AlarmEvent.RAISED, AlarmEvent.CLEARED] * (len(events) // 2) + (
        [AlarmEvent.RAISED] if len(events) % 2 else []
    )
    for raised, cleared in zip(out[::2], out[1::2], strict=False):
        assert raised.alarm_id == cleared.alarm_id
    assert len({tr.alarm_id for tr in out[::2]}) == len(out[::2])
    assert all(tr.severity is Severity.HIGH and tr.condition == "spo2_low" for tr in out)


@settings(max_examples=200, deadline=None)
@given(samples)
def test_raise_needs_min_duration_beyond_and_clear_needs_the_hysteresis_level(
    seq: list[tuple[float, float]],
) -> None:
    times, values, out = run(AlarmEngine("p", LIMITS), seq)
    for tr in out:
        i = times.index(tr.time)
        if tr.event is AlarmEvent.RAISED:
            assert values[i] < LOW.raise_at
            # Every reading in the last min_duration_s was below the limit.
            j = i
            while j > 0 and values[j - 1] < LOW.raise_at:
                j -= 1
            assert times[i] - times[j] >= LOW.min_duration_s
        else:
            assert values[i] >= (LOW.clear_at or LOW.raise_at)


@settings(max_examples=200, deadline=None)
@given(samples)
def test_number_of_alarms_is_bounded_by_excursions_across_the_hysteresis_band(
    seq: list[tuple[float, float]],
) -> None:
    _, values, out = run(AlarmEngine("p", LIMITS), seq)
    # An excursion: from at/above clear_at (or the start) to below raise_at.  Each alarm needs one.
    excursions, armed = 0, True
    for v in values:
        if armed and v < LOW.raise_at:
            excursions += 1
            armed = False
        elif v >= (LOW.clear_at or LOW.raise_at):
            armed = True
    raises = sum(tr.event is AlarmEvent.RAISED for tr in out)
    assert raises <= excursions


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(88.0, 92.9), min_size=1, max_size=500), st.floats(0.5, 3.0))
def test_a_signal_wandering_inside_the_band_raises_at_most_once_and_never_flaps(values: list[float], dt: float) -> None:
    _, _, out = run(AlarmEngine("p", LIMITS), [(dt, v) for v in values])
    assert len(out) <= 1
    assert all(tr.event is AlarmEvent.RAISED for tr in out)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=100))
def test_technical_alarms_follow_edges_of_the_condition(states: list[bool]) -> None:
    engine = AlarmEngine("p", {})
    out: list[AlarmTransition] = []
    for i, active in enumerate(states):
        out.extend(engine.technical("lead_off", active, float(i), device="strap"))
    edges = sum(1 for a, b in zip([False, *states], states, strict=False) if a != b)
    assert len(out) == edges
    assert all(tr.technical for tr in out)


def test_invalid_readings_restart_the_minimum_duration() -> None:
    engine = AlarmEngine("p", LIMITS)
    out = []
    for t in range(0, 30):
        if t % 8 == 7:
            engine.invalid(Vital.SPO2)  # artefact every 8 s: never 10 s of valid low readings
            continue
        out.extend(engine.observe(Vital.SPO2, 85.0, float(t)))
    assert out == []


def test_reload_keeps_an_active_alarm_and_clears_it_once_by_the_new_rule() -> None:
    engine = AlarmEngine("p", LIMITS)
    _, _, out = run(engine, [(1.0, 85.0)] * 15)
    assert [tr.event for tr in out] == [AlarmEvent.RAISED]
    engine.update_limits({"spo2": VitalLimits(low=Limit(raise_at=88, clear_at=89, min_duration_s=5))})
    assert engine.observe(Vital.SPO2, 88.5, 20.0) == []  # still below the old clear level, and...
    cleared = engine.observe(Vital.SPO2, 89.5, 21.0)  # ...cleared by the new one
    assert [tr.event for tr in cleared] == [AlarmEvent.CLEARED]
    assert cleared[0].alarm_id == out[0].alarm_id
    # A removed limit's active alarm still clears once, then the rule is gone for good.
    for t in range(30, 40):  # time goes on: an alarm by the new rule
        engine.observe(Vital.SPO2, 80.0, float(t))
    engine.update_limits({})
    assert [tr.event for tr in engine.observe(Vital.SPO2, 99.0, 100.0)] == [AlarmEvent.CLEARED]
    assert engine.observe(Vital.SPO2, 50.0, 200.0) == [] and engine.observe(Vital.SPO2, 50.0, 300.0) == []


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 600), st.one_of(st.none(), st.floats(30, 110)), st.booleans()),
        max_size=200,
    ),
    st.sampled_from([10.0, 60.0]),
)
def test_summaries_account_for_every_reading_once(rows: list[tuple[float, float | None, bool]], period: float) -> None:
    agg = SummaryAggregator(period)
    out = []
    for t, v, ok in sorted(rows, key=lambda r: r[0]):
        out.extend(agg.add(Vital.SPO2, v, "%", 1_780_000_000.0 + t, "ox", ok))
    out.extend(agg.flush(2_000_000_000.0, partial=True))
    assert sum(s.count + s.rejected for s in out) == len(rows)
    assert sum(s.count for s in out) == sum(1 for _, v, ok in rows if ok and v is not None)
    for s in out:
        assert s.period_start % period == 0 and s.period_end <= s.period_start + period
        if s.count:
            assert s.min is not None and s.mean is not None and s.max is not None
            assert s.min <= s.mean + 1e-9 and s.mean <= s.max + 1e-9
        assert 0.0 <= s.quality <= 1.0
    starts = [s.period_start for s in out]
    assert len(starts) == len(set(starts))


def test_the_clear_record_reports_the_worst_value_of_the_episode() -> None:
    engine = AlarmEngine("p", LIMITS)
    _, _, out = run(engine, [(1.0, v) for v in [89.0] * 12 + [84.0, 86.0, 91.0, 94.0]])
    assert [tr.event for tr in out] == [AlarmEvent.RAISED, AlarmEvent.CLEARED]
    assert out[0].value == 89.0 and out[1].value == 94.0
    assert out[1].detail == "worst 84"
