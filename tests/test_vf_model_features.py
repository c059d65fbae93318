"""The shipped VF model files against today's feature code: each file records the features of two
fixture excerpts as it was trained on them (``provenance.feature_check``, written by
scripts/train_vf_model.py), and every one must still be the same number, but for those its
``changed_since_training`` lists (and the note explains).  A change to a feature therefore fails
here until the model is retrained (or the change is listed, with the figures for keeping the model).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gateway.signal import vf_features
from gateway.signal.vf_detector import MODEL_PATH
from gateway.signal.vf_trees import TREES_PATH
from tests.bench_modules import load_bench

trainer = load_bench("train_vf_model", "scripts")


@cache
def features_now() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = trainer.feature_check()
    return result


def provenance(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())["provenance"]
    return doc


@pytest.mark.parametrize("path", [MODEL_PATH, TREES_PATH], ids=lambda p: Path(p).name)
def test_the_shipped_model_was_trained_on_the_features_computed_today(path: Path) -> None:
    p = provenance(path)
    problems = trainer.feature_drift(p["feature_check"], features_now(), p["changed_since_training"])
    assert not problems, (
        f"{Path(path).name} was not trained on today's features ({'; '.join(problems)}): retrain it with "
        "scripts/train_vf_model.py, or list the change under provenance.changed_since_training with the "
        "figures for keeping the model"
    )


def test_the_check_covers_every_feature_at_each_training_rate() -> None:
    p = provenance(MODEL_PATH)
    assert {v["fs"] for v in p["feature_check"].values()} == {250.0, 360.0}
    for v in p["feature_check"].values():
        assert tuple(v["mean"]) == tuple(v["std"]) == vf_features.FEATURE_NAMES
        assert v["steps"] > 50
    assert provenance(TREES_PATH)["feature_check"] == p["feature_check"]


def test_a_feature_that_moves_is_named_and_a_listed_one_that_did_not_is_too() -> None:
    now = features_now()
    recorded = copy.deepcopy(now)
    recorded["vfdb_426_615s"]["mean"]["kurtosis"] *= 1 + 1e-5
    assert trainer.feature_drift(recorded, now, {}) == [
        f"vfdb_426_615s: kurtosis mean {recorded['vfdb_426_615s']['mean']['kurtosis']!r} in training, "
        f"{now['vfdb_426_615s']['mean']['kurtosis']!r} now"
    ]
    assert trainer.feature_drift(recorded, now, {"vfdb_426_615s": ["kurtosis"]}) == []
    assert trainer.feature_drift(now, now, {"mitdb_228_0s": ["psr"]}) == [
        "mitdb_228_0s: psr is listed as changed since training but is the same"
    ]
    # Within the tolerance kept for another machine's rounding: the same.
    recorded = copy.deepcopy(now)
    recorded["mitdb_228_0s"]["std"]["tcsc"] *= 1 + 1e-9
    assert trainer.feature_drift(recorded, now, {}) == []


def test_a_fixture_or_step_count_on_one_side_only_is_a_difference() -> None:
    now = features_now()
    fewer = {k: v for k, v in now.items() if k != "mitdb_228_0s"}
    assert trainer.feature_drift(fewer, now, {}) == ["mitdb_228_0s: computed now but not recorded"]
    shorter = copy.deepcopy(now)
    shorter["vfdb_426_615s"]["steps"] -= 1
    assert trainer.feature_drift(shorter, now, {}) == [
        f"vfdb_426_615s: {now['vfdb_426_615s']['steps'] - 1} steps in training, {now['vfdb_426_615s']['steps']} now"
    ]
