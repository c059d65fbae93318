"""The MQTT uplink against a real Mosquitto (tests/broker.py) and a real outbox."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import string
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway import uplink as uplink_module
from gateway.config.models import UpstreamSection
from gateway.failover import backoff_delay
from gateway.outbox import Outbox
from gateway.records import (
    AlarmEvent,
    AlarmRecord,
    ClockQuality,
    RecordKind,
    Severity,
    SummaryRecord,
    Vital,
)
from gateway.uplink import Uplink, status_topic, topic_for, topic_level
from tests.broker import MosquittoBroker, Received, Subscriber, TcpProxy, TlsFiles

GW = "gw-test"
PREFIX = "iomt"


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    # Short group-commit interval: acks and releases show in ``stats()`` after a commit.
    ob = await Outbox.open(tmp_path / "outbox.db", gateway_id=GW, commit_interval_ms=20)
    yield ob
    await ob.close()


def depth(outbox: Outbox) -> tuple[int, int]:
    """(pending, leased) as of the outbox's last commit."""
    classes = outbox.stats().classes.values()
    return sum(c.pending for c in classes), sum(c.leased for c in classes)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def summary(outbox: Outbox, patient: str = "p1", i: int = 0) -> SummaryRecord:
    return SummaryRecord(
        key=outbox.next_key(),
        gateway_id=GW,
        patient=patient,
        time=T0,
        clock=ClockQuality.SYNCED,
        vital=Vital.HEART_RATE,
        unit="/min",
        period_start=T0,
        period_end=T0,
        count=60,
        min=60.0 + i % 7,
        mean=70.0,
        max=80.0,
        quality=1.0,
        devices=["hr1"],
    )


def alarm(outbox: Outbox, patient: str = "p1", i: int = 0) -> AlarmRecord:
    return AlarmRecord(
        key=outbox.next_key(),
        gateway_id=GW,
        patient=patient,
        time=T0,
        clock=ClockQuality.SYNCED,
        alarm_id=f"a{i}",
        event=AlarmEvent.RAISED,
        condition="spo2_low",
        technical=False,
        severity=Severity.HIGH,
        vital=Vital.SPO2,
        value=85.0,
        threshold=88.0,
    )


async def submit_mixed(outbox: Outbox, n: int, patients: Sequence[str] = ("p1", "p2")) -> list[str]:
    """``n`` records, one alarm in five, round-robin over ``patients``; returns their keys."""
    keys: list[str] = []
    futures = []
    for i in range(n):
        make = alarm if i % 5 == 0 else summary
        record = make(outbox, patients[i % len(patients)], i)
        keys.append(record.key)
        futures.append(outbox.submit(record))
    await asyncio.gather(*futures)
    return keys


def upstream(url: str, **kw: Any) -> UpstreamSection:
    base: dict[str, Any] = {"url": url, "topic_prefix": PREFIX, "publish_timeout_s": 5.0, "keepalive_s": 5}
    base.update(kw)
    return UpstreamSection(**base)


@contextlib.asynccontextmanager
async def running(uplink: Uplink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(uplink.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def record_keys(received: Sequence[Received]) -> list[str]:
    return [r.user_properties["key"] for r in received if not r.topic.endswith("/status")]


def first_arrivals(received: Sequence[Received]) -> list[Received]:
    seen: set[str] = set()
    out = []
    for r in received:
        if r.topic.endswith("/status"):
            continue
        key = r.user_properties["key"]
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def states(received: Sequence[Received]) -> list[str]:
    return [r.json()["state"] for r in received if r.topic == status_topic(PREFIX, GW)]


async def announced(uplink: Uplink, subscriber: Subscriber) -> None:
    """The first connection is up and the uplink itself has its "online" PUBACK (it then opens its
    publish window).  The subscriber seeing "online" is not enough before a test cuts the link:
    the PUBACK may still be on its way back, and the uplink would then time out on its status
    message, not on the rows the test submits (seen in CI on a loaded machine)."""
    await subscriber.wait_until(lambda rs: states(rs) == ["online"])
    await until(lambda: uplink.stats.window > 0)


async def until(predicate: Callable[[], bool], within_s: float = 60.0) -> None:
    """Poll a condition; the deadline only turns a hang into a failure."""

    async def _poll() -> None:
        while not predicate():  # noqa: ASYNC110 - watches state owned by other objects
            await asyncio.sleep(0.02)

    await asyncio.wait_for(_poll(), within_s)


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def test_topic_layout() -> None:
    assert topic_for("iomt", "gw-1", RecordKind.ALARM, "p-7") == "iomt/gw-1/alarm/p-7"
    assert topic_for("site/a", "gw-1", RecordKind.BILLING, "p") == "site/a/gw-1/billing/p"
    assert status_topic("iomt", "gw-1") == "iomt/gw-1/status"


_ESCAPES = {"%2F": "/", "%2B": "+", "%23": "#", "%25": "%", "%00": "\x00"}


def _unescape(level: str) -> str:
    # One left-to-right pass, so a decoded "%" never forms a new escape with what follows.
    return re.sub("%(2F|2B|23|25|00)", lambda m: _ESCAPES[m.group(0)], level)


@given(st.text())
def test_topic_level_is_safe_and_reversible(value: str) -> None:
    level = topic_level(value)
    assert not any(c in level for c in "/+#\x00")
    assert _unescape(level) == value


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=64))
def test_topic_level_keeps_ids_verbatim(value: str) -> None:
    assert topic_level(value) == value


@given(st.integers(0, 200), st.floats(0.001, 10), st.floats(1, 3600), st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_the_cap(attempt: int, base: float, cap: float, seed: int) -> None:
    d = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= d <= min(cap, base * 2.0 ** min(attempt, 64))


# --------------------------------------------------------------------------------------------
# Against a real broker
# --------------------------------------------------------------------------------------------


async def test_an_outbox_closed_under_a_running_uplink_ends_it_without_an_error(
    broker: MosquittoBroker, outbox: Outbox
) -> None:
    # The daemon cancels the uplink, waits 2 s, then closes the outbox; a loaded machine let a
    # publisher reach the closed outbox first, and OutboxClosed failed the daemon's task group:
    # exit code 1 for a plain SIGTERM (tests/test_daemon_e2e.py, once in a CI run).
    uplink = Uplink(upstream(broker.url), outbox, gateway_id=GW)
    task = asyncio.create_task(uplink.run())
    try:
        await until(lambda: uplink.stats.connected)
        await outbox.close()
        await asyncio.wait_for(task, 30.0)  # returns: no exception
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not uplink.stats.connected


async def test_every_record_delivered_once_with_properties(
    broker: MosquittoBroker, subscriber: Subscriber, outbox: Outbox
) -> None:
    keys = await submit_mixed(outbox, 300, patients=("p1", "p2", "p3"))
    uplink = Uplink(upstream(broker.url, inflight=8), outbox, gateway_id=GW)
    async with running(uplink):
        await subscriber.wait_until(lambda rs: len(record_keys(rs)) >= len(keys))
        await until(lambda: uplink.stats.delivered == len(keys))
        await until(lambda: depth(outbox) == (0, 0))
        stats = uplink.stats
    got = subscriber.records()
    assert sorted(record_keys(got)) == sorted(keys)  # each once, none extra
    assert stats.connects == 1 and stats.resent == 0 and stats.last_delivery is not None
    assert stats.window == 8
    for r in got:
        doc = r.json()
        assert r.topic == topic_for(PREFIX, GW, RecordKind(doc["kind"]), doc["patient"])
        assert r.user_properties == {"key": doc["key"], "kind": doc["kind"], "schema": "1"}
        assert r.content_type == "application/json"
        assert not r.retain


async def test_window_respects_the_brokers_receive_maximum(tmp_path: Path, outbox: Outbox) -> None:
    with MosquittoBroker(tmp_path / "rm-broker", extra_config="max_inflight_messages 3") as b:
        keys = await submit_mixed(outbox, 30)
        uplink = Uplink(upstream(b.url, inflight=32), outbox, gateway_id=GW)
        async with running(uplink):
            await until(lambda: uplink.stats.delivered == len(keys))
            assert uplink.stats.window == 3


async def test_alarm_overtakes_waiting_summaries(
    broker: MosquittoBroker, subscriber: Subscriber, outbox: Outbox
) -> None:
    for i in range(20):
        await outbox.submit(summary(outbox, "p1", i))
    late_alarm = alarm(outbox, "p1")
    await outbox.submit(late_alarm)
    uplink = Uplink(upstream(broker.url, inflight=4), outbox, gateway_id=GW)
    async with running(uplink):
        await subscriber.wait_until(lambda rs: len(record_keys(rs)) >= 21)
    assert record_keys(subscriber.received)[0] == late_alarm.key


async def test_broker_down_then_back_delivers_everything_in_class_order(
    broker: MosquittoBroker, subscriber: Subscriber, outbox: Outbox
) -> None:
    # Through a proxy only to hold the uplink back until the test's subscriber is subscribed
    # again: Mosquitto 2.0 does not queue for a restored offline session before it reconnects.
    proxy = TcpProxy(broker.port)
    await proxy.start()
    cfg = upstream(proxy.url, inflight=4, backoff_max_s=1.0)
    uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05)
    try:
        async with running(uplink):
            before = await submit_mixed(outbox, 50)
            await subscriber.wait_until(lambda rs: len(record_keys(rs)) >= len(before))
            proxy.refuse()
            broker.stop()
            during = await submit_mixed(outbox, 200)
            await until(lambda: not uplink.stats.connected)
            broker.start()
            await subscriber.wait_subscriptions(2)
            proxy.heal()
            await subscriber.wait_until(lambda rs: set(before + during) <= set(record_keys(rs)))
            await until(lambda: depth(outbox) == (0, 0))
            stats = uplink.stats
    finally:
        await proxy.close()
    assert stats.connects >= 2
    arrivals = first_arrivals(subscriber.received)
    assert {r.user_properties["key"] for r in arrivals} == set(before + during)
    for kind in (RecordKind.ALARM, RecordKind.SUMMARY):
        seqs = [int(r.user_properties["key"].rpartition(":")[2]) for r in arrivals if r.user_properties["kind"] == kind]
        assert seqs == sorted(seqs), f"{kind} records out of order"


async def test_will_says_offline_when_the_link_dies_and_online_after_reconnect(
    broker: MosquittoBroker, subscriber: Subscriber, outbox: Outbox
) -> None:
    proxy = TcpProxy(broker.port)
    await proxy.start()
    uplink = Uplink(upstream(proxy.url, backoff_max_s=1.0), outbox, gateway_id=GW, backoff_base_s=0.05)
    try:
        async with running(uplink):
            await subscriber.wait_until(lambda rs: states(rs) == ["online"])
            proxy.sever()  # RST: the broker sees an unclean loss and publishes the will
            await subscriber.wait_until(lambda rs: states(rs)[:2] == ["online", "offline"])
            await subscriber.wait_until(lambda rs: states(rs)[:3] == ["online", "offline", "online"])
            assert uplink.stats.connects == 2
            # A late subscriber is told the current state by the retained message.
            async with Subscriber("127.0.0.1", broker.port, topic=status_topic(PREFIX, GW), client_id="late") as late:
                await late.wait_until(lambda rs: len(rs) == 1)
                assert late.received[0].retain and late.received[0].json()["state"] == "online"
        # A deliberate stop announces offline itself (a normal DISCONNECT drops the will).
        await subscriber.wait_until(lambda rs: states(rs)[-1:] == ["offline"])
        doc = subscriber.status()[-1].json()
        assert doc["gateway_id"] == GW and doc["schema"] == 1
        datetime.fromisoformat(doc["time"])
    finally:
        await proxy.close()


async def test_publish_timeout_releases_rows_and_nothing_is_lost(
    broker: MosquittoBroker, subscriber: Subscriber, outbox: Outbox
) -> None:
    proxy = TcpProxy(broker.port)
    await proxy.start()
    cfg = upstream(proxy.url, inflight=8, publish_timeout_s=0.5, backoff_max_s=1.0)
    uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05)
    try:
        async with running(uplink):
            await announced(uplink, subscriber)
            proxy.blackhole()  # half-open link: bytes vanish, no RST
            keys = await submit_mixed(outbox, 40)
            await until(lambda: uplink.stats.publish_timeouts >= 1)
            await until(lambda: uplink.stats.resent >= 1)
            # Outcome unknown: the rows are back in the outbox, not lost and not acked.
            pending, leased = depth(outbox)
            assert pending + leased == len(keys)
            assert uplink.stats.delivered == 0
            proxy.heal()
            proxy.sever()  # let the uplink start over on a fresh link
            await subscriber.wait_until(lambda rs: set(keys) <= set(record_keys(rs)))
            await until(lambda: depth(outbox) == (0, 0))
    finally:
        await proxy.close()


@pytest.mark.slow
async def test_flapping_link_loses_nothing(broker: MosquittoBroker, subscriber: Subscriber, outbox: Outbox) -> None:
    """Records keep coming while the link is cut, frozen and restored on a seeded schedule."""
    proxy = TcpProxy(broker.port)
    await proxy.start()
    cfg = upstream(proxy.url, inflight=16, publish_timeout_s=0.4, backoff_max_s=1.0)
    uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.02, rng=random.Random(1))
    rng = random.Random(42)
    keys: list[str] = []
    try:
        async with running(uplink):
            for _ in range(12):
                keys += await submit_mixed(outbox, rng.randint(20, 120))
                await asyncio.sleep(rng.uniform(0.0, 0.15))
                fault = rng.choice(["sever", "blackhole", "none"])
                if fault == "sever":
                    proxy.sever()
                elif fault == "blackhole":
                    proxy.blackhole()
                    await asyncio.sleep(rng.uniform(0.5, 0.8))  # beyond the publish timeout
                    proxy.heal()
                    proxy.sever()
            await subscriber.wait_until(lambda rs: set(keys) <= set(record_keys(rs)), within_s=60)
            await until(lambda: depth(outbox) == (0, 0), within_s=30)
            stats = uplink.stats
    finally:
        await proxy.close()
    assert stats.delivered >= len(keys)  # duplicates allowed, losses not
    assert stats.connects > 1 and stats.resent > 0 and stats.publish_timeouts > 0


async def test_cancel_gives_leased_rows_back(broker: MosquittoBroker, outbox: Outbox) -> None:
    proxy = TcpProxy(broker.port)
    await proxy.start()
    uplink = Uplink(upstream(proxy.url, inflight=16, publish_timeout_s=30.0), outbox, gateway_id=GW)
    try:
        task = asyncio.create_task(uplink.run())
        await until(lambda: uplink.stats.window > 0)  # announced: see ``announced``
        proxy.blackhole()
        keys = await submit_mixed(outbox, 50)
        await until(lambda: depth(outbox)[1] > 0)  # publishes are in flight, unanswered
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await until(lambda: depth(outbox) == (len(keys), 0))
        assert uplink.stats.delivered == 0 and uplink.stats.resent > 0
    finally:
        await proxy.close()


class GatedLease:
    """The real outbox, except that a lease's answer is held back until ``gate`` opens."""

    def __init__(self, inner: Outbox) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def lease(self, limit: int) -> Any:
        rows = await self.inner.lease(limit)  # leased in the outbox from here on
        if rows:
            self.holding.set()
            await self.gate.wait()
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_cancel_during_a_lease_still_gives_the_rows_back(broker: MosquittoBroker, outbox: Outbox) -> None:
    gated = GatedLease(outbox)
    uplink = Uplink(upstream(broker.url, inflight=4), gated, gateway_id=GW)  # type: ignore[arg-type]
    task = asyncio.create_task(uplink.run())
    keys = await submit_mixed(outbox, 10)
    await asyncio.wait_for(gated.holding.wait(), 10)
    task.cancel()
    for _ in range(5):  # let the cancellation reach the publishers waiting for the lease
        await asyncio.sleep(0)
    gated.gate.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await until(lambda: depth(outbox) == (len(keys), 0))


async def test_refused_publish_keeps_the_row(tmp_path: Path, outbox: Outbox) -> None:
    """An MQTT 5 PUBACK with 'not authorised' is not a delivery."""
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {PREFIX}/{GW}/status\ntopic readwrite {PREFIX}/{GW}/summary/#\n")
    with MosquittoBroker(tmp_path / "acl-broker", extra_config=f"acl_file {acl}") as b:
        await outbox.submit(alarm(outbox, "p1"))
        cfg = upstream(b.url, backoff_max_s=1.0)
        uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05)
        with capture_logs() as logs:
            async with running(uplink):
                await until(lambda: sum(e["event"] == "uplink_backoff" for e in logs) >= 3)
                stats = uplink.stats
    assert stats.delivered == 0 and stats.refused >= 3
    assert "0x87" in (stats.last_error or "")
    assert sum(depth(outbox)) == 1  # still there, to be sent once the ACL is fixed
    assert any(e["event"] == "uplink_publish_refused" for e in logs)
    # Connecting works, publishing does not: the backoff must still grow.
    assert [e["attempt"] for e in logs if e["event"] == "uplink_backoff"][:3] == [0, 1, 2]


async def test_backoff_schedule_uses_injected_rng_and_resets_after_a_good_connect(
    tmp_path: Path, outbox: Outbox
) -> None:
    b = MosquittoBroker(tmp_path / "b")  # configured, not started: connection refused
    cfg = upstream(b.url, backoff_max_s=1.0)
    uplink = Uplink(cfg, outbox, gateway_id=GW, rng=random.Random(7), backoff_base_s=0.02, stable_after_s=1.0)

    def backoffs() -> list[dict[str, Any]]:
        return [e for e in logs if e["event"] == "uplink_backoff"]

    with capture_logs() as logs:
        async with running(uplink):
            await until(lambda: len(backoffs()) >= 7)
            b.start()
            try:
                # Up too briefly to count as good: the schedule goes on growing.
                await until(lambda: uplink.stats.connected)
                refused_before = len(backoffs())
                b.stop()
                await until(lambda: len(backoffs()) >= refused_before + 2)
                # Up long enough: the next backoff starts from attempt 0 again.
                b.start()
                await until(lambda: uplink.stats.connected)
                await asyncio.sleep(1.1)
                stable_before = len(backoffs())
                b.stop()
                await until(lambda: len(backoffs()) >= stable_before + 2)
            finally:
                b.kill()
    attempts = [e["attempt"] for e in backoffs()]
    assert attempts[:refused_before] == list(range(refused_before))
    assert attempts[refused_before] == refused_before  # a brief connection resets nothing
    assert attempts[stable_before : stable_before + 2] == [0, 1]
    replay = random.Random(7)
    for i, e in enumerate(backoffs()[:refused_before]):
        expected = backoff_delay(i, base=0.02, cap=1.0, rng=replay)
        assert e["delay_s"] == round(expected, 3)
        assert 0 <= e["delay_s"] <= min(1.0, 0.02 * 2**i)


async def test_mutual_tls(tls_broker: MosquittoBroker, tls_files: TlsFiles, outbox: Outbox) -> None:
    keys = await submit_mixed(outbox, 20)
    cfg = upstream(
        tls_broker.url,
        ca_file=tls_files.ca,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    )
    uplink = Uplink(cfg, outbox, gateway_id=GW)
    async with running(uplink):
        await until(lambda: uplink.stats.delivered == len(keys))
        await until(lambda: depth(outbox) == (0, 0))


async def test_tls_without_client_certificate_is_refused(
    tls_broker: MosquittoBroker, tls_files: TlsFiles, outbox: Outbox
) -> None:
    await submit_mixed(outbox, 3)
    cfg = upstream(tls_broker.url, ca_file=tls_files.ca, backoff_max_s=1.0)
    uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05)
    with capture_logs() as logs:
        async with running(uplink):
            await until(lambda: sum(e["event"] == "uplink_backoff" for e in logs) >= 2)
            stats = uplink.stats
    assert stats.delivered == 0 and stats.last_error is not None and stats.connects == 0
    assert depth(outbox) == (3, 0)


async def test_password_file_is_used(tmp_path: Path, outbox: Outbox) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_passwd", "-b", str(passwd), "gw", "s3cret", stdout=asyncio.subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        pytest.skip("mosquitto_passwd unavailable")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = f"allow_anonymous false\npassword_file {passwd}"
    with MosquittoBroker(tmp_path / "auth-broker", extra_config=config) as b:
        keys = await submit_mixed(outbox, 5)
        uplink = Uplink(upstream(b.url, username="gw", password_file=secret), outbox, gateway_id=GW)
        async with running(uplink):
            await until(lambda: uplink.stats.delivered == len(keys))


class SilentBroker:
    """Accepts TCP connections and never answers: each CONNECT waits for a CONNACK that never comes."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"mqtt://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open += 1
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def test_failed_and_cancelled_connects_close_their_sockets(outbox: Outbox) -> None:
    """A broker that never sends CONNACK: every timed-out connect, and the one cancelled at
    shutdown, must close its socket instead of leaving it open for good."""
    silent = SilentBroker()
    url = await silent.start()
    uplink = Uplink(upstream(url, publish_timeout_s=0.3, backoff_max_s=1.0), outbox, gateway_id=GW,
                    backoff_base_s=0.01)
    try:
        task = asyncio.create_task(uplink.run())
        await until(lambda: silent.accepted >= 3)  # two timed out, the third is waiting
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await until(lambda: silent.open == 0, within_s=5.0)
    finally:
        await silent.close()


async def test_a_connect_cancelled_while_its_thread_connects_closes_the_socket_it_opens_later(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiomqtt connects the socket in an executor thread, which a cancel does not stop: the socket
    it opens after the attempt was given up must be closed too, not kept until the client is
    collected (a CI run under load saw one still open 5 s after a shutdown)."""
    silent = SilentBroker()
    url = await silent.start()
    started = threading.Event()
    real = uplink_module._AckingClient._client_connect

    def slow_connect(self: Any) -> None:
        started.set()
        time.sleep(0.5)  # the cancel lands while this thread is connecting
        real(self)

    monkeypatch.setattr(uplink_module._AckingClient, "_client_connect", slow_connect)
    uplink = Uplink(upstream(url, publish_timeout_s=5.0), outbox, gateway_id=GW)
    try:
        task = asyncio.create_task(uplink.run())
        await until(started.is_set)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await until(lambda: silent.accepted == 1)  # the thread went on and connected after the cancel
        await until(lambda: silent.open == 0, within_s=5.0)
    finally:
        await silent.close()


async def test_an_uplink_settling_after_its_outbox_closed_says_so_and_loses_nothing(
    broker: MosquittoBroker, subscriber: Subscriber, tmp_path: Path
) -> None:
    # A shutdown that gave up waiting for the uplink closes the outbox under it.
    path = tmp_path / "closing.db"
    ob = await Outbox.open(path, gateway_id=GW, commit_interval_ms=20)
    proxy = TcpProxy(broker.port)
    await proxy.start()
    uplink = Uplink(upstream(proxy.url, inflight=4, publish_timeout_s=30.0), ob, gateway_id=GW, backoff_base_s=0.05)
    try:
        with capture_logs() as logs:
            async with running(uplink):
                await announced(uplink, subscriber)
                proxy.blackhole()  # publishes hang: rows stay leased
                keys = await submit_mixed(ob, 10)
                await until(lambda: depth(ob)[1] > 0)
                await ob.close()
    finally:
        await proxy.close()
    events = {e["event"]: e for e in logs}
    assert "uplink_settled_after_outbox_closed" in events, sorted(events)
    assert events["uplink_settled_after_outbox_closed"]["log_level"] == "warning"
    assert not [e for e in logs if e["log_level"] == "error" and e["event"].startswith("uplink_")]
    assert Outbox.inspect(path).depth == len(keys)  # every row still stored, to go again


# --------------------------------------------------------------------------------------------
# A cancel that comes as what is awaited completes (Python 3.11's asyncio.wait_for dropped it)
# --------------------------------------------------------------------------------------------


async def cancelled_within(task: asyncio.Task[None], within_s: float) -> bool:
    """Whether ``task``, already cancelled (or about to be), ends as cancelled within ``within_s``.
    One that does not is cancelled again, so that the test ends either way."""
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=within_s)
        return False
    return task.cancelled()


async def test_a_stop_that_comes_with_a_puback_still_stops_the_uplink(
    broker: MosquittoBroker, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's stop cancels the uplink in the loop turn that reads a PUBACK.  The publisher
    awaiting that PUBACK is cancelled by the uplink one turn later, before it resumes: Python
    3.11's ``asyncio.wait_for`` then returns the PUBACK and drops the cancel (CPython gh-86296),
    and that publisher went on publishing for good while the uplink waited for it (a CI daemon
    did not exit 30 s after SIGTERM)."""
    task: asyncio.Task[None] | None = None
    pubacks = 0
    real = uplink_module._AckingClient._on_publish

    def on_publish(self: Any, *args: Any) -> None:
        nonlocal pubacks
        real(self, *args)
        pubacks += 1
        if pubacks == 5 and task is not None:  # "online" and a few records are through
            task.cancel()

    monkeypatch.setattr(uplink_module._AckingClient, "_on_publish", on_publish)
    await submit_mixed(outbox, 200)
    uplink = Uplink(upstream(broker.url, inflight=4), outbox, gateway_id=GW)
    task = asyncio.create_task(uplink.run())
    assert await cancelled_within(task, 10.0), f"kept running: {pubacks} PUBACKs, {uplink.stats.delivered} delivered"
    assert pubacks < 50  # it stopped where it was cancelled, not after draining the outbox


async def test_a_stop_that_comes_with_the_connack_still_stops_the_uplink(
    broker: MosquittoBroker, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same in aiomqtt's connect, which awaits the CONNACK through ``asyncio.wait_for``."""
    task: asyncio.Task[None] | None = None
    real = uplink_module._AckingClient._on_connect

    def on_connect(self: Any, *args: Any) -> None:
        real(self, *args)
        assert task is not None
        task.cancel()

    monkeypatch.setattr(uplink_module._AckingClient, "_on_connect", on_connect)
    await submit_mixed(outbox, 20)
    uplink = Uplink(upstream(broker.url, inflight=4), outbox, gateway_id=GW)
    task = asyncio.create_task(uplink.run())
    assert await cancelled_within(task, 10.0), f"kept running: {uplink.stats.delivered} delivered"
    assert uplink.stats.delivered == 0
    await until(lambda: depth(outbox) == (20, 0))


async def test_records_and_checkpoints_together_stay_within_the_brokers_receive_maximum(tmp_path: Path) -> None:
    """The checkpoint publisher used to run beside a window as wide as Receive Maximum: 4
    unacknowledged publishes against a broker's 3.  A proxy between uplink and broker counts the
    QoS 1 PUBLISHes not yet acknowledged, with PUBACKs slowed down so that the window stays full."""
    from gateway import keyring  # noqa: PLC0415
    from tests.mqtt_wire import _u16, packets  # noqa: PLC0415

    outstanding: set[int] = set()
    peak = [0]
    topics: set[str] = set()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", port)
        ub, db = bytearray(), bytearray()

        async def up() -> None:
            while data := await reader.read(65536):
                ub.extend(data)
                for kind, flags, body in packets(ub):
                    if kind == 3 and (flags >> 1) & 3 == 1:
                        tl = _u16(body, 0)
                        topics.add(body[2 : 2 + tl].decode())
                        outstanding.add(_u16(body, 2 + tl))
                        peak[0] = max(peak[0], len(outstanding))
                uw.write(data)
                await uw.drain()

        async def down() -> None:
            while data := await ur.read(65536):
                await asyncio.sleep(0.1)  # a slow WAN: PUBACKs come late, the window fills
                db.extend(data)
                for kind, _flags, body in packets(db):
                    if kind == 4:
                        outstanding.discard(_u16(body, 0))
                writer.write(data)
                await writer.drain()

        await asyncio.gather(up(), down(), return_exceptions=True)
        writer.close()
        uw.close()

    ring, _ = keyring.init(tmp_path / "keyring")
    ob = await Outbox.open(tmp_path / "o.db", gateway_id=GW, keyring=ring, commit_interval_ms=20)
    with MosquittoBroker(tmp_path / "rm-broker", extra_config="max_inflight_messages 3") as b:
        srv = await asyncio.start_server(lambda r, w: proxy(r, w, b.port), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        uplink = Uplink(upstream(f"mqtt://127.0.0.1:{port}", inflight=32), ob, gateway_id=GW)
        try:
            async with running(uplink):
                # a steady stream, so the chain moves and a new checkpoint goes out beside the records
                for round_ in range(15):
                    await asyncio.gather(*(ob.submit(summary(ob, i=i)) for i in range(12)))
                    await until(lambda r=round_: uplink.stats.delivered >= 12 * (r + 1))
                assert uplink.stats.window == 3
        finally:
            srv.close()
            await ob.close()
    assert f"{PREFIX}/{GW}/checkpoint" in topics  # the checkpoint did share the link
    assert uplink.stats.refused == 0 and peak[0] <= 3, peak
