"""gateway.heap_trim: freed heap pages go back to the kernel, and where the C library cannot do
that the call is a harmless no-op."""

from __future__ import annotations

import os
import subprocess
import sys
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


# Run in a child: the setting is process-wide and only governs arenas made after it.  Four threads
# each allocate once (a thread's first malloc takes an arena of its own while there are fewer
# than the limit); glibc's malloc_info then lists one <heap> per arena.
_ARENAS_CHILD = """
import ctypes, sys, threading
from gateway import heap_trim
if sys.argv[1] == "limit":
    assert heap_trim.limit_arenas() is True
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.open_memstream.restype = ctypes.c_void_p
libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
go = threading.Barrier(4)
held = []
def work():
    go.wait()  # all four alive at once: none can inherit another's arena on its exit
    held.append(libc.malloc(1000))
    go.wait()
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
buf, size = ctypes.c_void_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(ctypes.string_at(buf, size.value).decode().count("<heap nr="))
"""


@pytest.mark.skipif(heap_trim._mallopt() is None, reason="no mallopt (not glibc)")
@pytest.mark.parametrize(("mode", "arenas"), [("limit", 1), ("default", 5)])
def test_threads_share_one_arena_once_limited(mode: str, arenas: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("MALLOC_ARENA_MAX", None)  # the default case is glibc's own: one arena per thread here
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS_CHILD, mode], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    assert int(out.stdout) == arenas, out.stdout + out.stderr


def test_without_mallopt_the_limit_is_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap_trim, "_mallopt", lambda: None)
    assert heap_trim.limit_arenas() is False
