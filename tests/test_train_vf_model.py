"""scripts/train_vf_model.py's operating points (``--points``), read as the detector's parameters."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gateway.signal.vf_detector import VfParams

SCRIPT = Path(__file__).parent.parent / "scripts" / "train_vf_model.py"


def _trainer() -> ModuleType:
    saved = list(sys.path)  # the script puts bench/ on the path for its own imports
    try:
        spec = importlib.util.spec_from_file_location("train_vf_model", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


trainer = _trainer()


def test_an_operating_point_is_the_shipped_parameters_but_for_its_four() -> None:
    assert trainer.operating_point("0.8,7/8,8") == VfParams()
    p = trainer.operating_point("0.85,6/7,10")
    assert (p.threshold, p.raise_steps, p.raise_of, p.clear_steps) == (0.85, 6, 7, 10)
    assert p.confirm_threshold == VfParams().confirm_threshold and p.window_s == VfParams().window_s


@pytest.mark.parametrize(
    "text", ["0.8,7,8", "0.8;7/8;8", "x,7/8,8", "1.2,7/8,8", "0.8,9/8,8", "0.8,0/8,8", "0.8,7/8,0"]
)
def test_a_malformed_or_impossible_point_is_refused_with_the_form_it_wants(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="THRESHOLD"):
        trainer.operating_point(text)


def test_points_without_episodes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        trainer.main(["--points", "0.8,7/8,8"])
    assert e.value.code == 2 and "needs --episodes" in capsys.readouterr().err
