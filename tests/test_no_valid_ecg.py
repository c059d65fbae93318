"""The "no valid ECG" technical alarm's delay and hysteresis, window verdict by window verdict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.signal.no_valid_ecg import NoValidEcgAlarm, Verdict

G, N, X, V = Verdict.GOOD, Verdict.NOISY, Verdict.NO_SIGNAL, Verdict.NEITHER
verdicts = st.lists(st.sampled_from([G, N, X, V]), max_size=200)


def run(seq: list[Verdict], alarm: NoValidEcgAlarm | None = None) -> list[tuple[int, bool]]:
    a = alarm or NoValidEcgAlarm()
    return [(i, r) for i, v in enumerate(seq) if (r := a.window(v)) is not None]


def test_worked_examples() -> None:
    assert run([G, N, G, G, N, G]) == []  # isolated noisy windows: beats held, no alarm
    assert run([G, N, G, N]) == [(3, True)]  # two of the last three
    assert run([G, N, N, G, G, G, G]) == [(2, True), (6, False)]  # cleared by the fourth good window
    assert run([G, X]) == [(1, True)]  # a lead off: at once
    # Bursts every 5 windows, two noisy each: one alarm for the whole stretch, not one per burst.
    assert run([N, N, G, G, G] * 6 + [G]) == [(1, True), (30, False)]
    # A window that is neither (noise read during VT) adds to no raise and breaks a good run.
    assert run([G, N, V, V, N]) == []
    assert run([N, N, G, G, V, G, G, G, G]) == [(1, True), (8, False)]


@given(verdicts)
def test_raises_and_clears_alternate_and_each_has_its_cause(seq: list[Verdict]) -> None:
    changes = run(seq)
    assert [r for _, r in changes] == [k % 2 == 0 for k in range(len(changes))]
    for i, raised in changes:
        if raised:
            recent = seq[max(0, i - 2) : i + 1]
            assert seq[i] is X or (seq[i] is N and recent.count(N) >= 2)
        else:
            assert seq[i - 3 : i + 1] == [G] * 4


@given(verdicts)
def test_a_single_noisy_window_among_good_ones_never_raises(seq: list[Verdict]) -> None:
    # No two noisy windows within three, no flat one: nothing to raise.
    spaced = [v for v in seq if v is not X]
    for i in range(len(spaced)):
        if spaced[i] is N and N in spaced[i + 1 : i + 3]:
            spaced[i] = G
    assert run(spaced) == []


@given(verdicts, verdicts)
def test_end_clears_at_once_and_forgets_the_noise(before: list[Verdict], after: list[Verdict]) -> None:
    a = NoValidEcgAlarm()
    run(before, a)
    was = a.raised
    assert a.end() is was and not a.raised
    # One noisy window after the end is not "two of the last three" with noise from before it.
    assert a.window(N) is None


def test_restart_keeps_the_state_and_nothing_else() -> None:
    a = NoValidEcgAlarm()
    run([G, N], a)
    a.restart(raised=True)
    assert run([G, G, G, G], a) == [(3, False)]
    a.restart(raised=False)
    assert a.window(N) is None


@pytest.mark.parametrize(("bad", "of", "clear"), [(0, 3, 4), (4, 3, 4), (2, 3, 0)])
def test_impossible_settings_are_refused(bad: int, of: int, clear: int) -> None:
    with pytest.raises(ValueError, match="bad_windows"):
        NoValidEcgAlarm(bad, of, clear)
