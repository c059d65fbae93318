"""Logging as the journal sees it: JSON lines with a syslog priority prefix, context fields bound
once per task, and the stdlib logs of libraries through the same chain."""

from __future__ import annotations

import io
import json
import logging

import structlog

from gateway import logs


def _lines(buf: io.StringIO) -> list[tuple[int, dict[str, object]]]:
    out = []
    for line in buf.getvalue().splitlines():
        assert line.startswith("<") and ">" in line[:4], line
        prio = int(line[1 : line.index(">")])
        out.append((prio, json.loads(line[line.index(">") + 1 :])))
    return out


def test_json_lines_carry_priority_context_and_library_logs() -> None:
    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    try:
        structlog.contextvars.bind_contextvars(device="ox-1", patient="p-7f3a")
        structlog.get_logger().warning("device_retry", attempt=2)
        structlog.contextvars.clear_contextvars()
        logging.getLogger("bleak.backends.bluezdbus").error("D-Bus connection lost")
        structlog.get_logger().debug("not shown at info")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    (p1, first), (p2, second) = _lines(buf)
    assert p1 == 4 and first["event"] == "device_retry" and first["device"] == "ox-1"
    assert first["patient"] == "p-7f3a" and first["attempt"] == 2 and "timestamp" in first
    assert p2 == 3 and second["event"] == "D-Bus connection lost" and second["logger"] == "bleak.backends.bluezdbus"


def test_console_format_is_plain_text() -> None:
    buf = io.StringIO()
    logs.configure("info", "console", stream=buf)
    try:
        structlog.get_logger().info("gateway_ready", devices=4)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = buf.getvalue()
    assert "gateway_ready" in text and "devices=4" in text and not text.startswith("<")


def test_pahos_lost_link_errors_stay_out_of_the_journal_below_debug() -> None:
    # The uplink reports a lost link itself, with its cause, at warning; paho's own error line for
    # it ("failed to receive on socket") would cry wolf on every broker outage of a home hub.
    from gateway import uplink  # noqa: PLC0415

    for level, shown in (("info", False), ("debug", True)):
        buf = io.StringIO()
        logs.configure(level, "json", stream=buf)
        try:
            logging.getLogger("mqtt").setLevel(logging.WARNING)  # what importing aiomqtt does, maybe later
            logging.getLogger(uplink.MQTT_LOGGER).error("failed to receive on socket: [Errno 32] Broken pipe")
        finally:
            structlog.reset_defaults()
            logging.getLogger().handlers.clear()
        assert ("failed to receive on socket" in buf.getvalue()) is shown, level


def test_python_warnings_are_structured_warning_lines() -> None:
    # numpy's overflow warning on a block of impossible values (1e300 mV) reached stderr as raw
    # text beside the journal's JSON; it is a warning line with its fields now.
    import warnings  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    buf = io.StringIO()
    saved = warnings.showwarning
    logs.configure("info", "json", stream=buf)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            x = np.full(25, 1e300)
            x.dot(x)
    finally:
        warnings.showwarning = saved
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    ((prio, line),) = _lines(buf)
    assert prio == 4 and line["event"] == "python_warning" and line["logger"] == "py.warnings"
    assert line["category"] == "RuntimeWarning" and "overflow" in str(line["message"])
    assert str(line["source"]).startswith(__file__)
