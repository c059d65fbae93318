"""Second stage of the VF/flutter step classifier: a small gradient-boosted tree ensemble.

A step the logistic model (``vf_detector.VfModel``) calls VF-like stays VF-like only when these trees
agree (``VfParams.confirm_threshold``).  Fitted by ``scripts/train_vf_model.py`` (scikit-learn, at
training time only) on the same steps and features as the logistic model and shipped as
``vf_trees.json``: per tree, flat node lists (feature, threshold, left child, right child, value; a
leaf has feature -1), read here with numpy alone.  Measured leave-records-out on vfdb
(``bench/vf_tree_study.py``, ``train_vf_model.py --episodes``): the false-alarm seconds outside
VF/flutter fall by about a third (Sp_second 89.0 -> 93.1 %) with the same episode sensitivity, at
the cost of a later alarm (median delay 3.2 -> 7.7 s).

Only the few steps the logistic model already calls VF-like are scored here: its early exit, which
spares most steps most features, is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.signal import vf_features

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.intp]

TREES_PATH = Path(__file__).with_name("vf_trees.json")


@dataclass(frozen=True)
class VfTrees:
    """Log-odds = ``base`` + the sum over trees of the leaf each reaches, going left at a node when
    ``f[feature] <= threshold`` (scikit-learn's rule).  The nodes of every tree are held in flat
    arrays, children as indices into them, every leaf pointing at itself: one comparison of all
    nodes at once gives each node's next node, and ``depth`` hops from the roots land on every
    tree's leaf whatever its depth (a dozen array operations a step, not a Python loop a node)."""

    base: float
    roots: IntArray  # index of each tree's root
    feature: IntArray  # per node; a leaf's is 0 (any: its children are itself)
    threshold: FloatArray  # per node; a leaf's is +inf
    left: IntArray
    right: IntArray
    value: FloatArray  # per node; used at the leaves
    depth: int

    def log_odds(self, f: FloatArray) -> float:
        step = np.where(f[self.feature] <= self.threshold, self.left, self.right)
        node = self.roots
        for _ in range(self.depth):
            node = step[node]
        return self.base + float(np.sum(self.value[node]))

    def probability(self, f: FloatArray) -> float:
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, self.log_odds(f)))))


def from_nodes(base: float, trees: list[dict[str, list[Any]]]) -> VfTrees:
    """``VfTrees`` from flat node lists (a tree per dict: ``feature``, ``threshold``, ``left``,
    ``right``, ``value``; feature -1 marks a leaf); raises ValueError on a malformed tree."""
    if not trees:
        raise ValueError("no trees")
    n_features = len(vf_features.FEATURE_NAMES)
    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    depth = 0
    for r, t in enumerate(trees):
        n = len(t["feature"])
        if not n or any(len(t[k]) != n for k in ("threshold", "left", "right", "value")):
            raise ValueError(f"tree {r}: node lists of different lengths")
        at = len(feature)
        roots.append(at)
        depths = [0] * n
        reached = [True] + [False] * (n - 1)
        for i in range(n):
            if not reached[i]:
                raise ValueError(f"tree {r}: node {i} has no parent before it")
            feat = int(t["feature"][i])
            value.append(float(t["value"][i]))
            if feat < 0:
                feature.append(0)
                threshold.append(math.inf)
                left.append(at + i)
                right.append(at + i)
                continue
            lo, hi = int(t["left"][i]), int(t["right"][i])
            if feat >= n_features or not (i < lo < n and i < hi < n) or lo == hi:
                raise ValueError(f"tree {r}: node {i} has feature {feat} and children {lo}, {hi}")
            feature.append(feat)
            threshold.append(float(t["threshold"][i]))
            left.append(at + lo)
            right.append(at + hi)
            for c in (lo, hi):
                reached[c] = True
                depths[c] = depths[i] + 1
        depth = max(depth, *depths)
    return VfTrees(
        float(base),
        np.asarray(roots, dtype=np.intp),
        np.asarray(feature, dtype=np.intp),
        np.asarray(threshold, dtype=np.float64),
        np.asarray(left, dtype=np.intp),
        np.asarray(right, dtype=np.intp),
        np.asarray(value, dtype=np.float64),
        depth,
    )


def load_trees(path: Path = TREES_PATH) -> VfTrees:
    """Read a trees file; raises ValueError when it does not fit the features computed here."""
    doc = json.loads(path.read_text())
    names = tuple(doc["features"])
    if names != vf_features.FEATURE_NAMES:
        raise ValueError(f"{path}: trees' features {names} differ from {vf_features.FEATURE_NAMES}")
    try:
        return from_nodes(float(doc["base"]), doc["trees"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


@cache
def default_trees() -> VfTrees:
    return load_trees()
