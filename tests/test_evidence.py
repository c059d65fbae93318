"""Alarm evidence strips: codec round trip, strips cut around real alarms through the pipeline,
budgets per strip and per hour, the gateway's kept copies, and the PNG rendered by the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import evidence_codec
from gateway.config.processing import AlarmSection, EvidenceSection
from gateway.evidence import EvidenceRecorder
from gateway.evidence_cli import evidence_main
from gateway.evidence_store import EvidenceCopies, alarm_of
from gateway.outbox import Outbox
from gateway.pipeline import PatientSetup, Pipeline, PipelineOutput
from gateway.records import AlarmEvent, AlarmRecord, EvidenceRecord, SampleBlock, Vital, VitalReading

FIXTURES = Path(__file__).parent.parent / "hil_fixtures"
T0 = 1_780_000_000.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**29), 2**29), min_size=1, max_size=400), st.booleans())
def test_codec_round_trip(values: list[int], small: bool) -> None:
    v = np.asarray(values, dtype=np.int64)
    if small:
        v = v % 20_000 - 10_000  # ECG-like: deltas fit 16 bits
    fmt, data = evidence_codec.encode(v)
    assert fmt == ("i2" if np.all(np.abs(np.diff(v, prepend=0)) < 2**15) else "i4")
    assert evidence_codec.decode(data, fmt, len(v)).tolist() == v.tolist()


def test_codec_refuses_damaged_data() -> None:
    fmt, data = evidence_codec.encode(np.arange(100))
    with pytest.raises(evidence_codec.EvidenceFormatError, match="says 99"):
        evidence_codec.decode(data, fmt, 99)
    with pytest.raises(evidence_codec.EvidenceFormatError, match="zlib"):
        evidence_codec.decode("AAAA" + data, fmt, 100)
    with pytest.raises(evidence_codec.EvidenceFormatError, match="format"):
        evidence_codec.decode(data, "f8", 100)


def pipeline(evidence: EvidenceSection | None = None) -> Pipeline:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"strap": "replay"})
    return Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup}, evidence=evidence)


def vf_excerpt() -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / "ecg_vf" / "vfdb_426_615s"), channels=[0])
    return np.nan_to_num(rec.p_signal[:, 0]) * 1000.0, float(rec.fs)  # uV


def feed(pl: Pipeline, x: np.ndarray, fs: float, gap_at_s: float | None = None) -> PipelineOutput:
    out = PipelineOutput()
    step = round(0.1 * fs)
    for start in range(0, len(x), step):
        first = start + (10_000 if gap_at_s is not None and start >= gap_at_s * fs else 0)
        block = SampleBlock("strap", "ecg", fs, T0 + first / fs, x[start : start + step], "uV", first_index=first)
        out.extend(pl.feed("p-a", block))
    return out


def strips(out: PipelineOutput, condition: str | None = None) -> list[EvidenceRecord]:
    return [r for r in out.records if isinstance(r, EvidenceRecord) and condition in (None, r.condition)]


VF = "ventricular_fibrillation"


def test_fibrillation_alarm_is_followed_by_its_strip() -> None:
    x, fs = vf_excerpt()
    out = feed(pipeline(), x, fs)
    vf = [r for r in out.records if isinstance(r, AlarmRecord) and r.condition == "ventricular_fibrillation"]
    assert [a.event for a in vf] == [AlarmEvent.RAISED]
    (strip,) = strips(out, VF)
    assert strip.alarm_id == vf[0].alarm_id and strip.condition == "ventricular_fibrillation"
    assert out.records.index(strip) > out.records.index(vf[0])
    assert (strip.sample_rate_hz, strip.unit, strip.resolution, strip.channel) == (fs, "mV", 0.001, "ecg")
    # VF is raised some 8 s into the episode: the strip starts 2 s before its onset (the sinus
    # rhythm before it), earlier than pre_s (8 s) before the raise, and ends post_s (4 s) after it.
    eight_before = vf[0].time.timestamp() - T0 - 8.0  # the raise, less pre_s
    assert strip.onset_index is not None
    assert strip.onset_index == round(2 * fs)
    assert strip.raise_index > round(8 * fs)
    assert strip.n_samples - strip.raise_index == round(4 * fs)
    # The samples are the input's, to the microvolt, at the right place.
    first = round((strip.start_time.timestamp() - T0) * fs)
    assert first / fs == pytest.approx(vf[0].time.timestamp() - T0 - strip.raise_index / fs, abs=1 / fs)
    assert first / fs < eight_before
    got = evidence_codec.decode(strip.data, strip.sample_format, strip.n_samples)
    assert np.array_equal(got, np.round(x[first : first + strip.n_samples]).astype(np.int64))
    assert len(strip.beats) > 5 and all(0 <= b < strip.n_samples for b in strip.beats)
    assert len(strip.model_dump_json()) < 10_000  # 12 s at 250 Hz, compressed


def test_strip_reaches_back_to_the_onset_only_as_far_as_max_pre_s() -> None:
    x, fs = vf_excerpt()
    (full,) = strips(feed(pipeline(), x, fs), VF)
    assert full.onset_index is not None
    onset_before_raise = (full.raise_index - full.onset_index) / fs
    assert 6.0 < onset_before_raise < 10.0
    (capped,) = strips(feed(pipeline(EvidenceSection(max_pre_s=8.5)), x, fs), VF)
    assert capped.raise_index == round(8.5 * fs)
    (plain,) = strips(feed(pipeline(EvidenceSection(max_pre_s=8.0)), x, fs), VF)
    assert plain.raise_index == round(8 * fs) and plain.n_samples == round(12 * fs)
    assert plain.onset_index == full.onset_index - (full.raise_index - plain.raise_index)


def test_max_pre_s_below_pre_s_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="max_pre_s must be at least pre_s"):
        EvidenceSection(pre_s=10, max_pre_s=9)


def test_strip_over_its_byte_budget_loses_its_oldest_seconds() -> None:
    x, fs = vf_excerpt()
    (strip,) = strips(feed(pipeline(EvidenceSection(max_strip_bytes=2_500)), x, fs), VF)
    assert len(strip.data) <= 2_500
    assert strip.n_samples - strip.raise_index == round(4 * fs)  # the seconds after the raise are kept
    assert strip.raise_index < round(8 * fs)


def test_hourly_budget_skips_strips_beyond_it() -> None:
    rec = EvidenceRecorder(EvidenceSection(pre_s=2, post_s=1, max_strip_bytes=1_000, max_bytes_per_hour=1_000))
    fs = 100.0
    made = []
    rng = np.random.default_rng(1)
    for k in range(40):  # 40 s of noisy waveform, an alarm every 10 s
        block = SampleBlock("strap", "ecg", fs, T0 + k, rng.normal(0, 200, 100), "uV", first_index=k * 100)
        if k % 10 == 5:
            rec.arm(f"a{k}", "asystole", "strap", None, T0 + k)
        made += rec.add_block(block)
    assert [s.alarm_id for s in made] == ["a5"]  # one strip of 500-1000 bytes fits the hour, not two
    assert 500 < len(made[0].data) <= 1_000
    assert rec.skipped == 3
    later = SampleBlock("strap", "ecg", fs, T0 + 3700, rng.normal(0, 200, 100), "uV", first_index=370_000)
    rec.add_block(later)
    rec.arm("b", "asystole", "strap", None, T0 + 3700.5)
    for k in range(1, 3):
        block = SampleBlock(
            "strap", "ecg", fs, T0 + 3700 + k, rng.normal(0, 200, 100), "uV", first_index=370_000 + k * 100
        )
        made += rec.add_block(block)
    assert [s.alarm_id for s in made] == ["a5", "b"]  # an hour later there is room again


def test_no_strip_for_alarms_without_a_waveform_and_none_across_a_gap() -> None:
    rec = EvidenceRecorder(EvidenceSection())
    rec.arm("spo2", "spo2_low", "strap", Vital.SPO2, T0)  # no pleth stream: nothing armed
    fs = 100.0
    assert rec.add_block(SampleBlock("strap", "ecg", fs, T0, np.zeros(500), "uV")) == []
    rec.arm("hr", "heart_rate_high", "strap", Vital.HEART_RATE, T0 + 4.0)
    # A gap before the seconds after the raise arrived: the strip is cut at the gap, never glued.
    cut = rec.add_block(SampleBlock("strap", "ecg", fs, T0 + 60, np.ones(500), "uV", first_index=6000))
    assert [s.alarm_id for s in cut] == ["hr"]
    assert cut[0].n_samples == 500 and cut[0].raise_index == 400
    assert rec.add_block(SampleBlock("strap", "ecg", fs, T0 + 65, np.ones(500), "uV", first_index=6500)) == []


def test_kept_copies_are_bounded_and_found_by_alarm_id() -> None:
    x, fs = vf_excerpt()
    strip = strips(feed(pipeline(), x, fs))[0]
    copies = EvidenceCopies(["evidence/000000000000001 old/alarm/1"], keep=1)
    state = copies.state_for([strip])
    new_key = next(k for k, v in state.items() if v is not None)
    assert alarm_of(new_key) == strip.alarm_id
    assert state["evidence/000000000000001 old/alarm/1"] is None  # the oldest goes


async def test_cli_renders_the_kept_strip_as_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")  # the optional 'plots' extra
    x, fs = vf_excerpt()
    (strip,) = strips(feed(pipeline(), x, fs), VF)
    db = tmp_path / "outbox.db"
    box = await Outbox.open(db, gateway_id="gw")
    await box.accept(strip, state=EvidenceCopies([]).state_for([strip]))
    await box.close()
    png = tmp_path / "strip.png"
    code = evidence_main([strip.alarm_id, "--db", str(db), "-c", str(tmp_path / "none.yaml"), "-o", str(png)])
    assert code == 0, capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "ventricular_fibrillation" in capsys.readouterr().out
    assert evidence_main(["no/such/alarm", "--db", str(db), "-c", str(tmp_path / "none.yaml")]) == 1


def test_cli_reads_a_received_record_and_refuses_a_damaged_one(tmp_path: Path) -> None:
    x, fs = vf_excerpt()
    strip = strips(feed(pipeline(), x, fs))[0]
    doc = json.loads(strip.model_dump_json())
    doc["n_samples"] += 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert evidence_main(["--record", str(bad)]) == 1
    assert evidence_main([]) == 2


def test_spo2_alarm_on_a_device_streaming_pleth_gets_a_pleth_strip() -> None:
    counter = itertools.count(1)
    setup = PatientSetup("p-a", AlarmSection().limits, {"ox": "replay"})
    pl = Pipeline(gateway_id="gw", new_key=lambda: f"gw:{next(counter)}", patients={"p-a": setup})
    fs = 75.0
    out = PipelineOutput()
    for s in range(60):
        t = T0 + s
        pleth = np.round(100 + 50 * np.sin(2 * np.pi * 1.2 * (s + np.arange(75) / fs)))
        out.extend(pl.feed("p-a", SampleBlock("ox", "pleth", fs, t, pleth, "1", first_index=s * 75)))
        spo2 = 97.0 if s < 15 else 84.0
        out.extend(pl.feed("p-a", VitalReading("ox", Vital.SPO2, spo2, "%", t)))
    low = [r for r in out.records if isinstance(r, AlarmRecord) and r.condition == "spo2_low"]
    assert low and low[0].event is AlarmEvent.RAISED
    (strip,) = strips(out)
    assert strip.alarm_id == low[0].alarm_id and strip.channel == "pleth"
    assert (strip.unit, strip.resolution, strip.beats) == ("1", 1.0, [])
    values = evidence_codec.decode(strip.data, strip.sample_format, strip.n_samples)
    assert values.min() >= 50 and values.max() <= 150 and strip.n_samples == round(12 * fs)


def noisy_119(noise_from_s: float, noise_to_s: float) -> tuple[np.ndarray, float]:
    rec = wfdb.rdrecord(str(FIXTURES / "ecg" / "mitdb_119_0s"), channels=[0])
    fs = float(rec.fs)
    x = rec.p_signal[: round(60 * fs), 0] * 1000.0  # uV
    a, b = round(noise_from_s * fs), round(noise_to_s * fs)
    x[a:b] += np.random.default_rng(4).normal(0, 1000.0, b - a)  # 1 mV RMS of broadband noise
    return x, fs


def test_no_valid_ecg_is_followed_by_a_strip_of_the_noise_from_where_it_began() -> None:
    x, fs = noisy_119(20.0, 32.0)
    out = feed(pipeline(), x, fs)
    raised = [
        r
        for r in out.records
        if isinstance(r, AlarmRecord) and r.condition == "no_valid_ecg" and r.event is AlarmEvent.RAISED
    ]
    (strip,) = strips(out)
    assert strip.alarm_id == raised[0].alarm_id and strip.condition == "no_valid_ecg"
    # Raised at the second noisy window (24-28 s); the strip marks the first one's start, 20 s.
    assert raised[0].time.timestamp() - T0 == pytest.approx(28.0, abs=0.01)
    assert strip.onset_index is not None
    onset_s = strip.start_time.timestamp() - T0 + strip.onset_index / fs
    assert onset_s == pytest.approx(20.0, abs=0.01)
    values = evidence_codec.decode(strip.data, strip.sample_format, strip.n_samples)
    first = round((strip.start_time.timestamp() - T0) * fs)
    assert np.array_equal(values, np.round(x[first : first + strip.n_samples]).astype(np.int64))


def test_technical_strips_keep_to_their_share_of_the_hour() -> None:
    """Noise compresses badly: strips of "no valid ECG" may use ``technical_share`` of the hour's
    budget, and the rest stays for the strips of physiologic alarms."""
    rec = EvidenceRecorder(EvidenceSection(pre_s=2, post_s=1, max_strip_bytes=1_000, max_bytes_per_hour=4_000))
    fs = 100.0
    made = []
    rng = np.random.default_rng(1)
    for k in range(60):  # a noise alarm at 5, 15 and 25 s, then a rhythm alarm at 35 and 45 s
        block = SampleBlock("strap", "ecg", fs, T0 + k, rng.normal(0, 200, 100), "uV", first_index=k * 100)
        if k in (5, 15, 25):
            rec.arm(f"noise{k}", "no_valid_ecg", "strap", None, T0 + k, technical=True)
        elif k in (35, 45):
            rec.arm(f"vf{k}", "ventricular_fibrillation", "strap", None, T0 + k)
        made += rec.add_block(block)
    assert all(500 < len(s.data) <= 1_000 for s in made)
    assert [s.alarm_id for s in made] == ["noise5", "vf35", "vf45"]  # 1 kB of the 4 kB are for noise
    assert rec.skipped == 2
    none = EvidenceRecorder(EvidenceSection(technical_share=0))
    none.arm("noise", "no_valid_ecg", "strap", None, T0, technical=True)
    assert not none.capturing("strap")
