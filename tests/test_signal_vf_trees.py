"""The VF detector's second stage: the shipped tree ensemble is read and walked as scikit-learn
walks it (checked against a plain walk of the node lists), malformed files are refused, and a
step is VF-like only when both the logistic model and the trees say so."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.signal import vf_features
from gateway.signal.vf_detector import VfDetector, VfParams
from gateway.signal.vf_trees import TREES_PATH, VfTrees, default_trees, from_nodes, load_trees
from tests.bench_modules import load_bench

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "hil_fixtures"
N_FEATURES = len(vf_features.FEATURE_NAMES)
DOC = json.loads(TREES_PATH.read_text())


def plain_log_odds(doc: dict[str, Any], f: list[float]) -> float:
    """The node lists walked one tree at a time, as scripts/train_vf_model.py checks them."""
    total = float(doc["base"])
    for t in doc["trees"]:
        i = 0
        while t["feature"][i] >= 0:
            i = t["left"][i] if f[t["feature"][i]] <= t["threshold"][i] else t["right"][i]
        total += t["value"][i]
    return total


def constant(log_odds: float) -> VfTrees:
    """Trees that say the same of every step."""
    return from_nodes(log_odds, [{"feature": [-1], "threshold": [0.0], "left": [0], "right": [0], "value": [0.0]}])


def test_shipped_trees_carry_their_provenance_and_fit_the_features() -> None:
    assert DOC["features"] == list(vf_features.FEATURE_NAMES)
    assert DOC["provenance"]["trainer"] == "scripts/train_vf_model.py"
    assert "HistGradientBoostingClassifier" in DOC["provenance"]["fitted_with"]
    trees = default_trees()
    assert len(trees.roots) == len(DOC["trees"]) and 1 <= trees.depth <= 3


_thresholds = sorted({v for t in DOC["trees"] for f, v in zip(t["feature"], t["threshold"], strict=True) if f >= 0})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(-20.0, 100.0, allow_nan=False),
            st.sampled_from(_thresholds),  # on a threshold: goes left
        ),
        min_size=N_FEATURES,
        max_size=N_FEATURES,
    )
)
def test_numpy_walk_equals_the_plain_walk_of_the_node_lists(f: list[float]) -> None:
    got = default_trees().log_odds(np.asarray(f))
    assert got == pytest.approx(plain_log_odds(DOC, f), abs=1e-12)


def test_a_feature_on_a_threshold_goes_left() -> None:
    tree = {"feature": [3, -1, -1], "threshold": [0.5, 0.0, 0.0], "left": [1, 0, 0], "right": [2, 0, 0]}
    trees = from_nodes(0.25, [{**tree, "value": [0.0, -1.0, 2.0]}])
    f = np.zeros(N_FEATURES)
    for v, want in ((0.5, -0.75), (math.nextafter(0.5, 1.0), 2.25), (-3.0, -0.75)):
        f[3] = v
        assert trees.log_odds(f) == want
    # Leaves at different depths: each tree's walk stops at its own leaf.
    deep = {
        "feature": [0, -1, 1, -1, -1],
        "threshold": [0.0, 0.0, 0.0, 0.0, 0.0],
        "left": [1, 0, 3, 0, 0],
        "right": [2, 0, 4, 0, 0],
        "value": [0.0, 1.0, 0.0, 10.0, 100.0],
    }
    both = from_nodes(0.0, [deep, {**tree, "value": [0.0, -1.0, 2.0]}])
    assert both.depth == 2
    f = np.zeros(N_FEATURES)
    f[0], f[1], f[3] = 1.0, 1.0, 1.0
    assert both.log_odds(f) == 102.0
    f[0] = -1.0
    assert both.log_odds(f) == 3.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(features=d["features"][:-1]), "differ"),
        (lambda d: d["trees"][0]["left"].__setitem__(0, 0), "children"),  # a loop back to the root
        (lambda d: d["trees"][0]["right"].__setitem__(0, 10_000), "children"),
        (lambda d: d["trees"][0]["feature"].__setitem__(0, N_FEATURES), "feature"),
        (lambda d: d["trees"][0]["value"].pop(), "lengths"),
    ],
)
def test_a_trees_file_that_does_not_fit_is_refused(tmp_path: Path, change: Any, match: str) -> None:
    doc = json.loads(TREES_PATH.read_text())
    change(doc)
    bad = tmp_path / "trees.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=match):
        load_trees(bad)


def _vf_excerpt() -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / "ecg_vf/vfdb_426_615s"), channels=[0])  # sinus, VF from 30 s
    return np.nan_to_num(rec.p_signal[:, 0]), float(rec.fs)


def test_a_step_is_vf_like_only_when_the_logistic_model_and_the_trees_agree() -> None:
    x, fs = _vf_excerpt()
    p = VfParams()
    shipped = VfDetector(fs).feed(x)
    # The trees are asked exactly where the logistic model reaches its threshold...
    assert any(s.probability >= p.threshold for s in shipped.steps)
    for s in shipped.steps:
        asked = s.probability >= p.threshold
        assert math.isnan(s.confirmation) != asked and (not asked or 0.0 <= s.confirmation <= 1.0)
    assert [s.vf_like for s in shipped.steps] == [
        s.probability >= p.threshold and s.confirmation >= p.confirm_threshold for s in shipped.steps
    ]
    assert shipped.changes  # the VF of the excerpt is still alarmed
    # ...trees that always agree leave the logistic model's decisions, trees that never do, none.
    agree = VfDetector(fs, trees=constant(50.0)).feed(x)
    assert [s.vf_like for s in agree.steps] == [s.probability >= p.threshold for s in shipped.steps]
    never = VfDetector(fs, trees=constant(-50.0)).feed(x)
    assert not any(s.vf_like for s in never.steps) and not never.changes
    assert [s.probability for s in never.steps] == [s.probability for s in shipped.steps]


def test_every_step_scored_in_full_carries_its_confirmation() -> None:
    x, fs = _vf_excerpt()
    det = VfDetector(fs)
    det.check_every_step = True
    steps = det.feed(x).steps
    loud = [s for s in steps if s.recent_peak_mv > 0.2]
    assert loud and all(0.0 <= s.confirmation <= 1.0 for s in loud)
    assert [s.vf_like for s in steps] == [s.vf_like for s in VfDetector(fs).feed(x).steps]


def test_a_sweep_replay_of_recorded_steps_needs_the_trees_too() -> None:
    # bench/vf_sweep.py records each step's probability and confirmation once and replays the
    # detector's decisions from them: the alarms must be those of the streaming detector.
    sweep = load_bench("vf_sweep")
    x, fs = _vf_excerpt()
    recorder = VfDetector(fs)
    recorder.check_every_step = True
    steps = recorder.feed(x).steps
    live = VfDetector(fs).feed(x).changes
    ends = np.asarray([s.end_index for s in steps], dtype=np.int64)
    prob = np.asarray([s.probability for s in steps])
    organised = np.zeros(len(steps), dtype=bool)
    confirm = np.asarray([s.confirmation for s in steps])
    rec = sweep.Recording("426", len(x), fs, [], ends, prob, organised, confirm)
    assert live and [a for a, _ in sweep.replay(rec, VfParams())] == [c.index for c in live if c.active]
    turned_down = np.where(prob >= VfParams().threshold, 0.0, confirm)  # trees that never agree
    none = sweep.Recording("426", len(x), fs, [], ends, prob, organised, turned_down)
    assert sweep.replay(none, VfParams()) == []


def test_the_sweep_records_a_real_excerpt_through_the_whole_channel() -> None:
    # bench/vf_sweep.py's ``record`` wraps the channel's VF detector (``feed``, ``suppress``) to log
    # every step; its replay must raise and clear where the channel itself did (vfdb 426 and 429),
    # as bench/ecg_vf.py streams it.
    sweep, ecg_vf = load_bench("vf_sweep"), load_bench("ecg_vf")
    for name in ("vfdb_426_615s", "vfdb_429_1835s"):
        path = FIXTURES / "ecg_vf" / name
        rec = sweep.record(path, path.parent, None, None)
        alarms = ecg_vf.alarm_intervals(wfdb.rdrecord(str(path)).p_signal[:, 0], rec.fs, 0.1)
        assert alarms, name
        assert [a for a, _ in sweep.replay(rec, VfParams())] == [a for a, _ in alarms], name
