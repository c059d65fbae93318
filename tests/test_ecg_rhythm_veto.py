"""The organised-rhythm veto's fast path (a backward scan of the last beats, RR intervals sorted
as sample counts) against its definition: the beats of the last ``organised_s`` decided by the
step's end, RR intervals in seconds, their median and spread (hypothesis)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signal.ecg_rhythm import RhythmMonitor, RhythmSettings
from gateway.signal.small_stats import median


def organised_by_definition(beats: list[tuple[int, int]], end: int, fs: float, s: RhythmSettings) -> bool:
    lo = end - round(s.organised_s * fs)
    idx = [i for i, d in beats[-64:] if lo <= i < end and d <= end]
    if len(idx) < 3:
        return False
    rr = [(b - a) / fs for a, b in pairwise(idx)]
    mid = median(rr)
    return mid >= 60.0 / s.organised_max_rate and max(rr) - min(rr) <= s.organised_spread * mid


rates = st.sampled_from([125.0, 128.0, 250.0, 256.0, 360.0, 500.0, 1000.0, 333.3])


@st.composite
def beat_trains(draw: st.DrawFn, ordered: bool) -> tuple[float, list[tuple[int, int]], list[int]]:
    fs = draw(rates)
    n = draw(st.integers(0, 90))  # more than the 64 the monitor keeps, at times
    # RR intervals from very regular to chaotic: around a drawn rate, with a drawn jitter.
    rr = draw(st.integers(int(0.25 * fs), int(2.0 * fs)))
    jitter = draw(st.sampled_from([0, 1, 3, int(0.05 * fs), int(0.3 * fs)]))
    steps = draw(st.lists(st.integers(-jitter, jitter), min_size=n, max_size=n))
    if draw(st.booleans()):
        # Two interval lengths only: an even count's median (the mean of the middle two) then
        # decides against the rate limit or the spread where either middle value alone would not.
        other = draw(st.integers(int(0.25 * fs), int(2.0 * fs))) - rr
        steps = draw(st.lists(st.sampled_from([0, other]), min_size=n, max_size=n))
    index = draw(st.integers(-(10**6), 10**7))  # indices may start below 0
    beats = []
    for k in range(n):
        index += max(1, rr + steps[k]) if ordered else draw(st.integers(-int(fs), int(2 * fs)))
        # The decision comes after the R wave, by up to the look-ahead and a little more.
        beats.append((index, index + draw(st.integers(0, int(0.45 * fs)))))
    first = beats[0][0] if beats else 0
    last = beats[-1][1] if beats else 0
    ends = draw(st.lists(st.integers(first - int(fs), last + int(7 * fs)), min_size=1, max_size=8))
    return fs, beats, ends


spreads = st.sampled_from([0.0, 0.05, 0.25, 1.0])
max_rates = st.sampled_from([40.0, 150.0, 400.0])
spans = st.sampled_from([0.5, 3.0, 5.0, 8.0])


@settings(max_examples=400, deadline=None)
@given(train=st.booleans().flatmap(beat_trains), spread=spreads, max_rate=max_rates, span=spans)
def test_the_veto_is_its_definition(
    train: tuple[float, list[tuple[int, int]], list[int]], spread: float, max_rate: float, span: float
) -> None:
    fs, beats, ends = train
    s = RhythmSettings(organised_s=span, organised_spread=spread, organised_max_rate=max_rate)
    monitor = RhythmMonitor(fs, s)
    for i, d in beats:
        monitor.beat(i, 1.0, d)
    for end in ends:
        assert monitor._organised(end) == organised_by_definition(beats, end, fs, s)


@settings(max_examples=200, deadline=None)
@given(train=beat_trains(ordered=True), spread=spreads, max_rate=max_rates)
def test_regular_trains_hit_both_outcomes_with_the_default_span(
    train: tuple[float, list[tuple[int, int]], list[int]], spread: float, max_rate: float
) -> None:
    # Ends inside the train, where the veto has beats to judge: both answers must agree there too.
    fs, beats, _ = train
    s = RhythmSettings(organised_spread=spread, organised_max_rate=max_rate)
    monitor = RhythmMonitor(fs, s)
    for i, d in beats:
        monitor.beat(i, 1.0, d)
    for _, d in beats[3:]:
        assert monitor._organised(d) == organised_by_definition(beats, d, fs, s)
        assert monitor._organised(d + 1) == organised_by_definition(beats, d + 1, fs, s)


def test_an_even_count_of_intervals_is_judged_on_the_mean_of_the_middle_two() -> None:
    # RR 100, 100, 170, 170 samples at 360 Hz: median 135 (0.375 s), below the 0.4 s of
    # 150 /min, while either middle value alone (100 or 170) would decide otherwise.
    fs = 360.0
    s = RhythmSettings(organised_spread=1.0)
    beats = [(1000, 1040), (1100, 1140), (1200, 1240), (1370, 1410), (1540, 1580)]
    monitor = RhythmMonitor(fs, s)
    for i, d in beats:
        monitor.beat(i, 1.0, d)
    assert not monitor._organised(1600)
    assert not organised_by_definition(beats, 1600, fs, s)
    wider = [(1000, 1040), (1100, 1140), (1200, 1240), (1390, 1430), (1580, 1620)]  # median 145 > 144
    monitor = RhythmMonitor(fs, s)
    for i, d in wider:
        monitor.beat(i, 1.0, d)
    assert monitor._organised(1700)


def test_a_regular_train_is_organised_and_an_irregular_one_is_not() -> None:
    # The property tests above need both answers to occur: here they do, by construction.
    fs = 360.0
    regular = RhythmMonitor(fs)
    irregular = RhythmMonitor(fs)
    for k in range(20):
        regular.beat(1000 + 300 * k, 1.0, 1000 + 300 * k + 40)
        irregular.beat(1000 + 300 * k + (90 if k % 2 else 0), 1.0, 1000 + 300 * k + 130)
    assert regular._organised(7000)
    assert not irregular._organised(7000)
    # Out of order (a caller's own beats): the full scan, same answer as the definition.
    shuffled = RhythmMonitor(fs)
    beats = [(1000 + 300 * k, 1040 + 300 * k) for k in range(20)]
    beats[5], beats[6] = beats[6], beats[5]
    for i, d in beats:
        shuffled.beat(i, 1.0, d)
    assert not shuffled._in_order
    assert shuffled._organised(7000) == organised_by_definition(beats, 7000, fs, RhythmSettings())
