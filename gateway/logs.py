"""Logging: one structlog processor chain for our logs and for the stdlib logs of bleak/aiomqtt.

On a terminal: colourful console lines.  Otherwise (systemd): one JSON object per line, prefixed with
the syslog priority ``<N>`` so ``journalctl -p warning`` filters by level (systemd strips the prefix,
``SyslogLevelPrefix=yes`` being its default).  ``device=`` and ``patient=`` are bound per session task
through context variables.  Every line goes through ``scrub_identifiers``: no Bluetooth address or
serial by-id name reaches the journal in clear.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, Literal, TextIO

import structlog

from gateway import device_tags

# syslog priorities (RFC 5424) by stdlib level name
_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7, "notset": 7, "exception": 3}


class _PrefixRenderer:
    """JSON renderer that prefixes each line with ``<priority>``."""

    def __init__(self) -> None:
        self._json = structlog.processors.JSONRenderer(sort_keys=False)

    def __call__(self, logger: Any, name: str, event_dict: structlog.typing.EventDict) -> str:
        prio = _PRIORITY.get(str(event_dict.get("level", "info")).lower(), 6)
        return f"<{prio}>" + str(self._json(logger, name, event_dict))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return device_tags.current().scrub_text(value)
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def scrub_identifiers(logger: Any, name: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """BLE addresses and serial by-id names in any field become device tags (``gateway.device_tags``):
    the safety net under the drivers' own care, and the only one for bleak's and BlueZ's messages."""
    for key, value in event_dict.items():
        if not key.startswith("_"):
            event_dict[key] = _scrub(value)
    return event_dict


_show_warning = warnings.showwarning  # Python's own: for a warning sent to a file of its caller's


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Python warnings (numpy's overflow on a device's impossible values, a library's deprecation)
    as structured warning lines, instead of raw text on stderr beside the JSON.  Python's filters
    still decide which are shown: by default each once per code location."""
    if file is not None:
        _show_warning(message, category, filename, lineno, file, line)
        return
    structlog.get_logger("py.warnings").warning(
        "python_warning", category=category.__name__, message=str(message), source=f"{filename}:{lineno}"
    )


def configure(
    level: str = "info",
    fmt: Literal["auto", "console", "json"] = "auto",
    stream: TextIO | None = None,
) -> None:
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        # tracebacks become text *before* the scrub, in both formats: an exception's message may
        # carry a device address (console lines reach the journal too with logging.format: console)
        structlog.processors.format_exc_info,
        scrub_identifiers,
    ]
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    else:
        renderer = _PrefixRenderer()

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    warnings.showwarning = _log_warning
    root.setLevel(level.upper())
    # Libraries are chatty at debug; their warnings still come through the same chain.
    for noisy in ("bleak", "dbus_fast", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    # paho (through aiomqtt) logs every lost link at ERROR ("failed to receive on
    # socket"); the uplink already reports disconnects with their cause at WARNING, and a broker
    # outage is normal for a home hub, so its own lines are kept only from debug runs.
    # The uplink hands aiomqtt this logger (aiomqtt resets its own "mqtt" logger when imported).
    logging.getLogger("gateway.mqtt").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)
