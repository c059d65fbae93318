"""When the broker stays unreachable: one warning after a minute, repeated at a slowing interval, with
the cause in words, and a line when it is back.

A home hub loses its broker often and briefly (Wi-Fi, a router reboot), and the uplink retries by
itself: each attempt is logged at info.  What a technician looking at ``journalctl -p warning``
needs is different: *the broker has been unreachable for N minutes, because X*.  This module decides
when to say so; the uplink calls it with plain data (no aiomqtt types here) and logs what it returns.

Pure decisions on an injected ``now``: tests drive them with a manual clock.
"""

from __future__ import annotations

import enum
import errno
import socket
from dataclasses import dataclass

from gateway.credentials import CredentialError

WARN_AFTER_S = 60.0
REPEAT_FACTOR = 2.0  # 1 min, then 2, 4, 8 ... minutes between repeats
REPEAT_MAX_S = 3600.0

# MQTT 5 CONNACK reason codes (and MQTT 3.1.1 return codes 4 and 5) that mean "who you are is refused".
_AUTH_CODES = frozenset({0x86, 0x87, 0x8C, 4, 5})


class OutageCause(enum.StrEnum):
    """Why the last attempt failed; the value is the ``cause=`` logged."""

    REFUSED = "refused"  # nothing listens on the port (or a firewall rejects)
    DNS = "dns"  # the host name does not resolve
    TLS = "tls"  # the handshake failed (wrong CA, expired certificate, ...)
    AUTH = "auth"  # the broker refused the user name/password or certificate identity, or the ACL
    TIMEOUT = "timeout"  # no answer: a firewall dropping packets, a dead route
    UNREACHABLE = "unreachable"  # no route to the host or network
    LINK_LOST = "link_lost"  # connected, then the link dropped
    BROKER = "broker"  # the broker answered with another refusal (server busy, quota, ...)


HINTS: dict[OutageCause, str] = {
    OutageCause.REFUSED: "nothing accepts connections on that host and port: is the broker running, is the port right?",
    OutageCause.DNS: "the broker's host name does not resolve: check upstream.url and this hub's DNS",
    OutageCause.TLS: "the TLS handshake failed: see uplink_tls_failed for the reason; `iomt-gateway doctor` checks it",
    OutageCause.AUTH: "the broker refused this hub's identity: check username, password_file and the certificate",
    OutageCause.TIMEOUT: "no answer from the broker: a firewall or a dead network path",
    OutageCause.UNREACHABLE: "no route to the broker: is this hub's network up?",
    OutageCause.LINK_LOST: "the connection keeps dropping",
    OutageCause.BROKER: "the broker refused the connection or a message",
}


def cause_of(
    error: BaseException,
    *,
    os_error: OSError | None = None,
    tls_failed: bool = False,
    reason_code: int | None = None,
) -> OutageCause:
    """The cause of one failed attempt.

    ``os_error``: what the socket connect raised (the MQTT library keeps only its text);
    ``tls_failed``: the TLS layer recorded a refused handshake; ``reason_code``: a CONNACK or PUBACK
    failure code, when the broker answered.
    """
    if tls_failed:
        return OutageCause.TLS
    if isinstance(error, CredentialError):
        return OutageCause.AUTH
    if reason_code is not None:
        return OutageCause.AUTH if reason_code in _AUTH_CODES else OutageCause.BROKER
    err = os_error if os_error is not None else error if isinstance(error, OSError) else None
    if err is None:
        return OutageCause.LINK_LOST
    if isinstance(err, socket.gaierror):
        return OutageCause.DNS
    if isinstance(err, ConnectionRefusedError):
        return OutageCause.REFUSED
    if isinstance(err, TimeoutError):
        return OutageCause.TIMEOUT
    if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN):
        return OutageCause.UNREACHABLE
    return OutageCause.LINK_LOST


@dataclass(frozen=True)
class OutageWarning:
    down_s: float
    cause: OutageCause
    error: str
    attempts: int
    next_in_s: float

    @property
    def hint(self) -> str:
        return HINTS[self.cause]


@dataclass(frozen=True)
class Recovery:
    down_s: float
    attempts: int
    cause: OutageCause | None  # the last one seen


class OutageTracker:
    """Remembers since when the broker is unreachable; says when to warn and when it recovered.

    ``up(now)`` when a connection works (announced ``online``), ``failed(now, cause, error)`` after each
    failed attempt, ``due(now)`` whenever convenient (the uplink asks while it waits to retry).
    """

    def __init__(
        self,
        now: float,
        *,
        warn_after_s: float = WARN_AFTER_S,
        repeat_factor: float = REPEAT_FACTOR,
        repeat_max_s: float = REPEAT_MAX_S,
    ) -> None:
        self.warn_after_s = warn_after_s
        self.repeat_factor = repeat_factor
        self.repeat_max_s = repeat_max_s
        # A daemon that starts without its broker is in an outage from its first second.
        self._down_since: float | None = now
        self._next_warn: float = now + warn_after_s
        self._interval = warn_after_s
        self._warned = 0
        self._attempts = 0
        self._cause: OutageCause | None = None
        self._error = ""

    @property
    def down_since(self) -> float | None:
        return self._down_since

    def failed(self, now: float, cause: OutageCause, error: str) -> OutageWarning | None:
        if self._down_since is None:
            self._down_since = now
            self._next_warn = now + self.warn_after_s
            self._interval = self.warn_after_s
        self._attempts += 1
        self._cause = cause
        self._error = error
        return self.due(now)

    def due(self, now: float) -> OutageWarning | None:
        """A warning if the outage has lasted past the next warning time (and one is known to be failing)."""
        if self._down_since is None or self._cause is None or now < self._next_warn:
            return None
        self._warned += 1
        self._interval = min(self._interval * self.repeat_factor, self.repeat_max_s)
        self._next_warn = now + self._interval
        return OutageWarning(now - self._down_since, self._cause, self._error, self._attempts, self._interval)

    def seconds_to_next_warning(self, now: float) -> float | None:
        if self._down_since is None or self._cause is None:
            return None
        return max(0.0, self._next_warn - now)

    def up(self, now: float) -> Recovery | None:
        """The link works.  A ``Recovery`` when a warning was given for the outage it ends."""
        since, warned = self._down_since, self._warned
        report = Recovery(now - since, self._attempts, self._cause) if since is not None and warned else None
        self._down_since = None
        self._warned = 0
        self._attempts = 0
        self._cause = None
        self._error = ""
        return report
