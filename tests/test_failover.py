"""Broker failover decisions (gateway/failover.py) on a manual clock, and the config that feeds them."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from gateway.clock import ManualClock
from gateway.config.commands import check_config_command
from gateway.config.errors import ConfigError
from gateway.config.loader import parse_config_text
from gateway.config.models import UpstreamSection
from gateway.failover import Endpoint, Failover, backoff_delay, endpoint, reconnect_delay
from gateway.outbox import Outbox
from gateway.uplink import Uplink
from tests.broker import MosquittoBroker, Subscriber
from tests.test_config_security import _config
from tests.test_uplink import GW, depth, record_keys, running, submit_mixed, until, upstream

A, B, C = Endpoint("a", 1883, False), Endpoint("b", 1884, False), Endpoint("c", 1883, False)


def test_endpoint_defaults_ports_by_scheme() -> None:
    assert endpoint("mqtt://a") == Endpoint("a", 1883, False)
    assert endpoint("mqtts://b.example") == Endpoint("b.example", 8883, True)
    assert endpoint("mqtts://b:9000") == Endpoint("b", 9000, True)
    assert str(endpoint("mqtts://b")) == "mqtts://b:8883"
    with pytest.raises(ValueError, match="mqtt://"):
        endpoint("http://a")


def test_each_loss_moves_to_the_next_broker_and_wraps_round() -> None:
    clock = ManualClock()
    f = Failover([A, B, C], return_after_s=None, clock=clock.monotonic)
    assert f.current == A and f.on_primary
    assert [f.lost(), f.lost(), f.lost(), f.lost()] == [B, C, A, B]
    single = Failover([A], return_after_s=None, clock=clock.monotonic)
    assert single.lost() == A


def test_without_return_to_primary_it_stays_where_it_works() -> None:
    clock = ManualClock()
    f = Failover([A, B], return_after_s=None, clock=clock.monotonic)
    f.lost()
    f.connected()
    clock.advance(10_000)
    assert f.probe_due_in() is None and f.current == B


def test_return_to_primary_is_probed_on_schedule() -> None:
    clock = ManualClock()
    f = Failover([A, B, C], return_after_s=60.0, clock=clock.monotonic)
    f.connected()
    assert f.probe_due_in() is None  # on the primary: nothing to come back to
    f.lost()
    assert f.probe_due_in() is None  # not connected anywhere yet
    f.connected()
    assert f.probe_due_in() == 60.0
    clock.advance(45)
    assert f.probe_due_in() == 15.0
    clock.advance(20)
    assert f.probe_due_in() == 0.0  # overdue counts as due now
    f.probe_failed()
    assert f.probe_due_in() == 60.0  # the primary is still down: look again later
    assert f.return_to_primary() == A and f.on_primary
    assert f.probe_due_in() is None


def test_a_lost_standby_connection_cancels_the_probe() -> None:
    clock = ManualClock()
    f = Failover([A, B, C], return_after_s=30.0, clock=clock.monotonic)
    f.lost()
    f.connected()
    assert f.lost() == C
    assert f.probe_due_in() is None
    f.probe_failed()  # a late probe result must not schedule anything while disconnected
    assert f.probe_due_in() is None


def test_first_wait_after_a_stable_connection_spreads_over_the_window() -> None:
    rng = random.Random(3)
    draws = [reconnect_delay(0, after_stable=True, base=1.0, cap=300.0, spread=20.0, rng=rng) for _ in range(2000)]
    assert min(draws) >= 0.0 and max(draws) <= 20.0
    assert max(draws) > 19.0 and min(draws) < 1.0
    # Evenly spread: each of four 5-second bins holds about a quarter of the draws.
    bins = [sum(1 for d in draws if lo <= d < lo + 5) for lo in (0, 5, 10, 15)]
    assert all(400 < n < 600 for n in bins), bins


def test_spread_is_bounded_by_the_cap_and_never_narrower_than_the_schedule() -> None:
    rng = random.Random(4)
    capped = [reconnect_delay(0, after_stable=True, base=1.0, cap=2.0, spread=20.0, rng=rng) for _ in range(500)]
    assert max(capped) <= 2.0 and max(capped) > 1.5
    narrow = [reconnect_delay(0, after_stable=True, base=1.0, cap=300.0, spread=0.0, rng=rng) for _ in range(500)]
    assert max(narrow) <= 1.0 and max(narrow) > 0.9


def test_other_attempts_follow_the_exponential_schedule_exactly() -> None:
    for attempt, after_stable in ((0, False), (1, True), (5, False), (12, True)):
        got = reconnect_delay(attempt, after_stable=after_stable, base=1.0, cap=300.0, spread=50.0,
                              rng=random.Random(attempt))  # fmt: skip
        assert got == backoff_delay(attempt, base=1.0, cap=300.0, rng=random.Random(attempt))


def test_config_lists_the_brokers_in_order() -> None:
    up = UpstreamSection(url="mqtts://a", failover_urls=["mqtts://b:8884", "mqtts://c"], return_to_primary_s=600)
    assert [endpoint(u) for u in up.urls] == [Endpoint("a", 8883, True), Endpoint("b", 8884, True),
                                              Endpoint("c", 8883, True)]  # fmt: skip


@pytest.mark.parametrize(
    ("failover_urls", "message"),
    [
        (["mqtts://b"], "same scheme"),
        (["mqtt://127.0.0.2:1883", "mqtt://localhost"], "listed twice"),
        (["ftp://b"], "mqtt://"),
        (["mqtt://user:secret@b"], "holds credentials"),
        (["mqtt://b.example.org"], "unencrypted"),  # the TLS policy of url holds for every broker
    ],
)
def test_config_refuses_a_broker_list_that_cannot_work(failover_urls: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        UpstreamSection(url="mqtt://localhost", failover_urls=failover_urls)


# --------------------------------------------------------------------------------------------
# The uplink on a primary and a standby Mosquitto
# --------------------------------------------------------------------------------------------


async def test_uplink_fails_over_to_the_standby_and_returns_to_the_primary(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db", gateway_id=GW, commit_interval_ms=20)
    primary = MosquittoBroker(tmp_path / "primary")
    standby = MosquittoBroker(tmp_path / "standby")
    primary.start()
    standby.start()
    cfg = upstream(primary.url, failover_urls=[standby.url], return_to_primary_s=1.0, backoff_max_s=1.0)
    uplink = Uplink(cfg, outbox, gateway_id=GW, backoff_base_s=0.05)
    try:
        async with (
            Subscriber("127.0.0.1", primary.port, client_id="sub-primary") as on_primary,
            Subscriber("127.0.0.1", standby.port, client_id="sub-standby") as on_standby,
        ):
            with capture_logs() as logs:
                async with running(uplink):
                    first = await submit_mixed(outbox, 20)
                    await on_primary.wait_until(lambda rs: set(first) <= set(record_keys(rs)))
                    primary.kill()  # the primary dies: the standby takes the stream
                    second = await submit_mixed(outbox, 20)
                    await on_standby.wait_until(lambda rs: set(second) <= set(record_keys(rs)))
                    primary.start()  # back: the uplink must leave the standby by itself
                    await until(lambda: any(e["event"] == "uplink_primary_back" for e in logs), within_s=15)
                    third = await submit_mixed(outbox, 20)
                    await on_primary.wait_until(lambda rs: set(third) <= set(record_keys(rs)))
                    await until(lambda: depth(outbox) == (0, 0))
    finally:
        primary.kill()
        standby.kill()
        await outbox.close()
    assert not set(third) & set(record_keys(on_standby.received))  # left the standby, not both at once
    connected = [e["port"] for e in logs if e["event"] == "uplink_connected"]
    assert connected[0] == primary.port and standby.port in connected and connected[-1] == primary.port
    # Leaving the standby on purpose is a clean goodbye: it announced "offline" there.
    states = [json.loads(r.payload)["state"] for r in on_standby.status()]
    assert states[-1] == "offline"
    assert any(e["event"] == "uplink_closing" and e["reason"] == "ReturnToPrimary" for e in logs)


def test_check_config_names_the_failover_brokers_and_points_at_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    brokers = "failover_urls: [mqtts://b.example.org, mqtts://c.example.org:8884]\nreturn_to_primary_s: 600"
    path.write_text(_config(extra=brokers))
    out, err = io.StringIO(), io.StringIO()
    assert check_config_command(path, out=out, err=err) == 0, err.getvalue()
    assert ("mqtts://broker.example.org:8883 (then mqtts://b.example.org:8883, mqtts://c.example.org:8884, "
            "back to it after 600 s)") in out.getvalue()  # fmt: skip
    text = _config(extra="failover_urls:\n  - mqtts://b.example.org\n  - mqtt://c.example.org")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=path)
    assert re.search(r"config\.yaml:7: upstream\.failover_urls\[1\]: mqtt:// sends patients' records unencrypted",
                     info.value.render()), info.value.render()  # fmt: skip
    text = _config(extra="failover_urls:\n  - mqtts://b.example.org\n  - mqtts://broker.example.org:8883")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=path)
    assert re.search(r"config\.yaml:7: upstream\.failover_urls\[1\]: mqtts://broker\.example\.org:8883 is listed twice",
                     info.value.render()), info.value.render()  # fmt: skip
