"""Secrets read from files (the broker password): checked, never logged.

The file is normally a systemd credential (``LoadCredential=mqtt-password:/etc/iomt-gateway/credentials/
mqtt-password`` and ``password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password``), which systemd
exposes read-only to the service alone.  Outside systemd the file is whatever the installer made,
so its mode is checked on every read: readable by group or others is logged as a warning (the
password still works — refusing would take a running hub offline for a chmod), and the message
says which file and which mode, never what is in it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

# MQTT 5 carries the password as binary data with a 16-bit length.
MAX_PASSWORD_BYTES = 65_535


class CredentialError(Exception):
    """A secret file that cannot be used; the message names the file, not its content."""


def read_password(path: Path, log: Any) -> str:
    """The password in ``path`` (one trailing newline removed).  Raises ``CredentialError`` if the
    file is missing, unreadable, not a regular file, empty or too long; warns through ``log`` if
    group or others may read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CredentialError(f"password file {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"password file {path}: not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "credential_file_too_open",
                path=str(path),
                mode=f"{stat.S_IMODE(st.st_mode):04o}",
                hint="chmod 0600 (or 0400); group and others must not read a password",
            )
        data = os.read(fd, MAX_PASSWORD_BYTES + 3)
    finally:
        os.close(fd)
    for ending in (b"\r\n", b"\n"):
        if data.endswith(ending):
            data = data[: -len(ending)]
            break
    if not data:
        raise CredentialError(f"password file {path} is empty")
    if len(data) > MAX_PASSWORD_BYTES:
        raise CredentialError(f"password file {path} holds more than {MAX_PASSWORD_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"password file {path} is not UTF-8 text") from None
