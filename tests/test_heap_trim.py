"""gateway.heap_trim: freed heap pages go back to the kernel, and where the C library cannot do
that the call is a harmless no-op."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import heap_trim


def _rss_anon_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not heap_trim.supported(), reason="the C library has no malloc_trim (not glibc)")
def test_a_hole_in_the_heap_is_given_back() -> None:
    heap_trim.release_free_heap()  # whatever this process had freed before
    # 20 MB in chunks small enough for the heap (not mmap), then one chunk above them that stays:
    # freeing the first ones leaves a hole glibc does not hand back by itself (it is not the top).
    blocks = [bytearray(4000) for _ in range(5000)]
    keep = bytearray(4000)
    del blocks
    before = _rss_anon_kb()
    assert heap_trim.release_free_heap() is True
    released_mb = (before - _rss_anon_kb()) / 1024
    assert released_mb > 10, released_mb
    assert len(keep) == 4000


def test_without_malloc_trim_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap_trim, "_malloc_trim", lambda: None)
    assert heap_trim.supported() is False
    assert heap_trim.release_free_heap() is False
