"""bench/ecg_vf.py's per-second scoring on a worked example: the alarm seconds by annotated rhythm,
and Sp_second over the seconds outside annotated VT too."""

from __future__ import annotations

from tests.bench_modules import load_bench

ecg_vf = load_bench("ecg_vf")
FS = 10.0


def test_sp_second_outside_vt_leaves_vt_out_of_both_counts() -> None:
    # 100 s without VF: sinus rhythm, then VT from 50 s; a VF alarm from 40 s to 60 s.
    notes = [(0, "(N"), (int(50 * FS), "(VT")]
    r = ecg_vf.score("x", int(100 * FS), FS, [], [(int(40 * FS), int(60 * FS))], 4.0, 10.0, notes=notes)
    assert (r.other_s, r.other_alarm_s) == (100, 20)
    assert r.false_by_rhythm == {"(N": 10, "(VT": 10}
    assert r.scored_by_rhythm == {"(N": 50, "(VT": 50}
    assert r.sp == 80.0
    line = ecg_vf._outside_vt_line(r)
    assert line.startswith("Sp_second outside annotated VT too = 80.00 % (10 alarm seconds of 50; in VT: 10 of 50)")
