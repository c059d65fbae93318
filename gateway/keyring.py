"""The gateway's keys: AEAD keys for the outbox at rest, an index key, and the checkpoint signing key.

One small JSON file holds them all::

    {"format": "iomt-gateway-keyring/1",
     "aead": {"1": "<base64 32 bytes>", "2": "..."},   # every key ever used, newest = current
     "index": "<base64 32 bytes>",                     # keyed hashes of row identities; never rotated
     "signing": "<base64 32-byte Ed25519 seed>",       # checkpoint signatures; the hub's identity
     "signing_previous": {"seed": "<base64>", "until": <Unix time>}}   # only after a rotation

Where it is read from, first match wins:

1. ``$CREDENTIALS_DIRECTORY/iomt-gateway-keyring`` — a systemd credential (``LoadCredential=`` or,
   sealed with ``systemd-creds encrypt``, ``LoadCredentialEncrypted=``).  Read-only to us.
2. ``storage.keyring`` in the config (default ``/etc/iomt-gateway/keyring``), a root-owned file
   mode 0600 that ``iomt-gateway keys init`` creates once and never overwrites.

Rotation adds an AEAD key; old keys stay in the file so rows written under them stay readable
(each stored row names its key id).  Rotating the signing key keeps the previous one until a
grace time: checkpoints carry both signatures meanwhile (a signed note may hold several), so a
receiver still holding the old verifier key keeps verifying until it has enrolled the new one.
No home-made crypto: AES-256-GCM and Ed25519 from ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "iomt-gateway-keyring/1"
CREDENTIAL_NAME = "iomt-gateway-keyring"
DEFAULT_PATH = Path("/etc/iomt-gateway/keyring")
KEY_BYTES = 32
MAX_KID = 0xFFFF  # a row stores its key id in two bytes


class KeyringError(Exception):
    """The keyring is missing, unreadable or malformed; the message says which and where."""


@dataclass(frozen=True)
class Keyring:
    aead: dict[int, bytes]
    index: bytes
    signing_seed: bytes
    source: Path
    previous_signing: tuple[bytes, float] | None = None  # (seed, co-signs until this Unix time)

    @property
    def current(self) -> int:
        return max(self.aead)

    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.signing_seed)

    def cosigning_key(self) -> tuple[Ed25519PrivateKey, float] | None:
        """The previous signing key and until when it co-signs (None: no rotation pending)."""
        if self.previous_signing is None:
            return None
        seed, until = self.previous_signing
        return Ed25519PrivateKey.from_private_bytes(seed), until

    def public_key(self) -> bytes:
        # public_bytes_raw, not public_bytes(Encoding.Raw, ...): the serialization package would
        # import every key type and SSH format (~0.7 MB resident in the daemon) for 32 bytes.
        return self.signing_key().public_key().public_bytes_raw()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "aead": {str(k): _b64(v) for k, v in sorted(self.aead.items())},
                "index": _b64(self.index),
                "signing": _b64(self.signing_seed),
                **({"signing_previous": {"seed": _b64(self.previous_signing[0]), "until": self.previous_signing[1]}}
                   if self.previous_signing else {}),
            },
            indent=1,
        ) + "\n"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _key(raw: object, what: str, path: Path) -> bytes:
    if not isinstance(raw, str):
        raise KeyringError(f"{path}: {what} is not a base64 string")
    try:
        b = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise KeyringError(f"{path}: {what} is not valid base64") from e
    if len(b) != KEY_BYTES:
        raise KeyringError(f"{path}: {what} must be {KEY_BYTES} bytes, got {len(b)}")
    return b


def parse(text: str, source: Path) -> Keyring:
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise KeyringError(f"{source}: not a keyring file (invalid JSON)") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise KeyringError(f"{source}: not a keyring file (expected format {FORMAT!r})")
    aead_raw = raw.get("aead")
    if not isinstance(aead_raw, dict) or not aead_raw:
        raise KeyringError(f"{source}: no AEAD keys")
    aead: dict[int, bytes] = {}
    for kid, v in aead_raw.items():
        if not (isinstance(kid, str) and kid.isdigit() and 1 <= int(kid) <= MAX_KID):
            raise KeyringError(f"{source}: bad key id {kid!r} (1..{MAX_KID})")
        aead[int(kid)] = _key(v, f"AEAD key {kid}", source)
    previous = None
    if (prev := raw.get("signing_previous")) is not None:
        if not isinstance(prev, dict) or not isinstance(prev.get("until"), int | float):
            raise KeyringError(f"{source}: signing_previous must be {{\"seed\": ..., \"until\": <Unix time>}}")
        previous = (_key(prev.get("seed"), "previous signing key", source), float(prev["until"]))
    return Keyring(aead, _key(raw.get("index"), "index key", source),
                   _key(raw.get("signing"), "signing key", source), source, previous)


def credential_path() -> Path | None:
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    p = Path(folder) / CREDENTIAL_NAME
    return p if p.exists() else None


def resolve(configured: Path | None) -> Path:
    """The file the keyring is read from (see the module docstring for the order)."""
    return credential_path() or configured or DEFAULT_PATH


def load(path: Path) -> Keyring:
    """Read and check the keyring; raises KeyringError with the path and the cause."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyringError(
            f"no keyring at {path}: create it once with `iomt-gateway keys init --keyring {path}` "
            "(the install script does this)"
        ) from None
    except OSError as e:
        raise KeyringError(f"cannot read keyring {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise KeyringError(f"{path}: not a keyring file (not UTF-8 text)") from None
    return parse(text, path)


def loose_permissions(path: Path) -> bool:
    """True when group or others may read the file (a credential directory is managed by systemd)."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def generate(source: Path) -> Keyring:
    return Keyring({1: os.urandom(KEY_BYTES)}, os.urandom(KEY_BYTES), os.urandom(KEY_BYTES), source)


def init(path: Path) -> tuple[Keyring, bool]:
    """Create the keyring at ``path`` unless one exists; ``(keyring, created)``. Never overwrites."""
    if credential_path() is not None and credential_path() == path:
        return load(path), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ring = generate(path)
    try:
        # O_EXCL: two concurrent inits cannot both write, and an existing key is never replaced
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(path), False
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(ring.to_json())
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    _fsync_dir(path.parent)
    return ring, True


def rotate(path: Path) -> Keyring:
    """Add a new AEAD key (the new current one); older keys are kept for reading."""
    _check_writable(path)
    ring = load(path)
    if ring.current >= MAX_KID:
        raise KeyringError(f"{path}: no key ids left")
    new = Keyring({**ring.aead, ring.current + 1: os.urandom(KEY_BYTES)}, ring.index, ring.signing_seed, path,
                  ring.previous_signing)
    _replace(path, new)
    return new


def rotate_signing(path: Path, grace_s: float, now: float) -> Keyring:
    """A new checkpoint signing key; the previous one co-signs for ``grace_s`` (0: not at all —
    the right choice when the old key may be compromised).  A key retired earlier is dropped."""
    _check_writable(path)
    ring = load(path)
    previous = (ring.signing_seed, now + grace_s) if grace_s > 0 else None
    new = Keyring(ring.aead, ring.index, os.urandom(KEY_BYTES), path, previous)
    _replace(path, new)
    return new


def prune_signing(path: Path, now: float) -> tuple[Keyring, bool]:
    """Drop the previous signing key once its co-signing time is over (its private half on the
    card could still sign checkpoints that receivers holding the old verifier key accept); returns
    the keyring and whether a key was dropped.  Nothing is written while the grace time runs."""
    ring = load(path)
    if ring.previous_signing is None or ring.previous_signing[1] > now:
        return ring, False
    _check_writable(path)
    new = Keyring(ring.aead, ring.index, ring.signing_seed, path, None)
    _replace(path, new)
    return new, True


def _check_writable(path: Path) -> None:
    if credential_path() == path:
        raise KeyringError(
            f"{path} is a systemd credential (read-only): rotate the source file and re-run "
            "`systemd-creds encrypt`, then restart the service"
        )


def _replace(path: Path, new: Keyring) -> None:
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(new.to_json())
        f.flush()
        os.fsync(f.fileno())
    with contextlib.suppress(OSError):  # keep the owner (root) of the file we replace
        st = os.stat(path)
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
