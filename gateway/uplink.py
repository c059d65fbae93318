"""MQTT uplink: drains the outbox to the broker, QoS 1 over an MQTT 5 persistent session.

Topic layout (``prefix`` is ``upstream.topic_prefix``, default ``iomt``)::

    <prefix>/<gateway_id>/<kind>/<patient>   one message per record, kind = alarm|billing|summary|status
    <prefix>/<gateway_id>/status             retained {"state": "online"|"offline", ...}
    <prefix>/<gateway_id>/checkpoint         retained signed note of the record chain (gateway.checkpoint)

A record message's payload is the record's JSON exactly as the outbox stored it.  Each carries the
MQTT 5 user properties ``key`` (the record's idempotency key, also inside the JSON), ``kind`` and
``schema`` (``"1"``) and the content type ``application/json``.  Delivery is at least once:
consumers drop duplicates by ``key``.  A topic level never contains ``/``, ``+``, ``#``, ``%`` or
NUL: those characters are written ``%2F``, ``%2B``, ``%23``, ``%25``, ``%00``.  Note that a
subscription to ``<prefix>/<gw>/status/#`` also matches the retained ``<prefix>/<gw>/status``.

The status message is ``{"gateway_id", "state", "time", "schema"}``.  ``online`` is published
(retained) after every connect; ``offline`` is the retained last will, so the broker publishes it
when the link dies, and the uplink publishes it itself before a deliberate disconnect (an MQTT 5
normal DISCONNECT discards the will).  The will's ``time`` is the time of the connect that set it.

Delivery rules:

* A row is *delivered* when its PUBACK arrives with a success reason code; only then is it acked
  in the outbox (acks are batched).
* A publish timeout, a dropped link or a refusal (PUBACK reason >= 0x80, e.g. "not authorised")
  means the row is not known to be delivered: it goes back to the outbox (``release``) and is
  sent again, with the same key, after a reconnect.  Every exit path — cancellation included —
  acks what was acknowledged and releases every other leased row.
* At most ``upstream.inflight`` publishes are unacknowledged at once (that many publishing tasks),
  fewer if the broker's CONNACK announces a lower Receive Maximum; the checkpoint and status
  publishes share that Receive Maximum with the records (one budget per connection), so the
  total unacknowledged never exceeds it.
* Rows go out in the outbox's lease order.  After a lost link the first copy of each row still
  arrives in that order (TCP keeps it); after a refusal or a timeout a resent row may arrive
  after rows leased later than it.  Any row may arrive twice.
* Reconnects wait a full-jitter exponential backoff, ``uniform(0, min(cap, base * 2**n))`` with
  base 1 s and cap ``upstream.backoff_max_s``; ``n`` starts again from 0 after a connection that
  announced ``online`` and stayed up ``STABLE_AFTER_S`` (10 s) without a refusal or a timeout, and
  that first wait is drawn over ``upstream.reconnect_spread_s`` instead (a fleet's shared moment).
* Each reconnect goes to the next broker of ``upstream.url`` + ``failover_urls``; with
  ``return_to_primary_s`` the uplink goes back to ``url`` once it answers.  The decisions are in
  ``gateway.failover``.

TLS: ``gateway.tls`` builds the context (TLS >= 1.2, host name checked, ``ca_file`` pinned, client
certificate); a refused handshake is logged as ``uplink_tls_failed`` with its ``cause``.  The
password comes from ``password_file`` (``gateway.credentials``), read at each connect.

This is the only module that imports aiomqtt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway import tls, uplink_outage
from gateway.config.models import UpstreamSection
from gateway.config.upstream import is_loopback
from gateway.credentials import CredentialError, read_password
from gateway.failover import Endpoint, Failover, endpoint, reconnect_delay
from gateway.outbox.types import OutboxClosed
from gateway.records import SCHEMA_VERSION, RecordKind

MQTT_LOGGER = "gateway.mqtt"  # paho's lines (through aiomqtt); gateway.logs sets its level

CONTENT_TYPE = "application/json"
# The broker keeps the session this long after the link drops; a day covers any outage worth
# resuming, and a publish-only client keeps little state there.
SESSION_EXPIRY_S = 86_400
# Safety net for a missed wake-up from ``Outbox.wait_pending``.
IDLE_POLL_S = 5.0
# A deliberate disconnect announces ``offline`` but does not wait long for a dying link.
GOODBYE_TIMEOUT_S = 0.5
BACKOFF_BASE_S = 1.0
# A connection that stayed up this long (after announcing "online") resets the backoff.
STABLE_AFTER_S = 10.0
# How long a look at the primary broker (a TCP connect) may take.
PROBE_TIMEOUT_S = 5.0
# The newest signed checkpoint of the record chain (gateway.checkpoint) goes out at most this often.
CHECKPOINT_EVERY_S = 1.0

T = TypeVar("T")

_RESERVED = {"/": "%2F", "+": "%2B", "#": "%23", "%": "%25", "\x00": "%00"}


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def topic_level(value: str) -> str:
    """``value`` made safe as one topic level (reversible; see the module docstring)."""
    if not any(c in _RESERVED for c in value):
        return value
    return "".join(_RESERVED.get(c, c) for c in value)


def topic_for(prefix: str, gateway_id: str, kind: RecordKind, patient: str) -> str:
    return f"{prefix}/{topic_level(gateway_id)}/{RecordKind(kind).value}/{topic_level(patient)}"


def status_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{topic_level(gateway_id)}/status"


def checkpoint_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{topic_level(gateway_id)}/checkpoint"


def status_payload(gateway_id: str, state: str, now: float) -> bytes:
    doc = {
        "gateway_id": gateway_id,
        "state": state,
        "time": datetime.fromtimestamp(now, tz=UTC).isoformat(),
        "schema": SCHEMA_VERSION,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it unannotated


# --------------------------------------------------------------------------------------------
# What the uplink needs from the outbox
# --------------------------------------------------------------------------------------------


class QueuedRow(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> RecordKind: ...
    @property
    def key(self) -> str: ...
    @property
    def patient(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class DeliveryQueue(Protocol):
    """The part of ``gateway.outbox.Outbox`` the uplink uses."""

    async def wait_pending(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109
    async def lease(self, limit: int) -> Sequence[QueuedRow]: ...
    async def ack(self, ids: Sequence[int]) -> None: ...
    async def release(self, ids: Sequence[int]) -> None: ...


# --------------------------------------------------------------------------------------------
# Errors and stats
# --------------------------------------------------------------------------------------------


class UplinkError(Exception):
    """A publish whose outcome is not a success; the connection is dropped and rebuilt."""


class PublishTimeout(UplinkError):
    pass


class ReturnToPrimary(Exception):
    """The primary broker answers again: leave the failover broker cleanly."""


class PublishRefused(UplinkError):
    def __init__(self, topic: str, reason: ReasonCode) -> None:
        super().__init__(f"broker refused publish on {topic}: {reason} (0x{reason.value:02x})")
        self.reason = reason


# Failures of the link or of the broker: log, back off, reconnect.  Anything else is a bug or a
# broken outbox and propagates after the leased rows have been put back.
# A credential file is checked at each connect: it may be fixed (or appear) while the daemon waits.
_LINK_ERRORS = (aiomqtt.MqttError, UplinkError, OSError, CredentialError)


@dataclass
class UplinkStats:
    connected: bool = False
    delivered: int = 0  # rows acked in the outbox after a successful PUBACK
    resent: int = 0  # rows released back to the outbox, outcome unknown, to be sent again
    publish_timeouts: int = 0
    connects: int = 0
    last_delivery: float | None = None  # Unix time of the last ack
    last_error: str | None = None
    refused: int = 0  # publishes the broker answered with a failure reason code
    window: int = 0  # publishes allowed in flight on the current connection


# --------------------------------------------------------------------------------------------
# aiomqtt client that reports the PUBACK reason code
# --------------------------------------------------------------------------------------------


class _AckingClient(aiomqtt.Client):
    """``aiomqtt.Client`` with a publish that returns the PUBACK reason code.

    aiomqtt 2.x completes ``publish()`` on any PUBACK and drops its reason code, so a message an
    MQTT 5 broker refused (0x87 not authorised, 0x97 quota exceeded) would look delivered and its
    row would be deleted.  This uses aiomqtt internals (``_client``, ``_loop``, ``_connected``,
    ``_disconnected``, ``_lock``, three callbacks and ``_wait_for``), stable within the pinned 2.x
    series.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self.receive_maximum: int | None = None
        # One budget for every QoS 1 publish of the connection (records, checkpoint, status): a
        # permit is taken before the PUBLISH goes out and given back only by its PUBACK (not by a
        # cancelled or timed-out wait), so what is unacknowledged on the wire never exceeds the
        # broker's Receive Maximum.  None: the broker announced none (65,535; inflight caps it).
        self._budget: asyncio.Semaphore | None = None
        self._unacked: set[int] = set()
        self.connect_error: OSError | None = None
        self._given_up = False
        self._given_up_lock = threading.Lock()

    def _client_connect(self) -> None:
        # aiomqtt re-raises a failed socket connect as MqttError(str(e)) without the original: keep it,
        # so a refused port, a DNS failure and a timeout stay told apart (uplink_outage.cause_of).
        try:
            super()._client_connect()
        except OSError as e:
            self.connect_error = e
            raise
        with self._given_up_lock:
            if self._given_up:
                # Connected after the attempt was given up (see ``give_up``): paho closes the
                # socket once its DISCONNECT is written.  The loop may be gone at a daemon's exit.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._client.disconnect)

    def give_up(self) -> None:
        """The attempt is over (called before ``__aexit__``).  aiomqtt connects in an executor
        thread that a cancel does not stop, and ``__aexit__`` cannot close a socket that thread
        has not opened yet: it would stay open until the client is collected."""
        with self._given_up_lock:
            self._given_up = True

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        # The broker's limit on unacknowledged QoS 1 publishes; paho does not enforce it and a
        # strict broker disconnects a client that exceeds it.
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and receive_maximum > 0:
            self.receive_maximum = receive_maximum
            self._budget = asyncio.Semaphore(receive_maximum)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(reason_code)
        if mid in self._unacked:
            self._unacked.discard(mid)
            if self._budget is not None:
                self._budget.release()
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109 - aiomqtt's signature
        # aiomqtt awaits the CONNACK (and its own publishes) with asyncio.wait_for, which on
        # Python 3.11 returns the result and drops a cancel that comes as it completes (CPython
        # gh-86296, fixed in 3.12): a daemon stopping as the CONNACK arrived kept its uplink.
        # asyncio.timeout keeps the cancel; timeouts still end as aiomqtt's MqttError.
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        # aiomqtt ignores a link lost before CONNACK and lets the connect wait for its whole
        # timeout; fail the connect attempt at once instead (only while one is in progress).
        if not self._connected.done() and self._lock.locked():
            self._connected.set_exception(aiomqtt.MqttError(f"connection closed before CONNACK: {reason_code}"))
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def retrieve_link_error(self) -> None:
        """Mark a link failure as seen: once our watcher is gone, nobody else would, and asyncio
        logs "Future exception was never retrieved" for it."""
        if self._disconnected.done() and not self._disconnected.cancelled():
            self._disconnected.exception()

    async def publish_acked(
        self, topic: str, payload: bytes, *, retain: bool, properties: Properties, wait_s: float
    ) -> ReasonCode:
        mid: int | None = None
        try:
            # waiting for a permit counts against the publish's timeout: a broker that stopped
            # acknowledging fails it as "no PUBACK", as it would the publishes holding the permits
            async with asyncio.timeout(wait_s):
                if self._budget is not None:
                    await self._budget.acquire()
                try:
                    info = self._client.publish(topic, payload, 1, retain, properties)
                except BaseException:
                    if self._budget is not None:
                        self._budget.release()
                    raise
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    if self._budget is not None:
                        self._budget.release()
                    raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                # The PUBACK is read by a loop callback, so it cannot arrive before this registration.
                mid = info.mid
                self._unacked.add(mid)
                fut: asyncio.Future[ReasonCode] = self._loop.create_future()
                self._acks[mid] = fut
                return await fut
        except TimeoutError:
            raise PublishTimeout(f"no PUBACK within {wait_s} s on {topic}") from None
        finally:
            if mid is not None:
                self._acks.pop(mid, None)


# --------------------------------------------------------------------------------------------
# A CONNECT and nothing else (for ``iomt-gateway doctor``)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectProbe:
    """How one MQTT CONNECT went: ``reason_code`` is the broker's refusal code, if it answered one."""

    ok: bool
    reason_code: int | None = None
    error: str = ""


async def probe_connect(
    host: str,
    port: int,
    *,
    client_id: str,
    username: str | None,
    password: str | None,
    tls_context: Any,
    timeout_s: float,
) -> ConnectProbe:
    """Connect with this identity, then disconnect: no will, no subscription, no publish, and a clean
    session that expires with the connection, so the broker keeps nothing of it.  Use a client id of its
    own (the daemon's would take over the running daemon's session)."""
    client = aiomqtt.Client(
        host,
        port,
        identifier=client_id,
        username=username,
        password=password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=True,
        tls_context=tls_context,
        timeout=timeout_s,
        keepalive=max(5, int(timeout_s)),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await client.__aenter__()
    except aiomqtt.MqttCodeError as e:
        rc = e.rc.value if isinstance(e.rc, ReasonCode) else e.rc
        return ConnectProbe(False, rc, str(e))
    except (aiomqtt.MqttError, OSError, TimeoutError) as e:
        return ConnectProbe(False, None, str(e) or type(e).__name__)
    with contextlib.suppress(aiomqtt.MqttError, OSError):
        await client.__aexit__(None, None, None)
    return ConnectProbe(True)


# --------------------------------------------------------------------------------------------
# The uplink
# --------------------------------------------------------------------------------------------


class Uplink:
    def __init__(
        self,
        cfg: UpstreamSection,
        outbox: DeliveryQueue,
        *,
        gateway_id: str,
        log: Any = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        backoff_base_s: float = BACKOFF_BASE_S,
        stable_after_s: float = STABLE_AFTER_S,
        outage_warn_after_s: float = uplink_outage.WARN_AFTER_S,
    ) -> None:
        self._cfg = cfg
        self._outbox = outbox
        self._gateway_id = gateway_id
        self._client_id = cfg.client_id or gateway_id
        self._log = (log if log is not None else structlog.get_logger("gateway.uplink")).bind(
            component="uplink", gateway=gateway_id
        )
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._backoff_base_s = backoff_base_s
        self._stable_after_s = stable_after_s
        self._status_topic = status_topic(cfg.topic_prefix, gateway_id)
        self._checkpoint_sent: str | None = None
        self._stats = UplinkStats()
        # Source of truth for "leased and not yet acked in the outbox": whatever is here when a
        # connection ends goes back to the outbox (except rows in ``_acked``, which were delivered).
        self._leased: dict[int, QueuedRow] = {}
        self._ready: deque[QueuedRow] = deque()
        self._acked: list[int] = []
        self._ack_wanted = asyncio.Event()
        self._lease_lock = asyncio.Lock()
        self._leases: set[asyncio.Task[Sequence[QueuedRow]]] = set()
        self._prefetch: asyncio.Task[Sequence[QueuedRow]] | None = None
        self._announced_at: float | None = None
        self._tls: tls.WatchedContext | None = None  # the current connection attempt's
        self._failover = Failover(
            [endpoint(url) for url in cfg.urls], return_after_s=cfg.return_to_primary_s, clock=time.monotonic
        )
        self._attempt: _AckingClient | None = None
        self._attempt_ep: Endpoint | None = None
        self._outage_warn_after_s = outage_warn_after_s
        self._outage: uplink_outage.OutageTracker | None = None

    @property
    def stats(self) -> UplinkStats:
        return replace(self._stats)

    # ---------------------------------------------------------------- connection loop

    async def run(self) -> None:
        """Connect, announce, drain the outbox; reconnect with backoff.  Returns by cancel, or
        when the outbox is closed under it (a shutdown that could wait no longer)."""
        attempt = 0
        try:
            loop = asyncio.get_running_loop()
            self._outage = uplink_outage.OutageTracker(loop.time(), warn_after_s=self._outage_warn_after_s)
            while True:
                self._announced_at = None
                good = False
                try:
                    await self._connection(self._failover.current)
                except ReturnToPrimary:
                    self._failover.return_to_primary()
                    attempt = 0
                    continue
                except OutboxClosed:
                    # The daemon's shutdown closed the outbox before this uplink stopped (it waits
                    # for it only so long): nothing is left to deliver, and nothing is lost -- every
                    # row is still stored and goes again, same key, after the restart.  Raised on,
                    # it failed the daemon's task group: exit code 1 for a plain SIGTERM.
                    self._log.info("uplink_stopped_outbox_closed")
                    return
                except _LINK_ERRORS as e:
                    self._stats.last_error = self._explain(e)
                    self._outage_failed(e)
                    # Only a connection that worked for a while resets the backoff: a broker that
                    # refuses or ignores publishes, or a twin gateway with the same client id
                    # taking the session over, must not get a reconnect every second.
                    up_s = None if self._announced_at is None else loop.time() - self._announced_at
                    good = up_s is not None and up_s >= self._stable_after_s and not isinstance(e, UplinkError)
                finally:
                    self._stats.connected = False
                    await self._settle()
                if good:
                    attempt = 0
                nxt = self._failover.lost()
                cfg = self._cfg
                delay = reconnect_delay(attempt, after_stable=good, base=self._backoff_base_s, cap=cfg.backoff_max_s,
                                        spread=cfg.reconnect_spread_s, rng=self._rng)  # fmt: skip
                self._log.info("uplink_backoff", attempt=attempt, delay_s=round(delay, 3), error=self._stats.last_error,
                               next=str(nxt))  # fmt: skip
                attempt += 1
                await self._wait_retry(delay)
        finally:
            await self._settle()

    def _explain(self, e: BaseException) -> str:
        """What ended a connection, in words; TLS and credential failures logged as errors with their cause."""
        failure = tls.failure_of(self._tls)
        if failure is not None:
            cause = failure.cause.value
            self._log.error("uplink_tls_failed", cause=cause, error=failure.message, detail=failure.detail)
            return failure.message
        if isinstance(e, CredentialError):
            self._log.error("uplink_credentials_unusable", error=str(e))
        return f"{type(e).__name__}: {e}"

    def _outage_failed(self, e: BaseException) -> None:
        assert self._outage is not None
        rc = getattr(e, "rc", None) if isinstance(e, aiomqtt.MqttCodeError) else None
        if isinstance(e, PublishRefused):
            rc = e.reason
        cause = uplink_outage.cause_of(
            e,
            os_error=self._attempt.connect_error if self._attempt is not None else None,
            tls_failed=tls.failure_of(self._tls) is not None,
            reason_code=rc.value if isinstance(rc, ReasonCode) else rc,
        )
        self._log_outage(self._outage.failed(asyncio.get_running_loop().time(), cause, self._stats.last_error or ""))

    def _log_outage(self, w: uplink_outage.OutageWarning | None) -> None:
        if w is not None:
            ep = self._attempt_ep
            self._log.warning(
                "uplink_unreachable",
                host=ep.host if ep else self._cfg.host,
                port=ep.port if ep else self._cfg.port,
                down_s=round(w.down_s),
                cause=w.cause.value,
                error=w.error,
                hint=w.hint,
                attempts=w.attempts,
                next_warning_in_s=round(w.next_in_s),
            )

    async def _wait_retry(self, delay: float) -> None:
        """Sleep until the next attempt, waking to warn if the outage passes a warning time meanwhile."""
        assert self._outage is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while (left := end - loop.time()) > 0:
            to_warn = self._outage.seconds_to_next_warning(loop.time())
            await asyncio.sleep(left if to_warn is None else min(left, to_warn + 0.01))
            self._log_outage(self._outage.due(loop.time()))

    async def _connection(self, ep: Endpoint) -> None:
        self._attempt = None
        self._attempt_ep = ep
        client = self._attempt = await self._make_client(ep)
        if not ep.tls and not is_loopback(ep.host):
            # Every connect, at error level: a setting that sends patients' data in clear must not go unseen.
            self._log.error("uplink_plaintext", host=ep.host, port=ep.port, insecure_plaintext=True)
        self._log.info("uplink_connecting", host=ep.host, port=ep.port, tls=ep.tls)
        try:
            # Inside the try: a connect that times out or is cancelled has opened a socket too.
            await client.__aenter__()
            self._tls = None  # connected: later errors are link errors, not a refused handshake
            self._stats.connected = True
            self._stats.connects += 1
            self._log.info("uplink_connected", host=ep.host, port=ep.port, client_id=self._client_id)
            try:
                await self._pump(client)
            except aiomqtt.MqttError as e:
                self._log.warning("uplink_disconnected", error=str(e), cause=repr(e.__cause__))
                raise
            except BaseException as e:
                # Refusal, timeout, cancellation or a failing outbox: the link may still be up.
                # Rows first (a stopping daemon gives us about a second), then the goodbye,
                # since a normal disconnect makes the broker drop the will.
                self._log.info("uplink_closing", reason=type(e).__name__)
                await self._settle()
                await self._goodbye(client)
                raise
        finally:
            self._stats.connected = False
            client.retrieve_link_error()
            # A failure here means the link was already gone: nothing left to close cleanly.
            client.give_up()  # before: a thread connecting during __aexit__ then closes its socket itself
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)

    async def _make_client(self, ep: Endpoint) -> _AckingClient:
        cfg = self._cfg
        self._tls = None
        password = None
        if cfg.password_file is not None:
            password = await asyncio.to_thread(read_password, cfg.password_file, self._log)
        if ep.tls:
            self._tls = await asyncio.to_thread(tls.client_context, cfg.ca_file, cfg.cert_file, cfg.key_file,
                                                  cfg.crl_file)
        now = self._clock()
        will_props = _properties(PacketTypes.WILLMESSAGE)
        will_props.ContentType = CONTENT_TYPE
        connect_props = _properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = SESSION_EXPIRY_S
        return _AckingClient(
            ep.host,
            ep.port,
            identifier=self._client_id,
            username=cfg.username,
            password=password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=connect_props,
            will=aiomqtt.Will(
                self._status_topic,
                status_payload(self._gateway_id, "offline", now),
                qos=1,
                retain=True,
                properties=will_props,
            ),
            tls_context=self._tls,
            keepalive=cfg.keepalive_s,
            timeout=cfg.publish_timeout_s,
            max_inflight_messages=cfg.inflight + 1,  # +1: the status message
            # paho leaves Nagle on: with several publishes in flight, a small PUBLISH then waits
            # for the ACK of the previous segment, which the peer may delay by up to 40 ms.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            # our own logger, not aiomqtt's "mqtt": aiomqtt sets that one's level when it is
            # imported, which may be after gateway.logs.configure chose it
            logger=logging.getLogger(MQTT_LOGGER),
        )

    async def _publish_status(self, client: _AckingClient, state: str, wait_s: float) -> None:
        props = _properties(PacketTypes.PUBLISH)
        props.ContentType = CONTENT_TYPE
        payload = status_payload(self._gateway_id, state, self._clock())
        reason = await client.publish_acked(self._status_topic, payload, retain=True, properties=props, wait_s=wait_s)
        if reason.is_failure:
            # Usually the broker's ACL: this hub's certificate is not allowed this gateway id's topics.
            self._log.error("uplink_publish_refused", topic=self._status_topic, reason=str(reason))
            raise PublishRefused(self._status_topic, reason)

    async def _goodbye(self, client: _AckingClient) -> None:
        try:
            # the newest checkpoint, so what was delivered in this session is covered by one
            await self._publish_checkpoint(client, min(GOODBYE_TIMEOUT_S, self._cfg.publish_timeout_s))
            await self._publish_status(client, "offline", min(GOODBYE_TIMEOUT_S, self._cfg.publish_timeout_s))
        except (*_LINK_ERRORS, TimeoutError):
            pass  # the will covers a link that died meanwhile

    # ---------------------------------------------------------------- draining

    async def _pump(self, client: _AckingClient) -> None:
        """Announce ``online``, then publish until a task fails; the failure ends the connection.

        The watcher runs from the start, so a link lost during the announcement ends it at once
        instead of after the publish timeout.
        """
        watch = asyncio.create_task(self._watch(client), name="uplink-watch")
        announce = asyncio.create_task(
            self._publish_status(client, "online", self._cfg.publish_timeout_s), name="uplink-announce"
        )
        tasks = [watch, announce]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if announce.done() and announce.exception() is None:
                self._announced_at = asyncio.get_running_loop().time()
                self._failover.connected()
                self._outage_up(self._announced_at)
                tasks.remove(announce)
                tasks += self._start_publishing(client)
                if self._failover.probe_due_in() is not None:
                    tasks.append(asyncio.create_task(self._watch_primary(), name="uplink-watch-primary"))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            else:
                done = {t for t in tasks if t.done()}
            # A refusal or timeout is the root cause even if the link died right after it
            # (Mosquitto closes the link after refusing); otherwise the watcher's "link lost"
            # explains the other tasks' failures best.
            ranked = sorted(done, key=lambda t: (not isinstance(t.exception(), UplinkError), t is not watch))
            for task in ranked:
                exc = task.exception()
                if exc is not None:
                    raise exc
            raise aiomqtt.MqttError("uplink task ended unexpectedly")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _outage_up(self, now: float) -> None:
        recovered = self._outage.up(now) if self._outage is not None else None
        if recovered is not None:
            # At warning level, like the outage it ends: `journalctl -p warning` shows both or neither.
            ep = self._attempt_ep
            self._log.warning(
                "uplink_recovered",
                host=ep.host if ep else self._cfg.host,
                port=ep.port if ep else self._cfg.port,
                down_s=round(recovered.down_s),
                attempts=recovered.attempts,
                last_cause=recovered.cause.value if recovered.cause else None,
            )

    def _start_publishing(self, client: _AckingClient) -> list[asyncio.Task[None]]:
        window = min(self._cfg.inflight, client.receive_maximum or self._cfg.inflight)
        if window < self._cfg.inflight:
            self._log.info("uplink_window_capped", inflight=self._cfg.inflight, receive_maximum=client.receive_maximum)
        self._stats.window = window
        tasks = [asyncio.create_task(self._acker(), name="uplink-acker")]
        tasks += [asyncio.create_task(self._publisher(client), name=f"uplink-publish-{i}") for i in range(window)]
        tasks.append(asyncio.create_task(self._checkpoints(client), name="uplink-checkpoint"))
        return tasks

    async def _checkpoints(self, client: _AckingClient) -> None:
        """Publish the outbox's newest signed checkpoint (retained) whenever it moved."""
        # an outbox without a keyring (and the tests' fake queues) has no checkpoints
        if getattr(self._outbox, "checkpoint", None) is None:
            return
        while True:
            await self._publish_checkpoint(client, self._cfg.publish_timeout_s)
            await asyncio.sleep(CHECKPOINT_EVERY_S)

    async def _publish_checkpoint(self, client: _AckingClient, wait_s: float) -> None:
        source = getattr(self._outbox, "checkpoint", None)
        note = None if source is None else source()
        if note is None or note == self._checkpoint_sent:
            return
        topic = checkpoint_topic(self._cfg.topic_prefix, self._gateway_id)
        props = _properties(PacketTypes.PUBLISH)
        props.ContentType = "text/plain; charset=utf-8"
        reason = await client.publish_acked(topic, note.encode(), retain=True, properties=props, wait_s=wait_s)
        if reason.is_failure:
            self._stats.refused += 1
            raise PublishRefused(topic, reason)
        self._checkpoint_sent = note

    async def _watch(self, client: _AckingClient) -> None:
        # We subscribe to nothing; the iterator's job here is to raise when the link dies, which
        # also ends publishes that would otherwise wait for their timeout.
        async for _message in client.messages:
            pass

    async def _watch_primary(self) -> None:
        """On a failover broker: end the connection once the primary accepts connections again."""
        while (due := self._failover.probe_due_in()) is not None:
            await asyncio.sleep(due)
            primary = self._failover.primary
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    _, writer = await asyncio.open_connection(primary.host, primary.port)
                writer.close()
                self._log.info("uplink_primary_back", primary=str(primary))
                raise ReturnToPrimary(str(primary))
            self._failover.probe_failed()

    async def _next_row(self) -> QueuedRow:
        batch = max(1, self._stats.window)
        while not self._ready:
            async with self._lease_lock:
                if self._ready:
                    break
                if self._prefetch is not None and not self._prefetch.done():
                    await asyncio.shield(self._prefetch)
                    continue
                if not await asyncio.shield(self._start_lease(batch)):
                    await self._outbox.wait_pending(timeout=IDLE_POLL_S)
        row = self._ready.popleft()
        # Keep the next batch coming while this one is in flight: on a slow link the window
        # would otherwise sit idle for a lease round trip (a group commit, at worst) per batch.
        if len(self._ready) < batch and (self._prefetch is None or self._prefetch.done()):
            self._prefetch = self._start_lease(batch)
        return row

    def _start_lease(self, limit: int) -> asyncio.Task[Sequence[QueuedRow]]:
        """Lease in a task of its own, awaited through ``shield`` by whoever needs the rows.

        The rows are booked by a done-callback, so a lease whose caller was cancelled still
        has its rows recorded (and released by ``_settle``) instead of leased forever.
        """
        task = asyncio.create_task(self._lease(limit))
        self._leases.add(task)
        task.add_done_callback(self._leases.discard)
        return task

    async def _lease(self, limit: int) -> Sequence[QueuedRow]:
        rows = await self._outbox.lease(limit)
        for row in rows:
            self._leased[row.id] = row
        self._ready.extend(rows)
        return rows

    async def _publisher(self, client: _AckingClient) -> None:
        prefix = self._cfg.topic_prefix
        wait_s = self._cfg.publish_timeout_s
        while True:
            row = await self._next_row()
            topic = topic_for(prefix, self._gateway_id, row.kind, row.patient)
            props = _properties(PacketTypes.PUBLISH)
            props.UserProperty = [("key", row.key), ("kind", RecordKind(row.kind).value), ("schema", "1")]
            props.ContentType = CONTENT_TYPE
            try:
                reason = await client.publish_acked(topic, row.payload, retain=False, properties=props, wait_s=wait_s)
            except PublishTimeout:
                self._stats.publish_timeouts += 1
                raise
            if reason.is_failure:
                self._stats.refused += 1
                self._log.error("uplink_publish_refused", topic=topic, key=row.key, reason=str(reason))
                raise PublishRefused(topic, reason)
            self._acked.append(row.id)
            self._ack_wanted.set()

    async def _acker(self) -> None:
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        ids = list(self._acked)
        if not ids:
            return
        await self._outbox.ack(ids)
        # Only the prefix we acked: publishers may have appended meanwhile.  Ids stay in
        # ``_acked`` until the ack returns, so an interrupted ack is simply repeated.
        del self._acked[: len(ids)]
        for row_id in ids:
            self._leased.pop(row_id, None)
        self._stats.delivered += len(ids)
        self._stats.last_delivery = self._clock()
        self._log.debug("uplink_acked", count=len(ids))

    def _closed_first(self) -> None:
        # A shutdown that closed the outbox before this uplink settled (it waits only so long):
        # nothing is lost — every row is still stored, and goes again, same key, after the restart.
        self._log.warning("uplink_settled_after_outbox_closed", acked_not_recorded=len(self._acked),
                          leased=len(self._leased), detail="these rows are sent again after the restart")

    async def _settle(self) -> None:
        """Ack what the broker acknowledged; give every other leased row back to the outbox."""
        # Leases still on their way have rows to book first (they are short: no network).
        await asyncio.gather(*self._leases, return_exceptions=True)
        self._prefetch = None
        self._ready.clear()
        try:
            await self._flush_acks()
        except OutboxClosed:
            self._closed_first()
            return
        except Exception as e:
            self._log.error("uplink_ack_failed", error=repr(e), count=len(self._acked))
        delivered = set(self._acked)
        unknown = [row_id for row_id in self._leased if row_id not in delivered]
        if not unknown:
            return
        try:
            await self._outbox.release(unknown)
        except OutboxClosed:
            self._closed_first()
            return
        except Exception as e:
            self._log.error("uplink_release_failed", error=repr(e), count=len(unknown))
            return
        for row_id in unknown:
            del self._leased[row_id]
        self._stats.resent += len(unknown)
        self._log.info("uplink_released", count=len(unknown))
