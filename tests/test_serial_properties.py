"""Property tests: garbage anywhere never crashes a decoder, a damaged frame never comes out, and the
decoder re-locks within one frame after the garbage ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.serial import contec, simulate
from drivers.serial.ecg_frontend import EcgFrame, EcgTranslator
from drivers.serial.framing import Dropped
from drivers.serial.nonin import NoninPacket
from drivers.serial.protocols import PROTOCOLS
from gateway.records import ClockQuality, SampleBlock


def _streams() -> dict[str, list[bytes]]:
    """Each protocol's clean stream, as its list of frames."""
    course = simulate.course(3, seed=7)

    def fixed(data: bytes, n: int) -> list[bytes]:
        return [data[i : i + n] for i in range(0, len(data), n)]

    rng = np.random.default_rng(3)
    ecg = list(simulate.ecg_frames(rng.integers(-3000, 3000, size=(20 * 12, 2)), 250, 2000, per_frame=12))
    masimo = simulate.masimo_stream(course * 2, datetime(2026, 3, 1, 8), newer_firmware=True)
    return {
        "nonin2": fixed(simulate.nonin75_stream(course[:1], fmt=2), 5),
        "nonin7": fixed(simulate.nonin75_stream(course[:1], fmt=7), 5),
        "nonin8": fixed(simulate.nonin8_stream(course * 7), 4),
        "contec": fixed(simulate.contec_stream(course[:1]), 5),
        "masimo": [ln + b"\r\n" for ln in masimo.split(b"\r\n")[:-1]],
        "ecgstream": ecg,
    }


STREAMS = _streams()
# Frames into a stream after which the decoder is locked: a fixed-length framer waits for one valid
# frame to confirm the first; Contec (no checksum) for three that also agree with it.
LOCKED_FROM = {"contec": contec.LOCK_CONFIRM + 1}


def key(x: Any) -> Any:
    if isinstance(x, EcgFrame):
        return (x.seq, x.samples.tobytes())
    return x


def decode(protocol: str, data: bytes, chunk: int) -> list[Any]:
    d = PROTOCOLS[protocol].make_decoder()
    out: list[Any] = []
    for i in range(0, len(data), chunk):
        out += d.feed(data[i : i + chunk])
    return out + d.finish()


def frames(items: list[Any]) -> list[Any]:
    return [key(x) for x in items if not isinstance(x, Dropped | NoninPacket)]


def is_subsequence(needle: list[Any], hay: list[Any]) -> bool:
    it = iter(hay)
    return all(any(n == h for h in it) for n in needle)


CLEAN = {p: frames(decode(p, b"".join(fr), 4096)) for p, fr in STREAMS.items()}


def test_clean_streams_decode_completely() -> None:
    for p, fr in STREAMS.items():
        assert len(CLEAN[p]) == len(fr), p


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("protocol", sorted(STREAMS))
@PROPS
@given(data=st.data())
def test_garbage_anywhere_loses_at_most_the_frame_it_cuts(protocol: str, data: st.DataObject) -> None:
    parts = STREAMS[protocol]
    stream = b"".join(parts)
    garbage = data.draw(st.binary(min_size=1, max_size=300), label="garbage")
    starts = np.cumsum([0] + [len(p) for p in parts])
    # From the third frame on (Contec: the fifth) the decoder is locked.  (Before that, an unlocked
    # fixed-length framer waits for the frames that confirm the first, so garbage among them costs
    # the frames before it too.)
    pos = data.draw(st.integers(int(starts[LOCKED_FROM.get(protocol, 2)]), len(stream)), label="pos")
    chunk = data.draw(st.integers(1, 600), label="chunk")
    items = decode(protocol, stream[:pos] + garbage + stream[pos:], chunk)
    # The frame the garbage lands in (if any) and the first frame after the garbage may be lost (a
    # garbage byte may pass for the start of a frame and swallow it: formats #7, #8 and Contec have only
    # a sync bit, or a one-byte sum, to tell); every other frame must come out, in order.
    cut = {k for k in range(len(parts)) if starts[k] < pos < starts[k + 1]}
    cut |= {min(k for k in range(len(parts) + 1) if starts[k] >= pos)} - {len(parts)}
    expected = [f for k, f in enumerate(CLEAN[protocol]) if k not in cut]
    got = frames(items)
    assert is_subsequence(expected, got)
    # Extra frames can only be made of garbage bytes: a few at most.
    assert len(got) - len(expected) <= len(garbage) // 4 + 2
    dropped = sum(d.count for d in items if isinstance(d, Dropped))
    assert dropped <= len(garbage) + sum(len(parts[k]) for k in cut)


def _corrupt(protocol: str, frame: bytes, where: int, xor: int) -> bytes:
    b = bytearray(frame)
    i = where % len(b)
    if protocol in ("contec", "nonin8"):
        # No checksum: what these decoders can see is the sync bit in the wrong place.
        b[i] ^= 0x80
    elif protocol == "masimo":
        i = min(i, len(b) - 3)
        b[i] = 0x80 | xor  # a byte a Radical-7 never sends
    else:
        b[i] ^= xor
    return bytes(b)


@pytest.mark.parametrize("protocol", sorted(STREAMS))
@PROPS
@given(data=st.data())
def test_damaged_frame_never_comes_out_and_nothing_else_is_lost(protocol: str, data: st.DataObject) -> None:
    parts = list(STREAMS[protocol])
    k = data.draw(st.integers(LOCKED_FROM.get(protocol, 2), len(parts) - 2), label="frame")  # locked by then, see above
    where = data.draw(st.integers(0, 10_000), label="byte")
    xor = data.draw(st.integers(1, 255), label="xor")
    chunk = data.draw(st.integers(1, 600), label="chunk")
    parts[k] = _corrupt(protocol, parts[k], where, xor)
    got = frames(decode(protocol, b"".join(parts), chunk))
    assert got == CLEAN[protocol][:k] + CLEAN[protocol][k + 1 :]


@PROPS
@given(lost=st.lists(st.integers(1, 18), unique=True, max_size=6), chunk=st.integers(1, 400))
def test_ecg_lost_frames_become_marked_gaps_of_the_right_length(lost: list[int], chunk: int) -> None:
    parts = STREAMS["ecgstream"]
    kept = [p for k, p in enumerate(parts) if k not in lost]
    items = decode("ecgstream", b"".join(kept), chunk)
    blocks = [b for b in EcgTranslator("d").translate(items, 100.0, ClockQuality.SYNCED) if isinstance(b, SampleBlock)]
    ch0 = [b for b in blocks if b.channel == "ecg"]
    survivors = [k for k in range(len(parts)) if k not in lost]
    assert [b.first_index for b in ch0] == [k * 12 for k in survivors]
    assert [b.gap_before for b in ch0] == [k - 1 in lost for k in survivors]
