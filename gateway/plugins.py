"""Extra CLI verbs contributed by packages (entry points), so the CLI never imports a concrete driver.

* ``iomt_gateway.decoders``: ``name -> callable(argv: list[str]) -> int`` — ``iomt-gateway decode NAME ...``
  (serial protocols read a capture file or stdin; BLE profiles take hex payloads).
* ``iomt_gateway.commands``: ``verb -> callable(argv: list[str]) -> int`` — e.g. ``iomt-gateway scan``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

DECODERS_GROUP = "iomt_gateway.decoders"
COMMANDS_GROUP = "iomt_gateway.commands"

Command = Callable[[list[str]], int]


def names(group: str) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=group))


def load(group: str, name: str) -> Command | None:
    for ep in entry_points(group=group, name=name):
        fn: Command = ep.load()
        return fn
    return None
