"""Are this checkout's ECG channel outputs exactly another checkout's?  For changes that must not
change a result (speed work): every output of ``EcgChannel``, compared as text, floats by repr.

    uv run python bench/ecg_identity.py --baseline DIR [--data DIR] [--records 119 203 ...]

``DIR`` is another checkout (e.g. ``git worktree add /tmp/base main``).  Each checkout's channel
runs in a child process with that checkout first on ``sys.path``, fed by this script's harness, on
every record of ``--data`` (all with annotations; default: the MIT-BIH Arrhythmia Database), both
leads, two ways:

* ``daemon``: 100 ms blocks, as the daemon feeds them (samples queued to the next decision point);
* ``mixed``: blocks of 1-200 samples (seeded), every fifth processed on arrival (``defer=False``, as
  while an evidence strip is captured), a gap of 500 samples a third of the way in and a block
  holding a NaN (dropped) two thirds of the way in: the restart and drop paths.

Every block's output that is not empty is written as one line (its first index and the repr of
readings, validity changes, rhythm events, beats and dropped blocks; repr gives the shortest
string that reads back as the same double, so equal lines mean bit-identical numbers), then the
channel's final validity, dropped count and standstill memory.  Prints the records that differ
and the first differing line of each; exit status 1 if any does.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mitdb"
MODES = ("daemon", "mixed")


def _blocks(n: int, fs: float, mode: str) -> list[tuple[int, int, bool]]:
    """(start, end, defer) of each block fed; a start beyond the previous end is a gap."""
    import numpy as np  # noqa: PLC0415

    if mode == "daemon":
        step = round(0.1 * fs)
        return [(a, min(a + step, n), True) for a in range(0, n, step)]
    rng = np.random.default_rng(20261201)
    out: list[tuple[int, int, bool]] = []
    a = 0
    gap_at = n // 3
    while a < n:
        size = int(rng.integers(1, 201))
        out.append((a, min(a + size, n), len(out) % 5 != 4))
        a += size
        if a >= gap_at:
            a, gap_at = a + 500, 2 * n  # one gap only
    return out


def dump(data: Path, names: list[str], out_dir: Path) -> None:
    """Write the outputs of the ``gateway`` first on ``sys.path`` (the child's job)."""
    import numpy as np  # noqa: PLC0415

    sys.path.insert(0, str(HERE))
    import vf_data  # noqa: PLC0415

    from gateway.records import SampleBlock  # noqa: PLC0415
    from gateway.signal.ecg_channel import EcgChannel  # noqa: PLC0415

    for name in names:
        for lead in (0, 1):
            x, fs = vf_data.load(data / name, lead)
            for mode in MODES:
                channel = EcgChannel("identity")
                nan_at = 2 * len(x) // 3
                lines = []
                for a, b, defer in _blocks(len(x), fs, mode):
                    samples = x[a:b]
                    if mode == "mixed" and a <= nan_at < b:
                        samples = samples.copy()
                        samples[(b - a) // 2] = np.nan
                        nan_at = -1
                    block = SampleBlock("identity", "ecg", fs, a / fs, samples, "mV", first_index=a)
                    o = channel.feed(block, defer=defer)
                    if o.readings or o.changes or o.rhythm or o.beats or o.dropped_blocks:
                        lines.append(f"{a} {o.readings!r} {o.changes!r} {o.rhythm!r} {o.beats!r} {o.dropped_blocks}")
                lines.append(f"end valid={channel.valid} dropped={channel.dropped} standstill={channel.standstill!r}")
                (out_dir / f"{name}_{lead}_{mode}.txt").write_text("\n".join(lines) + "\n")


def run_tree(tree: Path, data: Path, names: list[str], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[2]);"
        "from pathlib import Path; import ecg_identity as e;"
        "e.dump(Path(sys.argv[3]), sys.argv[5:], Path(sys.argv[4]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tree), str(HERE), str(data), str(out_dir), *names], check=True, cwd=tree
    )


def first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i + 1}:\n    this: {x[:300]}\n    base: {y[:300]}"
    return f"{len(a)} lines here, {len(b)} in the baseline"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--records", nargs="*", help="record names (default: every annotated record)")
    ap.add_argument("--keep", type=Path, help="write the dumps here (default: a temporary folder)")
    args = ap.parse_args(argv)
    # Each tree's child runs in that tree: a relative --data (or --keep) is this shell's.
    args.data = args.data.resolve()
    if args.keep is not None:
        args.keep = args.keep.resolve()

    sys.path.insert(0, str(HERE))
    import vf_data  # noqa: PLC0415

    names = [p.name for p in vf_data.annotated_records(args.data, args.records)]
    if not names:
        print(f"no annotated records in {args.data}")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        top = args.keep or Path(tmp)
        here, base = top / "this", top / "baseline"
        run_tree(ROOT, args.data, names, here)
        run_tree(args.baseline.resolve(), args.data, names, base)
        differ = 0
        digest = hashlib.sha256()
        files = sorted(p.name for p in here.glob("*.txt"))
        for fname in files:
            mine, theirs = (here / fname).read_text(), (base / fname).read_text()
            digest.update(mine.encode())
            if mine != theirs:
                differ += 1
                print(f"DIFFERS {fname}: {first_difference(mine.splitlines(), theirs.splitlines())}")
        lines = sum(len((here / f).read_text().splitlines()) for f in files)
    print(
        f"{len(files) - differ} of {len(files)} runs identical ({len(names)} records x 2 leads x {len(MODES)} "
        f"feeds, {lines} output lines; sha256 of this checkout's {digest.hexdigest()[:16]})"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
