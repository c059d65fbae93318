"""What the running daemon sees, in a small file in its state directory: ``iomt-gateway status`` reads it.

No network port and no socket: the daemon rewrites ``<state dir>/status.json`` every couple of seconds
and when an alarm is raised or cleared, atomically (a temporary file renamed over the old one, so a
reader never sees half a file), mode 0640 so the technician's group (the service's group) can read it.

The document (``schema`` 1)::

    {"schema": 1, "gateway_id", "pid", "written_at", "started_at",
     "devices": [{"id", "patient", "driver", "state", "connects", "failures", "readings",
                  "last_error", "last_reading_age_s"}],
     "alarms": [{"alarm_id", "patient", "condition", "technical", "severity", "vital", "value",
                 "threshold", "device", "detail", "since"}],
     "uplink": {"connected", "delivered", "resent", "last_delivery", "last_error"},
     "outbox": {"depth", "classes": {"alarm": {"pending", "leased", "oldest_pending_age_s", "dropped"}, ...}}}

Times are Unix seconds; ages are as of ``written_at`` (the reader adds the file's own age).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.records import AlarmEvent, AlarmRecord

FILE_NAME = "status.json"
SCHEMA = 1
WRITE_EVERY_S = 2.0
STALE_AFTER_S = 30.0  # older than this: the daemon is not running (or its loop is stuck)
FILE_MODE = 0o640


def status_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


@dataclass
class ActiveAlarms:
    """Raised alarms by id, kept from the alarm records the daemon emits (raise adds, clear removes)."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: bool = False

    def note(self, record: AlarmRecord) -> None:
        if record.event is AlarmEvent.RAISED:
            self.by_id[record.alarm_id] = {
                "alarm_id": record.alarm_id,
                "patient": record.patient,
                "condition": record.condition,
                "technical": record.technical,
                "severity": record.severity.value,
                "vital": record.vital.value if record.vital is not None else None,
                "value": record.value,
                "threshold": record.threshold,
                "device": record.device,
                "detail": record.detail,
                "since": record.time.timestamp(),
            }
            self.changed = True
        elif self.by_id.pop(record.alarm_id, None) is not None:
            self.changed = True

    def carry_over(self, previous: Mapping[str, Any] | None) -> None:
        """Alarms raised before a restart stay raised (the pipeline restores them): keep showing them
        until their clear record comes."""
        for alarm in (previous or {}).get("alarms", []):
            if isinstance(alarm, dict) and isinstance(alarm.get("alarm_id"), str):
                self.by_id.setdefault(alarm["alarm_id"], alarm)

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.by_id.values(), key=lambda a: (a["since"], a["alarm_id"]))


def build(
    *,
    gateway_id: str,
    now: float,
    mono_now: float,
    started_at: float,
    sessions: Iterable[Any],
    alarms: ActiveAlarms,
    uplink: Any,
    outbox: Any,
) -> dict[str, Any]:
    """The status document from the daemon's parts (``SessionInfo``s, ``UplinkStats``, ``OutboxStats``)."""
    devices = [
        {
            "id": s.device_id,
            "patient": s.patient,
            "driver": s.driver,
            "state": str(s.state),
            "connects": s.connects,
            "failures": s.failures,
            "readings": s.readings,
            "last_error": s.last_error,
            "last_reading_age_s": None if s.last_reading_mono is None else round(mono_now - s.last_reading_mono, 1),
        }
        for s in sessions
    ]
    up = None
    if uplink is not None:
        up = {
            "connected": uplink.connected,
            "delivered": uplink.delivered,
            "resent": uplink.resent,
            "last_delivery": uplink.last_delivery,
            "last_error": uplink.last_error,
        }
    ob = None
    if outbox is not None:
        ob = {
            "depth": outbox.depth,
            "classes": {
                str(getattr(kind, "value", kind)): {
                    "pending": c.pending,
                    "leased": c.leased,
                    "oldest_pending_age_s": c.oldest_pending_age_s,
                    "dropped": c.dropped,
                }
                for kind, c in outbox.classes.items()
            },
        }
    return {
        "schema": SCHEMA,
        "gateway_id": gateway_id,
        "pid": os.getpid(),
        "written_at": now,
        "started_at": started_at,
        "devices": devices,
        "alarms": alarms.rows(),
        "uplink": up,
        "outbox": ob,
    }


def write(path: Path, doc: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically with ``doc``, mode 0640."""
    data = json.dumps(doc, separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StatusUnavailable(Exception):
    """No usable status file: the message says why, in words."""


def read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusUnavailable(
            f"no status file at {path}: is the daemon running? (systemctl status iomt-gateway)"
        ) from None
    except PermissionError:
        raise StatusUnavailable(
            f"cannot read {path}: run as a member of the service's group (sudo -u iomt-gateway ...)"
        ) from None
    except OSError as e:
        raise StatusUnavailable(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise StatusUnavailable(f"{path} is not a status file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise StatusUnavailable(f"{path} is not a status file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise StatusUnavailable(
            f"{path} has an unknown format (schema {doc.get('schema') if isinstance(doc, dict) else '?'})"
        )
    written = doc.get("written_at")
    if not isinstance(written, int | float) or isinstance(written, bool):
        raise StatusUnavailable(f"{path} is damaged (no time it was written)")
    return doc


def stale_s(doc: Mapping[str, Any], now: float) -> float | None:
    """How old the file is when older than ``STALE_AFTER_S`` (the daemon is gone or stuck), else None."""
    age = now - float(doc.get("written_at", 0))
    return age if age > STALE_AFTER_S else None


# ------------------------------------------------------------------------------------------ display


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_status(doc: Mapping[str, Any], now: float) -> str:
    """The technician's view of a status document, as of ``now``."""
    file_age = max(0.0, now - float(doc["written_at"]))
    lines = [
        f"gateway {doc['gateway_id']}: up {_age(now - float(doc['started_at']))}, "
        f"status written {_age(file_age)} ago (pid {doc['pid']})"
    ]
    devices = doc.get("devices", [])
    running = sum(1 for d in devices if d["state"] == "running")
    lines.append(f"devices: {running}/{len(devices)} running")
    width = max((len(d["id"]) for d in devices), default=0)
    for d in devices:
        last = d.get("last_reading_age_s")
        what = f"last reading {_age(last + file_age)} ago" if last is not None else "no reading yet"
        line = f"  {d['id']:<{width}}  {d['patient']:<10} {d['driver']:<18} {d['state']:<10} {what}"
        if d["state"] != "running" and d.get("last_error"):
            line += f"; {d['failures']} failure(s), last: {d['last_error']}"
        lines.append(line)
    alarms = doc.get("alarms", [])
    lines.append(f"alarms: {len(alarms)} active")
    for a in alarms:
        what = a["condition"].replace("_", " ")
        value = ""
        if a.get("value") is not None:
            value = f" value {_num(a['value'])}" + (
                f" (limit {_num(a['threshold'])})" if a.get("threshold") is not None else ""
            )
        since = datetime.fromtimestamp(a["since"], tz=UTC).isoformat(timespec="seconds")
        kind = "technical" if a.get("technical") else a["severity"]
        device = f", device {a['device']}" if a.get("device") else ""
        lines.append(f"  {a['patient']}: {what}{value} [{kind}] for {_age(now - a['since'])} (since {since}{device})")
    up = doc.get("uplink")
    if up is not None:
        state = "connected" if up["connected"] else "NOT connected"
        last = None if up.get("last_delivery") is None else now - float(up["last_delivery"])
        line = f"uplink: {state}, {up['delivered']} delivered, last delivery {_age(last)}{' ago' if last else ''}"
        if not up["connected"] and up.get("last_error"):
            line += f"; last error: {up['last_error']}"
        lines.append(line)
    ob = doc.get("outbox")
    if ob is not None:
        parts = []
        for kind, c in ob["classes"].items():
            oldest = c.get("oldest_pending_age_s")
            parts.append(
                f"{kind} {c['pending'] + c['leased']}" + (f" (oldest {_age(oldest + file_age)})" if oldest else "")
            )
        lines.append(f"outbox: {ob['depth']} waiting — " + ", ".join(parts))
    return "\n".join(lines)
