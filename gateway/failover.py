"""Which broker the uplink connects to next, and how long it waits first (pure decisions).

``upstream.url`` is the primary; ``upstream.failover_urls`` are the other nodes of its cluster, or
a standby.  The uplink moves to the next URL in the list (wrapping round) after every failed or
lost connection, waiting the same full-jitter backoff as with one broker.  Delivery does not
depend on which node took a record: the outbox keeps every row until some broker acknowledges it,
and a row whose PUBACK was lost with a node is sent again, with the same key, to the next one.

With ``upstream.return_to_primary_s`` set, a connection to any other node is checked that often:
if the primary accepts a TCP connection, the uplink leaves the standby cleanly (rows settled,
``offline`` announced) and reconnects to the primary at once.  Without it the uplink stays where it
works (the right choice for equal nodes of one cluster).

The herd: when a broker restarts, every hub connected to it loses its link in the same second.
The first reconnect after losing a connection that worked waits ``uniform(0, reconnect_spread_s)``
(bounded by the backoff cap) instead of the one-second window of the exponential schedule, so a
fleet of N hubs comes back at about N / spread connections per second rather than all at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def endpoint(url: str) -> Endpoint:
    """``mqtt[s]://host[:port]`` (already validated by the config) as an endpoint."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    if parts.hostname is None or parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"not an mqtt:// or mqtts:// URL with a host: {url!r}")
    return Endpoint(parts.hostname, parts.port or (8883 if tls else 1883), tls)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base * 2**attempt))``."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    return rng.uniform(0.0, ceiling)


def reconnect_delay(
    attempt: int, *, after_stable: bool, base: float, cap: float, spread: float, rng: random.Random
) -> float:
    """The wait before connection attempt ``attempt`` (0 after a connection that worked).

    The first wait after losing a stable connection is drawn over ``spread`` seconds (never less
    than the schedule's own first window, never more than the cap): that is the moment a whole
    fleet shares.  Later attempts follow the exponential full-jitter schedule.
    """
    if attempt == 0 and after_stable:
        return rng.uniform(0.0, min(cap, max(base, spread)))
    return backoff_delay(attempt, base=base, cap=cap, rng=rng)


class Failover:
    """The broker list and where the uplink is in it.  ``clock`` is monotonic seconds."""

    def __init__(
        self, endpoints: Sequence[Endpoint], *, return_after_s: float | None, clock: Callable[[], float]
    ) -> None:
        if not endpoints:
            raise ValueError("at least one broker is needed")
        self._endpoints = list(endpoints)
        self._index = 0
        self._return_after_s = return_after_s
        self._clock = clock
        self._probe_at: float | None = None

    @property
    def current(self) -> Endpoint:
        return self._endpoints[self._index]

    @property
    def primary(self) -> Endpoint:
        return self._endpoints[0]

    @property
    def on_primary(self) -> bool:
        return self._index == 0

    def connected(self) -> None:
        """A connection to ``current`` is up: schedule the first look at the primary."""
        if self.on_primary or self._return_after_s is None:
            self._probe_at = None
        else:
            self._probe_at = self._clock() + self._return_after_s

    def lost(self) -> Endpoint:
        """The connection to ``current`` failed or ended: the next broker to try."""
        self._probe_at = None
        self._index = (self._index + 1) % len(self._endpoints)
        return self.current

    def probe_due_in(self) -> float | None:
        """Seconds until the primary should be checked; None while there is nothing to check."""
        if self._probe_at is None:
            return None
        return max(0.0, self._probe_at - self._clock())

    def probe_failed(self) -> None:
        """The primary is still unreachable: stay, and look again after the same interval."""
        if self._probe_at is not None and self._return_after_s is not None:
            self._probe_at = self._clock() + self._return_after_s

    def return_to_primary(self) -> Endpoint:
        self._probe_at = None
        self._index = 0
        return self.current
