"""Hardware identifiers never leave a driver in clear: a BLE address or a ``/dev/serial/by-id/`` name
(which embeds the USB adapter's serial number) becomes a *device tag*, a keyed hash such as
``ble-5f3a9c1e2b7d``, in logs, exception texts and anything sent upstream.

Why keyed, and with what key: BLE addresses are few enough to enumerate (a vendor's OUI leaves
2^24 addresses), so a plain or config-derived hash (e.g. salted with the gateway id, which is in
every topic) would be reversed by trying them all.  The key is 32 random bytes made on first use
in the gateway's state directory (``device-tag.key``, mode 0600), so:

* a tag is stable for the life of the hub's state (restarts, reloads, upgrades): the same device
  always has the same tag in the journal and upstream, which is what a technician correlates on;
* two hubs give the same device different tags: tags cannot link a patient's devices across hubs;
* without the key a tag says nothing; with the card in hand the config names the devices anyway,
  so keeping the key next to the config loses nothing.  Wiping the state directory makes new tags.

``iomt-gateway device-tag -c CONFIG [ADDRESS|PORT ...]`` prints the tags of this hub's configured
devices (or of the identifiers given), to find "which device is ble-5f3a9c1e2b7d" without putting
addresses in the logs.

``scrub_text`` is the journal's safety net (``gateway.logs`` runs every log line through it):
anything shaped like a Bluetooth address (``C4:7C:8D:6A:12:3F``, BlueZ's ``dev_C4_7C_8D_6A_12_3F``)
or a by-id path is replaced by its tag, including in bleak's and BlueZ's own messages about other
people's devices seen by the scanner.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

KEY_FILE = "device-tag.key"
KEY_BYTES = 32
TAG_HEX = 12  # 48 bits: no collision among a hub's few devices, and nothing to learn without the key
_TAG_CACHE = 256
_MIN_LEN = len("00:00:00:00:00:00")

# Six hex pairs joined by ':' (or '_', as in BlueZ's D-Bus paths), not part of a longer hex run.
_MAC = re.compile(
    r"(?<![0-9A-Fa-f])(?<![0-9A-Fa-f][:_])"
    r"[0-9A-Fa-f]{2}([:_])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}"
    r"(?![0-9A-Fa-f])(?![:_][0-9A-Fa-f])"
)
# by-id names are [A-Za-z0-9._-] in practice (udev escapes the rest); a ':' ends one ("<port>: msg").
_BY_ID = re.compile(r"/dev/serial/by-id/[^\s'\",;:)\]}]+")


class DeviceTagger:
    """Turns hardware identifiers into stable keyed tags (module docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("device tag key too short")
        self._key = key
        self._tags: dict[str, str] = {}  # a hub has a handful of devices: remember their tags

    @classmethod
    def ephemeral(cls) -> DeviceTagger:
        """A tagger with a random key of its own: for tools and tests, and for log lines written
        before the daemon has read its state directory (tags differ from the hub's, but nothing
        is in clear)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def load(cls, state_dir: Path, *, create: bool = True) -> DeviceTagger:
        """The hub's tagger: its key read from ``state_dir``, made there (0600) on first use
        (``create=False``: ``FileNotFoundError`` instead, for tools run as another user)."""
        path = state_dir / KEY_FILE
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise
            key = _create_key(path)
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path}: expected {KEY_BYTES} bytes, found {len(key)}; remove it to make a new key")
        return cls(key)

    def tag(self, identifier: str) -> str:
        """``ble-…`` for a Bluetooth address (any case, ``:`` or ``_``), ``serial-…`` otherwise."""
        tag = self._tags.get(identifier)
        if tag is None:
            canonical, kind = _canonical(identifier)
            digest = hmac.new(self._key, f"{kind}:{canonical}".encode(), hashlib.sha256).hexdigest()
            tag = f"{kind}-{digest[:TAG_HEX]}"
            if len(self._tags) >= _TAG_CACHE:  # the scanner may show many strangers' addresses
                self._tags.clear()
            self._tags[identifier] = tag
        return tag

    def scrub(self, text: str, identifier: str) -> str:
        """``text`` with every spelling of ``identifier`` (a BLE address in any case, with ``:`` or
        BlueZ's ``_``) replaced by its tag."""
        canonical, kind = _canonical(identifier)
        if kind == "ble":
            spelled = re.compile("[:_]".join(canonical.split(":")), re.IGNORECASE)
            return spelled.sub(self.tag(identifier), text)
        return text.replace(identifier, self.tag(identifier))

    def scrub_text(self, text: str) -> str:
        """``text`` with anything shaped like a BLE address or a by-id path replaced by its tag."""
        # Most log values are short words and numbers: an address has 17 characters at least.
        if len(text) < _MIN_LEN or (":" not in text and "_" not in text and "/" not in text):
            return text
        text = _BY_ID.sub(lambda m: self.tag(m.group(0)), text)
        return _MAC.sub(lambda m: self.tag(m.group(0)), text)


def _canonical(identifier: str) -> tuple[str, str]:
    if _MAC.fullmatch(identifier):
        return identifier.replace("_", ":").upper(), "ble"
    return identifier, "serial"


def _create_key(path: Path) -> bytes:
    """Write a new key atomically; if another process won the race, use theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite a key
        except FileExistsError:
            return path.read_bytes()
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return key


# The process's tagger: ephemeral until the daemon installs the hub's own (``install``).  The log
# chain reads it on every line, so it lives here rather than being handed to every logger.
_current = DeviceTagger.ephemeral()


def install(tagger: DeviceTagger) -> None:
    global _current  # noqa: PLW0603  # one per process, like the logging configuration it serves
    _current = tagger


def current() -> DeviceTagger:
    return _current
