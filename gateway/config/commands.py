"""``iomt-gateway check-config`` and ``iomt-gateway schema``: what a technician runs before starting the service."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from gateway import failover
from gateway.config import DEFAULT_CONFIG
from gateway.config.errors import ConfigError
from gateway.config.loader import UnsetVariable, config_json_schema, read_config_report, resolve_path
from gateway.config.models import ConfigBase
from gateway.config.processing import AlarmSection
from gateway.config.variables import SET_BY_SYSTEMD

__all__ = ["DEFAULT_CONFIG", "check_config_command", "schema_command", "summarise"]

EXIT_OK = 0
EXIT_IO = 1
EXIT_CONFIG = 2


def _upstream_line(cfg: ConfigBase) -> str:
    up = cfg.upstream
    scheme = "mqtts" if up.tls else "mqtt"
    parts = [f"{scheme}://{up.host}:{up.port}"]
    if up.failover_urls:
        back = f", back to it after {up.return_to_primary_s:g} s" if up.return_to_primary_s else ""
        parts[0] += f" (then {', '.join(str(failover.endpoint(u)) for u in up.failover_urls)}{back})"
    if up.tls:
        parts.append("TLS with client certificate" if up.cert_file else "TLS")
        parts.append(f"CA {up.ca_file}" if up.ca_file else "CA from the system store")
    elif up.plaintext_remote:
        parts.append("NOT encrypted (insecure_plaintext: records cross the network in clear)")
    else:
        parts.append("not encrypted (loopback broker on this machine)")
    if up.username:
        parts.append(f"user {up.username!r}" + (" with password file" if up.password_file else ""))
    parts.append(f"topics {up.topic_prefix}/{cfg.gateway.id}/...")
    return ", ".join(parts)


def _alarm_lines(cfg: ConfigBase) -> list[str]:
    """Where the alarm limits differ from the built-in ones — what a reviewer must look at."""
    defaults = AlarmSection().limits
    limits = cfg.alarms.limits
    changed = sorted(v for v in limits if defaults.get(v) != limits[v])
    dropped = sorted(v for v in defaults if v not in limits)
    gateway_wide = []
    if changed:
        gateway_wide.append(f"changed for {', '.join(changed)}")
    if dropped:
        gateway_wide.append(f"NO limit alarm for {', '.join(dropped)}")
    lines = [f"gateway-wide: {'; '.join(gateway_wide) or 'built-in defaults'}"]
    per_patient = [f"{p.id} ({', '.join(sorted(p.alarms.limits))})" for p in cfg.patients if p.alarms.limits]
    lines.append(f"per patient: {'; '.join(per_patient) or 'none'}")
    return lines


def effective_zone(cfg: ConfigBase, patient: Any) -> tuple[str, str]:
    """The zone that cuts this patient's billing days, and where it comes from."""
    if patient.timezone:
        return str(patient.timezone), "patient's own"
    if cfg.billing.timezone:
        return str(cfg.billing.timezone), "billing.timezone"
    from gateway.billing.days import host_zone  # noqa: PLC0415 - only for patients without a zone

    return str(host_zone().key), "this computer's zone: the hub uses its own; set timezone: to be sure"


def _link(device: Any) -> str:
    link = device.exclusive_link()
    if link is not None:
        return f"{link[1]} {getattr(device, link[0])}"
    return "recording" if device.driver == "replay" else "-"


def _patient_lines(cfg: ConfigBase) -> list[str]:
    lines = []
    width = max(len(d.id) for p in cfg.patients for d in p.devices)
    for p in cfg.patients:
        zone, source = effective_zone(cfg, p)
        lines.append(f"  patient {p.id}: time zone {zone} ({source})")
        lines += [f"    {d.id:<{width}}  {d.driver:<18} {_link(d)}" for d in p.devices]
    return lines


def summarise(cfg: ConfigBase, path: Path) -> list[str]:
    drivers = Counter(d.driver for p in cfg.patients for d in p.devices)
    per_driver = ", ".join(f"{name}: {n}" for name, n in sorted(drivers.items()))
    site = f" ({cfg.gateway.site})" if cfg.gateway.site else ""
    alarm = _alarm_lines(cfg)
    rows = [
        ("gateway", f"{cfg.gateway.id}{site}"),
        ("upstream", _upstream_line(cfg)),
        ("patients", str(len(cfg.patients))),
        ("devices", f"{drivers.total()} ({per_driver})"),
        ("storage", os.path.normpath(resolve_path(cfg, cfg.storage.path))),
        ("alarm limits", alarm[0]),
        *(("", more) for more in alarm[1:]),
    ]
    return [f"{path}: OK", *(f"  {k:<13}{v}" for k, v in rows), *_patient_lines(cfg)]


_SYSTEMD_SETS = ", ".join(sorted(SET_BY_SYSTEMD))


def _unset_notes(unset: list[UnsetVariable]) -> list[str]:
    by_name: dict[str, list[UnsetVariable]] = {}
    for u in unset:
        by_name.setdefault(u.name, []).append(u)
    notes = []
    for name, uses in by_name.items():
        where = ", ".join(f"{u.path} (line {u.line})" for u in uses)
        why = " — systemd sets it for the service (LoadCredential=)" if name == "CREDENTIALS_DIRECTORY" else ""
        notes.append(f"  note: ${name} is not set here{why}; used by {where}")
    return notes


def check_config_command(path: Path, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate the config file and print a short summary (exit 0) or every problem (exit 2)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        # Outside the service ${CREDENTIALS_DIRECTORY} is normally unset: note it, do not fail on it.
        report = read_config_report(path, require_env=False)
        # Neither set here nor by systemd for the service: `run` will refuse the file (a misspelling?).
        unknown = [u.problem() for u in report.unset if not u.set_by_systemd]
        if unknown:
            why = f", and systemd sets no such variable for the service (a misspelling? it sets {_SYSTEMD_SETS})"
            raise ConfigError(path, [replace(p, message=p.message + why) for p in unknown])
    except ConfigError as e:
        head, *rest = e.render().splitlines()
        # The header names the program; problem lines keep the ``file:line:`` form editors jump to.
        print("\n".join([f"iomt-gateway check-config: {head}", *rest]), file=err)
        return EXIT_CONFIG
    for line in summarise(report.config, path):
        print(line, file=out)
    for note in _unset_notes(report.unset):
        print(note, file=out)
    return EXIT_OK


def schema_command(out: Path | None, *, stdout: TextIO | None = None) -> int:
    """Write the JSON Schema of the config (every installed driver included) to ``out`` or stdout."""
    stdout = sys.stdout if stdout is None else stdout
    try:
        text = json.dumps(config_json_schema(), indent=2) + "\n"
    except RuntimeError as e:  # no drivers installed
        print(f"iomt-gateway schema: cannot build the schema: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if out is None:
        stdout.write(text)
        return EXIT_OK
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        print(f"iomt-gateway schema: {out}: cannot write: {e.strerror or e}", file=sys.stderr)
        return EXIT_IO
    print(f"wrote {out}", file=stdout)
    return EXIT_OK
