"""Where a glucose meter's record numbering stands: the numbers of the records the gateway holds."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Held:
    """``last``: every record up to it is held (None: none yet).  ``above``: records held past a gap
    that a lost notification left (``GlucoseDriver``), to be skipped when the gap is fetched again."""

    last: int | None = None
    above: set[int] = field(default_factory=set)


class SequenceStore:
    """The glucose records the gateway holds, in a small JSON file replaced atomically."""

    def __init__(self, path: Path, address: str) -> None:
        self.path = path
        self.address = address.upper()

    def load(self) -> Held:
        try:
            obj = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Held()
        except (OSError, ValueError):
            return Held()  # unreadable state: fetch everything rather than miss readings
        # A different meter at this device id starts from scratch.
        if not isinstance(obj, dict) or obj.get("address") != self.address:
            return Held()
        seq = obj.get("last_sequence")
        above = obj.get("held_above", [])
        last = seq if isinstance(seq, int) and 0 <= seq <= 0xFFFF else None
        if not isinstance(above, list) or not all(isinstance(s, int) and 0 <= s <= 0xFFFF for s in above):
            above = []  # fetched again, and taken again: better than a record missed
        return Held(last, {s for s in above if last is None or s > last})

    def save(self, held: Held) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"address": self.address, "last_sequence": held.last, "held_above": sorted(held.above)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
