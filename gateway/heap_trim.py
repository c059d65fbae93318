"""Give the heap pages the process has freed back to the kernel (glibc's ``malloc_trim``), and keep
the daemon's threads from each holding heap pages of their own (``limit_arenas``).

glibc hands freed memory back on its own only from the top of a heap.  The holes that start-up
leaves lower down stay resident for the life of the process: the config's YAML and validation,
the entry-point scan, each driver's first connection, and — where the installed modules have no
compiled bytecode (a plain ``uv sync``, or the package's ``compileall`` having failed) — the
compiler's trees for every module imported.  ``malloc_trim(0)`` releases the whole free pages
inside those holes; what is still in use is untouched.

bench/daemon_footprint.py, 8 devices: ~9 MB less RSS without compiled bytecode, ~0 with it.  A
call costs well under a millisecond on this heap, so the daemon makes one with every ``STATUS=``
update (10 s) rather than guessing when start-up is over (drivers connect and import their
kernels after READY=1, and a SIGHUP reload parses the config again).

glibc also gives every thread that allocates its own arena (up to eight per core): the outbox
writer, each serial port's reader, the executor's workers that load a recording or a config.
An arena keeps the pages its thread touched, and what ``malloc_trim`` cannot hand back stays
resident once per arena.  The daemon's threads allocate little and seldom at the same moment
(Python's own objects come from its allocator, under the GIL), so ``limit_arenas`` has them
share the main arena (``M_ARENA_MAX``).  bench/daemon_footprint.py's nine-device hub after 60-90 s,
RSS 79.5-80.9 MB with glibc's default (6 runs) and 78.0-78.4 MB with one arena (6 runs: 3 with
MALLOC_ARENA_MAX=1, 3 with this call); the peak 80.7-82.5 MB against 78.9-81.2 MB.  The outbox's
sealed intake (bench/outbox_crypto.py) shows no difference beyond its run-to-run noise.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any

M_ARENA_MAX = -8  # mallopt's parameter number (glibc malloc.h)
ARENAS = 1


def _function(name: str) -> Any | None:
    """The C library's function ``name``, or None where it has none (not glibc: musl, macOS)."""
    try:
        # The C library already loaded in the process: no library search (find_library would run
        # `ldconfig -p` in a subprocess).
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    fn = _function("mallopt")
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    mallopt: Callable[[int, int], int] = fn
    return mallopt


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Let at most ``arenas`` malloc arenas exist from now on (threads that allocate afterwards
    share them).  True when glibc took the setting; False where there is no ``mallopt``."""
    mallopt = _mallopt()
    return mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    fn = _function("malloc_trim")
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


def supported() -> bool:
    return _malloc_trim() is not None


def release_free_heap() -> bool:
    """Return the free pages of every malloc heap to the kernel.  True when some were released;
    False when there was nothing to release or the C library has no ``malloc_trim``."""
    trim = _malloc_trim()
    return trim is not None and trim(0) == 1
