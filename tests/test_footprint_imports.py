"""What the daemon must never load: plotting and data-science packages, all of scipy.signal, and
the heavy corners of numpy and cryptography that the signal path and the keyring can do without.

Each costs resident memory on a 1 GB hub for nothing (bench/daemon_footprint.py prints the
figures).  Checked on sys.modules in a fresh interpreter, never on memory numbers: the first test
imports what `iomt-gateway run` imports, the second drives the ECG pipeline through beats, a
pause with no QRS (the silence and asystole paths) and an alarm's evidence strip, and derives the
gateway's public signing key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NEVER_AT_IMPORT = ("matplotlib", "pandas", "wfdb", "scipy", "IPython")
NEVER_AT_RUN = (
    "matplotlib",
    "pandas",
    "wfdb",
    "scipy.signal",  # only its compiled SOS kernel is loaded (gateway/signal/ecg_filters.py)
    "scipy.linalg",
    "numpy.ma",  # np.median imports it
    "cryptography.hazmat.primitives.serialization",  # every key type and the SSH format
)


def _loaded(code: str, watched: tuple[str, ...]) -> list[str]:
    probe = code + (
        "\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return loaded


def test_the_daemon_imports_no_plotting_or_data_science_package() -> None:
    code = (
        "import gateway.cli, gateway.daemon\n"
        "from gateway.driver_api import registry\n"
        "registry()\n"  # every driver's settings model, as the supervisor loads them
        "import drivers.replay\n"
    )
    assert _loaded(code, NEVER_AT_IMPORT) == []


_RUN = """
import itertools
import numpy as np
from gateway.config.processing import AlarmSection
from gateway.pipeline import PatientSetup, Pipeline
from gateway.records import SampleBlock
from gateway.signal.rpeak_detector import RPeakDetector
from drivers.wfdb_reader import read_record
from gateway import keyring

rec = read_record(Path("hil_fixtures/ecg/mitdb_119_0s"))
fs = rec.fs
x = rec.signals[: int(90 * fs), 0] * 1000.0
# A standstill from 40 s to 70 s: the QRS complexes go, P and T waves stay (a live signal), so the
# channel reports the rate the silence implies and raises asystole, with its evidence strip.
for beat in RPeakDetector(fs).feed(x / 1000.0):
    r = beat.index
    a, b = int(r - 0.06 * fs), int(r + 0.08 * fs)
    if 40 * fs < r < 70 * fs:
        x[a:b] = np.linspace(x[a], x[b], b - a)
counter = itertools.count(1)
setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "replay"})
pl = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})
seen = set()
step = round(0.25 * fs)
for start in range(0, len(x), step):
    block = SampleBlock("strap", "ecg", fs, 1.78e9 + start / fs, x[start : start + step], "uV", first_index=start)
    for r in [*pl.feed("p-a", block).records, *pl.tick(1.78e9 + (start + step) / fs).records]:
        seen.add((r.kind.value, getattr(r, "condition", None)))
assert {("alarm", "asystole"), ("evidence", "asystole")} <= seen, seen
# A rhythmic artefact's path: the patient's beats found through it at whole multiples of one RR
# (one hidden here), which the VF and VT rules ask about (``native_rhythm``).
from gateway.signal.native_rhythm import NativeRhythmSettings, rate_with_dropouts
rr = round(0.8 * fs)
assert rate_with_dropouts([0, rr, 2 * rr, 4 * rr, 5 * rr, 6 * rr], fs, NativeRhythmSettings(), rr) == 75.0
keyring.init(Path(sys.argv[1]))
assert len(keyring.load(Path(sys.argv[1])).public_key()) == 32
"""


def test_the_ecg_path_and_the_keyring_load_nothing_heavy(tmp_path: Path) -> None:
    code = "import sys\nfrom pathlib import Path\nsys.argv[1:] = [" + repr(str(tmp_path / "keyring")) + "]\n" + _RUN
    assert _loaded(code, NEVER_AT_RUN) == []
