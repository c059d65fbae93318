"""``iomt-gateway doctor``: one checklist a technician runs before leaving the home.

Each line is ✓ or ✗ with the fix in words; the exit status is 0 only if every check passed (1 if one
failed, 2 if the config itself is wrong).  Checks, in order: the config; the credential and certificate
files (present, private where secret, certificate dates); per broker (url, then failover_urls): DNS,
TCP, the TLS handshake (chain, host name, expiry date) and an MQTT CONNECT with the configured identity;
the clock; the devices (checks contributed by the driver packages: BlueZ and the adapter, serial
ports); free disk; the outbox backlog.

It never writes to a device and never publishes: the CONNECT uses a client id of its own
(``<client id>-doctor``) with a session that ends with it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

from gateway.checks import CHECKS_GROUP, Check
from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.config.models import ConfigBase
from gateway.config.paths import resolve_paths
from gateway.doctor import host, network
from gateway.failover import endpoint

# The unit's ``LoadCredential=iomt:/etc/iomt-gateway/credentials`` hands each file there to the service
# as ``${CREDENTIALS_DIRECTORY}/iomt_<file name>`` (systemd/iomt-gateway.service).
INSTALLED_CREDENTIALS = Path("/etc/iomt-gateway/credentials")
CREDENTIAL_PREFIX = "iomt_"


class _Quiet:
    """A logger for ``read_password`` whose warnings the checklist reports itself."""

    def warning(self, *args: Any, **kw: Any) -> None:
        pass


def _environment(credentials: Path, view: Path) -> tuple[dict[str, str], str | None]:
    """The environment to read the config in.  Outside the service ``${CREDENTIALS_DIRECTORY}`` is unset:
    build the service's view of ``credentials`` in ``view`` (a link ``iomt_<name>`` per file, as
    systemd names them), so the checks open the very files the service will get."""
    env = dict(os.environ)
    if "CREDENTIALS_DIRECTORY" in env:
        return env, None
    try:
        files = sorted(p for p in credentials.iterdir() if p.is_file())
    except OSError as e:
        return env, f"${{CREDENTIALS_DIRECTORY}} is not set and {credentials} cannot be listed ({e.strerror or e})"
    view.mkdir(parents=True, exist_ok=True)
    for f in files:
        (view / f"{CREDENTIAL_PREFIX}{f.name}").symlink_to(f)
    env["CREDENTIALS_DIRECTORY"] = str(view)
    return (
        env,
        f"${{CREDENTIALS_DIRECTORY}}/{CREDENTIAL_PREFIX}<name> read as {credentials}/<name>, as the service gets them",
    )


def device_checks(cfg: ConfigBase) -> list[Check]:
    devices = [d for p in cfg.patients for d in p.devices]
    out: list[Check] = []
    for ep in sorted(entry_points(group=CHECKS_GROUP), key=lambda e: e.name):
        try:
            fn = ep.load()
            out += fn(devices)
        except Exception as e:  # a broken plug-in is one failed line, not a crash
            out.append(Check(False, f"device checks '{ep.name}'", f"could not run ({e!r})", "report this bug"))
    return out


async def _network(cfg: ConfigBase, now: float) -> list[Check]:
    from gateway.credentials import CredentialError, read_password  # noqa: PLC0415

    up = cfg.upstream
    password = None
    if up.password_file is not None:
        try:
            password = read_password(up.password_file, _Quiet())
        except CredentialError:
            password = None  # the file check says why
    ident = network.Identity(
        client_id=up.client_id or cfg.gateway.id,
        username=up.username,
        password=password,
        ca_file=up.ca_file,
        cert_file=up.cert_file,
        key_file=up.key_file,
        crl_file=up.crl_file,
    )
    out: list[Check] = []
    for url in up.urls:
        out += await network.check_broker(endpoint(url), ident, now=now)
    return out


async def run_checks(config: Path, *, env: Mapping[str, str]) -> tuple[ConfigBase | None, list[Check]]:
    try:
        cfg = load_config(config, env=env)
    except ConfigError as e:
        problems = "; ".join(p.render(config) for p in e.problems[:3])
        more = f" (and {len(e.problems) - 3} more)" if len(e.problems) > 3 else ""
        fix = f"iomt-gateway check-config -c {config} lists every problem"
        return None, [Check(False, "config", problems + more, fix)]
    n_dev = sum(len(p.devices) for p in cfg.patients)
    checks = [Check(True, "config", f"{config} is valid ({len(cfg.patients)} patient(s), {n_dev} device(s))")]
    now = time.time()
    checks += host.secret_files(cfg, now=now)
    checks += await _network(cfg, now)
    checks.append(await host.clock(cfg.clock.sync))
    checks += await asyncio.to_thread(device_checks, cfg)
    paths = resolve_paths(config, cfg)
    checks.append(host.disk(paths.state_dir, cfg.storage.min_free_mb))
    checks.append(host.backlog(paths.outbox))
    return cfg, checks


def doctor_command(
    config: Path,
    *,
    out: TextIO | None = None,
    credentials: Path = INSTALLED_CREDENTIALS,
) -> int:
    out = sys.stdout if out is None else out
    with tempfile.TemporaryDirectory(prefix="iomt-doctor-") as tmp:
        env, note = _environment(credentials, Path(tmp) / "credentials")
        print(f"iomt-gateway doctor: {config}", file=out)
        if note:
            print(f"  note: {note}", file=out)
        cfg, checks = asyncio.run(run_checks(config, env=env))
    for c in checks:
        print(c.render(), file=out)
    failed = sum(1 for c in checks if not c.ok)
    if cfg is None:
        return 2
    print(f"{len(checks)} checks: " + ("all passed" if not failed else f"{failed} FAILED"), file=out)
    return 0 if not failed else 1
