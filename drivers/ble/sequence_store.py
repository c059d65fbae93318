"""Where a glucose meter's record numbering stands: the last sequence number the gateway holds."""

from __future__ import annotations

import json
import os
from pathlib import Path


class SequenceStore:
    """The last glucose sequence number the gateway holds, in a small JSON file replaced atomically."""

    def __init__(self, path: Path, address: str) -> None:
        self.path = path
        self.address = address.upper()

    def load(self) -> int | None:
        try:
            obj = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable state: fetch everything rather than miss readings
        # A different meter at this device id starts from scratch.
        if not isinstance(obj, dict) or obj.get("address") != self.address:
            return None
        seq = obj.get("last_sequence")
        return seq if isinstance(seq, int) and 0 <= seq <= 0xFFFF else None

    def save(self, seq: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"address": self.address, "last_sequence": seq}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
