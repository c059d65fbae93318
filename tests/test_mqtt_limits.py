"""Broker limits the gateway keeps within (gateway/mqtt_limits.py), and where they are enforced."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway import mqtt_limits
from gateway.config import upstream as upstream_rules
from gateway.config.models import UpstreamSection
from gateway.outbox import Outbox, RecordTooLarge
from gateway.records import ClockQuality, RecordKind, SummaryRecord, Vital
from gateway.uplink import topic_for

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def summary(key: str, **kw: Any) -> SummaryRecord:
    fields: dict[str, Any] = {"key": key, "gateway_id": "gw", "patient": "p1", "time": T0,
                              "clock": ClockQuality.SYNCED, "vital": Vital.HEART_RATE, "unit": "/min",
                              "period_start": T0, "period_end": T0, "count": 60, "min": 55.0, "mean": 61.5,
                              "max": 70.0, "quality": 0.97, "devices": ["ox1"]}  # fmt: skip
    fields.update(kw)
    return SummaryRecord(**fields)


def test_the_longest_possible_record_topic_fits_when_the_prefix_passes() -> None:
    # Ids are at most 64 characters; "billing" and "summary" are the longest kinds.
    prefix = "a/b/c/d/" + "p" * (mqtt_limits.MAX_TOPIC_BYTES - mqtt_limits.MAX_BYTES_AFTER_PREFIX - 8)
    assert mqtt_limits.topic_prefix_problem(prefix) is None
    topic = topic_for(prefix, "g" * 64, RecordKind.BILLING, "p" * 64)
    assert len(topic.encode()) == mqtt_limits.MAX_TOPIC_BYTES
    assert mqtt_limits.topic_problem(topic) is None
    assert mqtt_limits.topic_prefix_problem(prefix + "x") is not None
    assert mqtt_limits.topic_problem(topic + "x") is not None


@pytest.mark.parametrize(("prefix", "ok"), [("iomt", True), ("a/b/c/d/e", True), ("a/b/c/d/e/f", False)])
def test_topic_depth_stays_within_eight_levels(prefix: str, ok: bool) -> None:
    assert (mqtt_limits.topic_prefix_problem(prefix) is None) == ok
    assert (mqtt_limits.topic_problem(topic_for(prefix, "gw", RecordKind.ALARM, "p1")) is None) == ok


def test_config_refuses_a_prefix_too_deep_for_common_brokers() -> None:
    with pytest.raises(ValidationError, match=r"more than the 8 some brokers allow"):
        UpstreamSection(url="mqtt://localhost", topic_prefix="site/ward/floor/room/bed/hub")


def test_client_id_and_record_size_limits() -> None:
    assert upstream_rules.MAX_CLIENT_ID_BYTES <= mqtt_limits.BROKER_MAX_CLIENT_ID_BYTES  # the config is stricter
    assert mqtt_limits.client_id_problem("c" * mqtt_limits.BROKER_MAX_CLIENT_ID_BYTES) is None
    assert "101 bytes" in (mqtt_limits.client_id_problem("c" * 101) or "")
    assert mqtt_limits.record_size_problem(mqtt_limits.MAX_RECORD_BYTES) is None
    assert "131073 bytes" in (mqtt_limits.record_size_problem(mqtt_limits.MAX_RECORD_BYTES + 1) or "")


async def test_a_record_over_the_size_limit_is_refused_when_created(tmp_path: Path) -> None:
    alarms: list[tuple[str, str]] = []
    box = await Outbox.open(tmp_path / "o.db", gateway_id="gw", max_record_bytes=4096,
                            on_alarm=lambda c, d: alarms.append((c, d)))  # fmt: skip
    try:
        fine = summary(box.next_key(), devices=["ox1"])
        huge = summary(box.next_key(), devices=[f"device-{i:04d}" for i in range(400)])
        assert len(huge.model_dump_json()) > 4096
        await box.submit(fine)
        with pytest.raises(RecordTooLarge, match=r"over the 4096-byte limit \(upstream\.max_record_bytes\)") as info:
            await box.submit(huge, state={"pipeline:p1": b"saved"})
        assert huge.key in str(info.value) and not info.value.retryable
        assert [c for c, _ in alarms] == ["record_too_large"] and huge.key in alarms[0][1]
        after = summary(box.next_key())
        await box.submit(after)  # the outbox goes on as before
        stats = box.stats()
        assert stats.accepted == 2 and stats.too_large == 1
        assert [row.key for row in await box.lease(10)] == [fine.key, after.key]
        # The state that came with the refused record is still kept.
        assert await box.load_state("pipeline:") == {"pipeline:p1": b"saved"}
    finally:
        await box.close()


def test_the_default_limit_is_aws_iot_cores() -> None:
    assert UpstreamSection(url="mqtt://localhost").max_record_bytes == 128 * 1024
    with pytest.raises(ValidationError):
        UpstreamSection(url="mqtt://localhost", max_record_bytes=100)
