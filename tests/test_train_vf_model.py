"""scripts/train_vf_model.py's operating points (``--points``), read as the detector's parameters."""

from __future__ import annotations

import argparse

import pytest

from gateway.signal.vf_detector import VfParams
from tests.bench_modules import load_bench

trainer = load_bench("train_vf_model", "scripts")


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
