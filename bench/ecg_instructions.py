"""Instructions per second of ECG of the whole ECG channel, or of one of its functions, counted by
callgrind: deterministic, so unlike CPU time it does not move with the machine's load.

    uv run python bench/ecg_instructions.py [--records 119 203 228 104] [--baseline DIR]
    uv run python bench/ecg_instructions.py --records 119 --function gateway.signal.rpeak_detector:extend

Each record's lead 0 feeds an ``EcgChannel`` in 100 ms blocks, as the daemon does (``SampleBlock``
construction included): a 20 s warm-up, not counted, then ``--seconds`` (120) counted.  The
counted part runs inside ``sys.call_tracing`` and callgrind collects only there
(``--toggle-collect``).  ``--function module:attribute`` (e.g. ``...ecg_channel:EcgChannel._beat``)
counts only the calls of that function, callees included: it is wrapped in ``operator.call``
after the warm-up and collection is toggled there (a function that calls itself would toggle
twice: do not use it for those).  ``--baseline DIR`` also counts another checkout (e.g. ``git
worktree add /tmp/base main``), loaded first on ``sys.path`` by the same harness.  Needs valgrind;
a run takes about a minute a record under it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mitdb"

# Runs under valgrind with the checkout to count first on sys.path: argv = tree, samples (.npy),
# fs, warm-up s, counted s, function ("" for the whole channel).
_CHILD = """
import operator, sys, importlib
tree, path, fs, warm_s, count_s, target = sys.argv[1:7]
sys.path.insert(0, tree)
import numpy as np
from gateway.records import SampleBlock
from gateway.signal.ecg_channel import EcgChannel
x, fs = np.load(path), float(fs)
channel = EcgChannel("bench")
step = round(0.1 * fs)
warm, end = round(float(warm_s) * fs), round((float(warm_s) + float(count_s)) * fs)
def feed(lo, hi):
    for a in range(lo, hi, step):
        channel.feed(SampleBlock("bench", "ecg", fs, a / fs, x[a : a + step], "mV", first_index=a))
feed(0, warm)
if target:
    module, _, attribute = target.partition(":")
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)
    def counted(*args, **kwargs):
        return operator.call(fn, *args, **kwargs)
    setattr(owner, name, counted)
    feed(warm, end)
else:
    sys.call_tracing(feed, (warm, end))
"""


def count(tree: Path, samples: Path, fs: float, warm_s: float, count_s: float, function: str, tmp: Path) -> int:
    """Instructions callgrind collected in one run."""
    out = tmp / "callgrind.out"
    toggle = "_operator_call" if function else "sys_call_tracing"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        f"--toggle-collect={toggle}",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-c",
        _CHILD,
        str(tree),
        str(samples),
        str(fs),
        str(warm_s),
        str(count_s),
        function,
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tree)
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", nargs="*", default=["119", "203", "228", "104"])
    ap.add_argument("--warm-up", type=float, default=20.0, help="seconds fed before counting")
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds counted")
    ap.add_argument("--function", default="", help="count only this function (module:attribute)")
    ap.add_argument("--baseline", type=Path, help="also count this checkout")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed")
        return 2

    import numpy as np  # noqa: PLC0415

    sys.path.insert(0, str(HERE))
    import vf_data  # noqa: PLC0415

    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    what = args.function or "whole ECG channel"
    print(f"{what}: instructions per s of ECG ({args.seconds:g} s after {args.warm_up:g} s, 100 ms blocks, lead 0)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in args.records:
            x, fs = vf_data.load(args.data / name, 0)
            samples = tmp / f"{name}.npy"
            np.save(samples, x)
            per_s = {
                label: count(tree, samples, fs, args.warm_up, args.seconds, args.function, tmp) / args.seconds
                for label, tree in trees
            }
            line = f"  {name}: this {per_s['this'] / 1000:,.1f}k"
            if "baseline" in per_s:
                base = per_s["baseline"]
                line += f", baseline {base / 1000:,.1f}k ({100 * (per_s['this'] - base) / base:+.1f} %)"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
