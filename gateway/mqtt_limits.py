"""Limits of common MQTT brokers that the gateway stays within, so one configuration and one
record format work on any of them (Mosquitto, EMQX, HiveMQ, VerneMQ, ejabberd, AWS IoT Core).

The strictest common limits are AWS IoT Core's (message payload 128 KB, topic 256 bytes with at
most 7 slashes, client id 128 bytes) and VerneMQ's default ``max_client_id_size`` of 100 bytes.
A broker over a limit refuses the CONNECT or the PUBLISH, or drops the connection: the record
would come back after every reconnect and block nothing but itself forever.  So the limits are
checked where the mistake is made: the configuration (topic prefix, client id) and the moment a
record is created (its size).

The problem functions return a sentence for an error message, or None; they check limits only,
not syntax (which characters a topic level or a client id may hold is the config's business).
"""

from __future__ import annotations

# AWS IoT Core's message size limit; Mosquitto, EMQX, HiveMQ take far more by default.
MAX_RECORD_BYTES = 128 * 1024
# AWS IoT Core: a topic name of at most 256 bytes (UTF-8) and 7 slashes (8 levels).
MAX_TOPIC_BYTES = 256
MAX_TOPIC_LEVELS = 8
# VerneMQ's default max_client_id_size; AWS IoT Core allows 128 bytes.  The config allows 64
# (gateway/config/upstream.py), well within it.
BROKER_MAX_CLIENT_ID_BYTES = 100
# A record's topic is <prefix>/<gateway>/<kind>/<patient>: three levels after the prefix, at most
# 1 + 64 + 1 + 7 + 1 + 64 bytes (ids are up to 64 letters, digits, '-', '_', '.'; "billing").
LEVELS_AFTER_PREFIX = 3
MAX_BYTES_AFTER_PREFIX = 138


def topic_prefix_problem(prefix: str) -> str | None:
    levels = prefix.count("/") + 1
    if levels + LEVELS_AFTER_PREFIX > MAX_TOPIC_LEVELS:
        return (
            f"has {levels} topic levels; with <gateway>/<kind>/<patient> after it a topic would have "
            f"{levels + LEVELS_AFTER_PREFIX}, more than the {MAX_TOPIC_LEVELS} some brokers allow (AWS IoT Core)"
        )
    size = len(prefix.encode())
    if size + MAX_BYTES_AFTER_PREFIX > MAX_TOPIC_BYTES:
        return (
            f"is {size} bytes; with <gateway>/<kind>/<patient> after it a topic could reach "
            f"{size + MAX_BYTES_AFTER_PREFIX}, more than the {MAX_TOPIC_BYTES} some brokers allow (AWS IoT Core)"
        )
    return None


def client_id_problem(client_id: str) -> str | None:
    size = len(client_id.encode())
    if size > BROKER_MAX_CLIENT_ID_BYTES:
        return f"is {size} bytes long; common brokers allow at most {BROKER_MAX_CLIENT_ID_BYTES} (VerneMQ's default)"
    return None


def topic_problem(topic: str) -> str | None:
    size = len(topic.encode())
    if size > MAX_TOPIC_BYTES:
        return f"topic {topic[:60]!r}... is {size} bytes; some brokers allow at most {MAX_TOPIC_BYTES} (AWS IoT Core)"
    if topic.count("/") + 1 > MAX_TOPIC_LEVELS:
        return f"topic {topic!r} has more than {MAX_TOPIC_LEVELS} levels (AWS IoT Core's limit)"
    return None


def record_size_problem(size: int, limit: int = MAX_RECORD_BYTES) -> str | None:
    if size > limit:
        return f"record is {size} bytes as JSON, over the {limit}-byte limit (upstream.max_record_bytes)"
    return None
