"""The loads bench/daemon_footprint.py runs the daemon with are configurations the daemon takes.

The bench built its fuller hub from an oximeter of every demo patient, and stopped running when
the demo gained a patient with an ECG only: nothing ran it to see."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config.loader import parse_config_text
from tests.bench_modules import load_bench

bench = load_bench("daemon_footprint")


@pytest.mark.parametrize("load", bench.LOADS)
def test_each_load_is_a_valid_configuration(tmp_path: Path, load: str) -> None:
    cfg = bench.daemon_config(load, tmp_path, "mqtt://127.0.0.1:1883")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    parsed = parse_config_text(path.read_text(), file=path)
    devices = [d for p in parsed.patients for d in p.devices]
    demo = yaml.safe_load((Path(__file__).parent.parent / "config" / "demo.yaml").read_text())
    n_demo = sum(len(p["devices"]) for p in demo["patients"])
    assert len(devices) == (n_demo if load == "demo" else n_demo + 4)
    # Every device replays a recording, and it is there (an ECG record is its WFDB header and data).
    recordings = [r for d in devices for r in (d.vitals, d.ecg) if r is not None]
    assert len(recordings) == len(devices)
    for r in recordings:
        assert r.exists() or r.with_name(f"{r.name}.hea").exists(), r


def test_the_fuller_hub_adds_a_cuff_and_a_scale_with_their_spot_checks(tmp_path: Path) -> None:
    cfg = bench.daemon_config("hub", tmp_path, "mqtt://127.0.0.1:1883")
    added = {d["id"]: d for p in cfg["patients"][-2:] for d in p["devices"]}
    assert sorted(added) == ["bp-3b90", "ox-3b90", "ox-88d4", "scale-88d4"]
    cuff = [yaml.safe_load(line) for line in Path(added["bp-3b90"]["vitals"]).read_text().splitlines()]
    assert {c["vital"] for c in cuff} == {"systolic_bp", "diastolic_bp", "pulse_rate"}
    assert cuff[3]["t"] == 30.0  # a reading every 30 s
