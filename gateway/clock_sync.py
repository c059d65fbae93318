"""Is the host clock synchronised?  Asked without any syscall a hardened unit filters.

A Raspberry Pi has no RTC: after a power cut its clock restarts from the last saved time (or 1970)
until NTP answers.  The sources, in the order they are asked:

1. ``/run/systemd/timesync/synchronized``, which systemd-timesyncd creates once it has synchronised
   (a plain ``stat``).
2. systemd-timedated's ``NTPSynchronized`` property on the system bus.  timedated asks the kernel
   (``adjtimex``) itself, so it answers for chrony and ntpd hosts too, and our unit can keep
   ``ProtectClock=yes``: ``adjtimex`` is in the ``@clock`` syscall set, and a read-only call from a
   process under ``SystemCallFilter=@system-service`` used to be killed with SIGSYS.
3. ``adjtimex(2)`` read-only, for hosts without systemd.  Under the unit's filter it fails with
   EPERM (``SystemCallErrorNumber=EPERM``) and counts as "unknown".

"Unknown" is left to the caller (``SystemClock`` then trusts only a plausibly current clock).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os

TIMESYNC_FLAG = "/run/systemd/timesync/synchronized"
_TIME_ERROR = 5
_DBUS_TIMEOUT_S = 3.0


class _Timex(ctypes.Structure):
    # Only the leading fields matter; the tail is padding the kernel may write into.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_pad", ctypes.c_byte * 256),
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs `ldconfig -p` in a subprocess: once per process, never per check.
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def timesync_flag() -> bool:
    return os.path.exists(TIMESYNC_FLAG)


def adjtimex_synchronised() -> bool | None:
    """True/False from a read-only ``adjtimex``; None where the call is unavailable or refused."""
    libc = _libc()
    if libc is None:
        return None
    try:
        state = int(libc.adjtimex(ctypes.byref(_Timex())))
    except AttributeError:
        return None
    if state < 0:  # EPERM under a seccomp filter, ENOSYS elsewhere
        return None
    return state != _TIME_ERROR


async def timedated_synchronised(bus_address: str | None = None) -> bool | None:
    """timedated's ``NTPSynchronized``; None when there is no system bus or no timedated."""
    try:
        from dbus_fast import BusType, Message, MessageType  # noqa: PLC0415
        from dbus_fast.aio import MessageBus  # noqa: PLC0415
    except ImportError:  # not Linux
        return None
    bus: MessageBus | None = None
    try:
        async with asyncio.timeout(_DBUS_TIMEOUT_S):
            if bus_address is not None:
                bus = await MessageBus(bus_address=bus_address).connect()
            else:
                bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.timedate1",
                    path="/org/freedesktop/timedate1",
                    interface="org.freedesktop.DBus.Properties",
                    member="Get",
                    signature="ss",
                    body=["org.freedesktop.timedate1", "NTPSynchronized"],
                )
            )
    except (OSError, TimeoutError, ValueError, EOFError) as e:
        del e  # no bus, or nothing answering on it: the next source decides
        return None
    finally:
        if bus is not None:
            bus.disconnect()
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN or not reply.body:
        return None
    value = getattr(reply.body[0], "value", None)
    return value if isinstance(value, bool) else None


async def host_clock_synchronised() -> bool | None:
    """All sources in order; never blocks the event loop."""
    if timesync_flag():
        return True
    via_bus = await timedated_synchronised()
    if via_bus is not None:
        return via_bus
    return await asyncio.to_thread(adjtimex_synchronised)


def host_clock_synchronised_blocking() -> bool | None:
    """For one-shot command-line use outside an event loop (no D-Bus round trip)."""
    if timesync_flag():
        return True
    return adjtimex_synchronised()
