"""Broker limits the gateway keeps within (gateway/mqtt_limits.py), and where they are enforced."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway import mqtt_limits
from gateway.config.models import UpstreamSection
from gateway.records import RecordKind
from gateway.uplink import topic_for


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
    assert mqtt_limits.client_id_problem("c" * mqtt_limits.MAX_CLIENT_ID_BYTES) is None
    assert "101 bytes" in (mqtt_limits.client_id_problem("c" * 101) or "")
    assert mqtt_limits.record_size_problem(mqtt_limits.MAX_RECORD_BYTES) is None
    assert "131073 bytes" in (mqtt_limits.record_size_problem(mqtt_limits.MAX_RECORD_BYTES + 1) or "")
