"""Checks on this machine: secret and certificate files, the clock, free disk, the outbox backlog."""

from __future__ import annotations

import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path

from gateway.checks import Check
from gateway.clock import SyncPolicy, SystemClock
from gateway.config.models import ConfigBase
from gateway.records import ClockQuality

BACKLOG_WARN_S = 3600.0  # records older than this not delivered: something is wrong upstream


def _mode(st_mode: int) -> str:
    return f"{stat.S_IMODE(st_mode):04o}"


def secret_files(cfg: ConfigBase, *, now: float) -> list[Check]:
    """Each credential file named in ``upstream``: present, readable, and private where it must be."""
    up = cfg.upstream
    named = [
        ("password file", up.password_file, True),
        ("client key", up.key_file, True),
        ("client certificate", up.cert_file, False),
        ("CA certificate", up.ca_file, False),
        ("revocation list", up.crl_file, False),
    ]
    out = []
    for what, path, secret in named:
        if path is None:
            continue
        out.append(_one_file(what, Path(path), secret, now))
    return out


def _one_file(what: str, path: Path, secret: bool, now: float) -> Check:
    # The doctor's view of the service's credentials links to the installed files: name those.
    title = f"{what} {path.resolve() if path.is_symlink() else path}"
    try:
        st = path.stat()
        with path.open("rb") as f:
            head = f.read(65536)
    except FileNotFoundError:
        return Check(False, title, "missing", f"put the {what} there (see the README's 'Install on a hub')")
    except PermissionError:
        return Check(False, title, "cannot be read by this user", "run the doctor with sudo")
    except OSError as e:
        return Check(False, title, f"cannot be read ({e.strerror or e})", "check the path")
    if not stat.S_ISREG(st.st_mode):
        return Check(False, title, "not a regular file", "point the setting at the file itself")
    if secret and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check(
            False,
            title,
            f"mode {_mode(st.st_mode)}: group or others may read a secret",
            f"sudo chmod 0600 {path}",
        )
    detail = f"present, mode {_mode(st.st_mode)}"
    if what in ("client certificate", "CA certificate"):
        detail += _cert_dates(head, now)
    if what == "revocation list":
        return _crl_check(title, detail, head, now)
    return Check(True, title, detail)


def _crl_check(title: str, detail: str, pem: bytes, now: float) -> Check:
    from cryptography import x509  # noqa: PLC0415 - only when a CRL is configured

    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError:
        return Check(False, title, detail + ", not a PEM revocation list", "get the CA's CRL in PEM form")
    until = crl.next_update_utc
    issuer = crl.issuer.rfc4514_string()
    if until is not None and until.timestamp() < now:
        return Check(False, title, f"{detail}, {issuer}, PAST its next update {until:%Y-%m-%d}: the broker is refused",
                     "install a fresh revocation list from the site CA")
    when = f"next update {until:%Y-%m-%d}" if until is not None else "no next update"
    return Check(True, title, f"{detail}, {issuer}, {len(crl)} revoked, {when}")


def _cert_dates(pem: bytes, now: float) -> str:
    from cryptography import x509  # noqa: PLC0415 - only when a certificate is configured

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return ", not a PEM certificate"
    until = cert.not_valid_after_utc
    subject = cert.subject.rfc4514_string()
    state = "EXPIRED" if until.timestamp() < now else "valid"
    return f", {subject}, {state} until {until:%Y-%m-%d}"


async def clock(policy: SyncPolicy) -> Check:
    c = SystemClock(policy=policy)
    await c.refresh()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if c.quality() is ClockQuality.SYNCED:
        how = "assumed (clock.sync: assume_synced)" if policy is SyncPolicy.ASSUME_SYNCED else "NTP synchronised"
        return Check(True, "clock", f"{now}, {how}")
    return Check(
        False,
        "clock",
        f"{now}, NOT synchronised: records are flagged clock=unsynced and billing days are held",
        "give the hub network access to NTP (timedatectl set-ntp true; timedatectl timesync-status)",
    )


def disk(state_dir: Path, min_free_mb: int) -> Check:
    probe = state_dir if state_dir.exists() else next((p for p in state_dir.parents if p.exists()), Path("/"))
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    detail = f"{free_mb:,.0f} MB free on {probe} (floor: storage.min_free_mb {min_free_mb})"
    if free_mb < min_free_mb * 2:
        return Check(
            False,
            "free disk",
            detail + ": below twice the floor, only alarms and billing will be kept soon",
            "free space on the hub, or a larger SD card",
        )
    return Check(True, "free disk", detail)


def backlog(db: Path) -> Check:
    from gateway.outbox import Outbox, OutboxError  # noqa: PLC0415

    if not db.exists():
        return Check(True, "outbox", f"none yet at {db} (the daemon has not run)")
    try:
        stats = Outbox.inspect(db)
    except (OutboxError, OSError) as e:
        return Check(False, "outbox", f"cannot be read: {e}", "run the doctor with sudo")
    ages = [c.oldest_pending_age_s for c in stats.classes.values() if c.oldest_pending_age_s is not None]
    oldest = max(ages, default=None)
    detail = f"{stats.depth} record(s) waiting"
    if oldest is not None:
        detail += f", oldest {oldest / 60:.0f} min"
    if oldest is not None and oldest > BACKLOG_WARN_S:
        return Check(
            False,
            "outbox",
            detail + ": records are not reaching the broker",
            "see the broker checks above; journalctl -u iomt-gateway -p warning",
        )
    return Check(True, "outbox", detail)
