"""Broker outages a technician can act on: a warning after a minute (then at a slowing interval) naming
the cause, and a recovery line.  The decisions on a manual clock; the causes against real sockets and a
real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.clock import ManualClock
from gateway.config.models import UpstreamSection
from gateway.credentials import CredentialError
from gateway.local_broker import free_port
from gateway.outbox import Outbox
from gateway.uplink import Uplink
from gateway.uplink_outage import OutageCause, OutageTracker, cause_of
from tests.broker import MosquittoBroker

GW = "gw-test"


# --------------------------------------------------------------------------------------------
# Decisions on a manual clock
# --------------------------------------------------------------------------------------------


def test_first_warning_after_a_minute_then_at_a_slowing_interval() -> None:
    clock = ManualClock(mono=1000.0)
    t = OutageTracker(clock.monotonic())
    warnings = []
    # The uplink retries every ~10 s and asks in between: count when warnings come out.
    for _ in range(2000):  # 20,000 s
        clock.advance(10)
        w = t.failed(clock.monotonic(), OutageCause.REFUSED, "MqttError: [Errno 111] Connection refused")
        if w is not None:
            warnings.append((clock.monotonic() - 1000.0, w))
    times = [round(at) for at, _ in warnings]
    # 1 min, then 2, 4, 8, 16, 32 min apart, then capped at an hour.
    assert times[:8] == [60, 180, 420, 900, 1860, 3780, 7380, 10980]
    first = warnings[0][1]
    assert first.down_s == 60 and first.cause is OutageCause.REFUSED and first.attempts == 6
    assert first.next_in_s == 120 and "is the broker running" in first.hint


def test_no_warning_for_a_short_outage_and_no_recovery_line_either() -> None:
    clock = ManualClock(mono=0.0)
    t = OutageTracker(clock.monotonic())
    assert t.up(clock.monotonic()) is None  # connected at start: nothing to say
    clock.advance(3600)
    assert t.failed(clock.monotonic(), OutageCause.LINK_LOST, "lost") is None  # the outage starts now
    clock.advance(59)
    assert t.failed(clock.monotonic(), OutageCause.REFUSED, "refused") is None
    assert t.due(clock.monotonic()) is None
    assert t.up(clock.monotonic()) is None


def test_due_warns_between_attempts_and_recovery_reports_the_outage() -> None:
    clock = ManualClock(mono=0.0)
    t = OutageTracker(clock.monotonic(), warn_after_s=60)
    assert t.failed(clock.monotonic(), OutageCause.DNS, "name does not resolve") is None
    assert t.seconds_to_next_warning(clock.monotonic()) == 60
    clock.advance(30)
    assert t.due(clock.monotonic()) is None
    clock.advance(30)
    w = t.due(clock.monotonic())  # no new attempt in between (a long backoff): still on time
    assert w is not None and w.cause is OutageCause.DNS and w.attempts == 1
    assert t.due(clock.monotonic()) is None  # said once
    clock.advance(15)
    r = t.up(clock.monotonic())
    assert r is not None and r.down_s == 75 and r.cause is OutageCause.DNS
    assert t.down_since is None and t.up(clock.monotonic()) is None


def test_a_new_outage_starts_the_schedule_again() -> None:
    clock = ManualClock(mono=0.0)
    t = OutageTracker(clock.monotonic(), warn_after_s=60)
    clock.advance(61)
    assert t.failed(clock.monotonic(), OutageCause.REFUSED, "x") is not None
    clock.advance(100)
    t.up(clock.monotonic())
    clock.advance(1000)
    assert t.failed(clock.monotonic(), OutageCause.TIMEOUT, "y") is None
    clock.advance(60)
    w = t.failed(clock.monotonic(), OutageCause.TIMEOUT, "y")
    assert w is not None and w.down_s == 60 and w.next_in_s == 120


def test_causes_from_real_errors() -> None:
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection(("127.0.0.1", free_port()), timeout=2)
    assert cause_of(Exception("wrapped"), os_error=refused.value) is OutageCause.REFUSED
    with pytest.raises(socket.gaierror) as dns:
        socket.getaddrinfo("no-such-host.invalid", 8883)
    assert cause_of(Exception("wrapped"), os_error=dns.value) is OutageCause.DNS
    assert cause_of(dns.value) is OutageCause.DNS  # raised directly
    assert cause_of(Exception(), os_error=TimeoutError()) is OutageCause.TIMEOUT
    assert cause_of(Exception(), os_error=OSError(113, "No route to host")) is OutageCause.UNREACHABLE
    assert cause_of(Exception(), os_error=refused.value, tls_failed=True) is OutageCause.TLS
    assert cause_of(CredentialError("password file /x: No such file")) is OutageCause.AUTH
    assert cause_of(Exception(), reason_code=0x86) is OutageCause.AUTH  # bad user name or password
    assert cause_of(Exception(), reason_code=0x87) is OutageCause.AUTH  # not authorised
    assert cause_of(Exception(), reason_code=0x89) is OutageCause.BROKER  # server busy
    assert cause_of(Exception("link lost")) is OutageCause.LINK_LOST


# --------------------------------------------------------------------------------------------
# The uplink logs them, with the cause told apart on real sockets
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    ob = await Outbox.open(tmp_path / "outbox.db", gateway_id=GW, commit_interval_ms=20)
    yield ob
    await ob.close()


async def _warnings_of(cfg: UpstreamSection, outbox: Outbox, wanted: str, within_s: float = 20) -> list[Any]:
    uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05, outage_warn_after_s=0.5)
    with capture_logs() as logs:
        task = asyncio.create_task(uplink.run())
        try:
            async with asyncio.timeout(within_s):
                while not any(e["event"] == wanted for e in logs):  # noqa: ASYNC110 - the uplink's log
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return [e for e in logs if e["event"] == wanted]


def _upstream(url: str, **kw: Any) -> UpstreamSection:
    return UpstreamSection(url=url, publish_timeout_s=2.0, keepalive_s=5, backoff_max_s=1.0, **kw)


async def test_closed_port_is_reported_as_refused(outbox: Outbox) -> None:
    port = free_port()
    (w, *_) = await _warnings_of(_upstream(f"mqtt://127.0.0.1:{port}"), outbox, "uplink_unreachable")
    assert w["log_level"] == "warning"
    assert w["cause"] == "refused" and w["port"] == port and w["host"] == "127.0.0.1"
    assert "Connection refused" in w["error"] and w["down_s"] >= 0 and w["attempts"] >= 1


async def test_unresolvable_host_is_reported_as_dns(outbox: Outbox) -> None:
    cfg = _upstream("mqtt://localhost:1883").model_copy(update={"url": "mqtts://no-such-broker.invalid:8883"})
    (w, *_) = await _warnings_of(cfg, outbox, "uplink_unreachable")
    assert w["cause"] == "dns", w
    assert "does not resolve" in w["hint"]


async def test_wrong_password_is_reported_as_auth_and_recovery_is_logged(tmp_path: Path, outbox: Outbox) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    try:
        cmd = ["mosquitto_passwd", "-b", str(passwd), "hub-a", "right-one"]
        subprocess.run(cmd, check=True, capture_output=True)  # noqa: ASYNC221 - setup, before any task runs
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mosquitto_passwd unavailable")
    b = MosquittoBroker(tmp_path / "auth", extra_config=f"allow_anonymous false\npassword_file {passwd}")
    b.start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("wrong-one\n")
        secret.chmod(0o600)
        cfg = _upstream(b.url, username="hub-a", password_file=secret)
        uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05, outage_warn_after_s=0.5)
        with capture_logs() as logs:
            task = asyncio.create_task(uplink.run())
            try:
                async with asyncio.timeout(20):
                    while not any(e["event"] == "uplink_unreachable" for e in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    secret.write_text("right-one\n")  # the technician fixes the file; read at each connect
                    while not any(e["event"] == "uplink_recovered" for e in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        (w, *_) = [e for e in logs if e["event"] == "uplink_unreachable"]
        assert w["cause"] == "auth", w
        (r,) = [e for e in logs if e["event"] == "uplink_recovered"]
        assert r["log_level"] == "warning" and r["last_cause"] == "auth" and r["down_s"] >= 0
        assert "right-one" not in repr(logs) and "wrong-one" not in repr(logs)
    finally:
        b.kill()
