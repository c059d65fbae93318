"""Render an evidence strip as a PNG: the waveform on ECG paper, beat marks and the alarm's onset
and raise.  Needs matplotlib (the optional ``plots`` extra); only ``iomt-gateway evidence`` imports
this module, never the daemon."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.evidence_codec import decode
from gateway.records import EvidenceRecord


def render(record: EvidenceRecord, out: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    values = decode(record.data, record.sample_format, record.n_samples) * record.resolution
    fs = record.sample_rate_hz
    t = np.arange(record.n_samples) / fs - record.raise_index / fs  # seconds from the raise
    width = max(6.0, min(30.0, record.n_samples / fs * 0.9))
    fig, ax = plt.subplots(figsize=(width, 3.2), dpi=100)
    try:
        if record.channel.lower().startswith("ecg"):
            # ECG-paper-like: a fine grid every 0.2 s and 0.1 mV (the large squares of ECG paper in time).
            ax.set_xticks(np.arange(np.floor(t[0] / 0.2) * 0.2, t[-1] + 0.2, 0.2), minor=True)
            ax.set_yticks(np.arange(np.floor(values.min() / 0.1) * 0.1, values.max() + 0.1, 0.1), minor=True)
            ax.grid(which="minor", color="#f4c7c7", linewidth=0.4)
            ax.grid(which="major", color="#e59a9a", linewidth=0.8)
        else:
            ax.grid(color="#dddddd", linewidth=0.5)
        ax.plot(t, values, color="black", linewidth=0.8)
        beats = [b for b in record.beats if 0 <= b < record.n_samples]
        if beats:
            ax.plot(t[beats], values[beats], "v", color="tab:blue", markersize=5, label="beats")
        pace = [p for p in record.pace if 0 <= p < record.n_samples]
        if pace:
            # Marked along the strip's top, as a monitor marks them: the samples under them are
            # what the device sent, but the beat detector saw them held out.
            ax.plot(t[pace], np.full(len(pace), values.max()), "|", color="tab:green", markersize=12,
                    label="pacing pulses")  # fmt: skip
        ax.axvline(0.0, color="tab:red", linewidth=1.5, label="alarm raised")
        if record.onset_index is not None and 0 <= record.onset_index < record.n_samples:
            ax.axvline(t[record.onset_index], color="tab:orange", linestyle="--", linewidth=1.2, label="onset")
        ax.set_xlim(t[0], t[-1])
        ax.set_xlabel("seconds from the alarm's raise")
        ax.set_ylabel(record.unit)
        start = record.start_time.strftime("%Y-%m-%d %H:%M:%S UTC")
        ax.set_title(
            f"{record.condition} - patient {record.patient}, {record.device}/{record.channel}, "
            f"{fs:g} Hz, strip from {start}",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
