"""Where a configured gateway keeps its files: the config's folder, the state folder, the outbox,
per-device state and the keyring.  Shared by the daemon and the read-only commands (``outbox``,
``billing``, ``device-tag``, ``keys``), which must not import the daemon to find them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.models import ConfigBase


@dataclass(frozen=True)
class Paths:
    config: Path
    base_dir: Path
    state_dir: Path
    keyring_file: Path | None = None  # storage.keyring as configured (None: the default)

    @property
    def outbox(self) -> Path:
        return self.state_dir / "outbox.sqlite3"

    def device_dir(self, device_id: str) -> Path:
        return self.state_dir / "devices" / device_id

    @property
    def keyring(self) -> Path:
        """Where the keyring is read from (a systemd credential first; see gateway.keyring)."""
        from gateway import keyring  # noqa: PLC0415 - cryptography only for commands that open the keyring

        return keyring.resolve(self.keyring_file)


def resolve_paths(config_path: Path, cfg: ConfigBase) -> Paths:
    base = config_path.resolve().parent
    state = cfg.storage.path if cfg.storage.path.is_absolute() else base / cfg.storage.path
    ring = cfg.storage.keyring
    if ring is not None and not ring.is_absolute():
        ring = base / ring
    return Paths(config=config_path, base_dir=base, state_dir=state, keyring_file=ring)
