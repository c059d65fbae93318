"""bench/vf_false_raise_study.py on worked examples: how a raise outside annotated VF/flutter is
classed, and that its replay of recorded steps is the detector's hysteresis, with the stricter raise
refusing a raise its confident steps do not back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.bench_modules import load_bench

study = load_bench("vf_false_raise_study")
FS = 250.0
S = int(FS)  # one step a second


def recording(prob: list[float], conf: list[float], suppressed: tuple[int, ...] = ()) -> object:
    n = len(prob)
    ends = np.arange(4 * S, (4 + n) * S, S, dtype=np.int64)
    return study.Recording(
        name="x",
        fs=FS,
        n=int(ends[-1]) + S,
        truth=[],
        notes=[],
        ends=ends,
        prob=np.asarray(prob, dtype=np.float64),
        conf=np.asarray(conf, dtype=np.float64),
        organised=np.zeros(n, dtype=bool),
        feats=np.zeros((n, 13)),
        suppressed=[int(ends[i]) for i in suppressed],
        windows=np.zeros((0, 4)),
        beats=np.zeros(0, dtype=np.int64),
        alarms=[],
    )


def test_a_raise_just_before_an_annotated_onset_is_early() -> None:
    truth = [(100 * S, 130 * S)]
    assert study.classify(95 * S, 140 * S, truth, [(0, "(N")], [], FS) == "early"
    # Past the 10 s, or once the alarm is over, it is the rhythm's.
    assert study.classify(85 * S, 140 * S, truth, [(0, "(N")], [], FS) == "N"
    assert study.classify(95 * S, 99 * S, truth, [(0, "(N")], [], FS) == "N"


def test_a_raise_after_a_short_annotated_run_is_that_run_s() -> None:
    truth = [(100 * S, 102 * S)]  # 2 s: too short to count as an episode, still VF/flutter
    assert study.classify(109 * S, 150 * S, truth, [(0, "(N")], [], FS) == "after_vf"
    assert study.classify(113 * S, 150 * S, truth, [(0, "(N")], [], FS) == "N"


def test_annotated_vt_is_vt_and_the_channel_s_vt_alarm_is_marked() -> None:
    notes = [(0, "(N"), (50 * S, "(VT"), (60 * S, "(BI")]
    assert study.classify(55 * S, 70 * S, [], notes, [], FS) == "vt"
    assert study.classify(62 * S, 70 * S, [], notes, [], FS) == "BI"
    assert study.classify(62 * S, 70 * S, [], notes, [(54 * S, 62 * S)], FS) == "BI+vt_alarm"  # the VF raise ended it


def test_false_raises_allow_the_tolerance_after_an_episode() -> None:
    r = recording([0.0], [0.0])
    r.truth = [(10 * S, 20 * S)]
    alarms = [(15 * S, 30 * S), (23 * S, 30 * S), (25 * S, 30 * S)]
    assert study.false_raises(r, alarms) == [(25 * S, 30 * S)]  # 4 s after the end is still the episode's


def test_the_replay_is_the_detector_s_hysteresis() -> None:
    # 7 VF-like steps of 8 raise (7 of 8); 8 VF-free steps in a row clear.
    prob = [0.1] * 3 + [0.95] * 10 + [0.1] * 10
    conf = [0.0] * 3 + [0.7] * 10 + [0.0] * 10
    r = recording(prob, conf)
    alarms = study.replay(r, r.prob, r.conf)
    assert alarms == [(int(r.ends[9]), int(r.ends[20]))]


def test_the_stricter_raise_needs_confident_steps_and_holds_on_the_shipped_evidence() -> None:
    prob = [0.95] * 12 + [0.1] * 10
    unsure = [0.7] * 12 + [0.0] * 10
    r = recording(prob, unsure)
    assert study.replay(r, r.prob, r.conf, (3, 0.9)) == []
    # Three confident steps, the third one step after the usual count is reached: raised there.
    sure = [0.7] * 5 + [0.95] * 3 + [0.7] * 4 + [0.0] * 10
    r = recording(prob, sure)
    assert study.replay(r, r.prob, r.conf) == [(int(r.ends[6]), int(r.ends[19]))]
    assert study.replay(r, r.prob, r.conf, (3, 0.9)) == [(int(r.ends[7]), int(r.ends[19]))]


def test_a_suppression_empties_the_raise_count() -> None:
    prob = [0.95] * 10
    r = recording(prob, [0.95] * 10, suppressed=(4,))
    # Steps 0-4 counted, then the suppression at step 4's end: 7 more are needed, steps 5-11.
    assert study.replay(r, r.prob, r.conf) == []
    r = recording([0.95] * 12, [0.95] * 12, suppressed=(4,))
    assert study.replay(r, r.prob, r.conf) == [(int(r.ends[11]), r.n)]


def test_a_real_excerpt_is_recorded_and_its_replay_is_the_channel_s_own_alarms() -> None:
    # The study wraps private steps of the channel's VF detector to record them; when their
    # signatures change it breaks with a TypeError (as it did once it was not run for a while).
    # On real VF (vfdb 426 and 429), the replay of what it recorded must raise and clear exactly
    # where the channel itself did.
    fixtures = Path(__file__).parent.parent / "hil_fixtures" / "ecg_vf"
    for name in ("vfdb_426_615s", "vfdb_429_1835s"):
        r = study.record(fixtures / name, fixtures, None, None)
        assert r.truth, name  # the excerpt holds annotated VF
        assert len(r.ends) == len(r.prob) == len(r.feats) > 50  # a step a second
        assert r.alarms, name
        assert study.replay(r, r.prob, r.conf) == r.alarms, name
