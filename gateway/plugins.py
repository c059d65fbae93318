"""Extra CLI verbs contributed by packages (entry points), so the CLI never imports a concrete driver.

* ``iomt_gateway.decoders``: ``name -> callable(argv: list[str]) -> int`` — ``iomt-gateway decode NAME ...``
  (serial protocols read a capture file or stdin; BLE profiles take hex payloads).
* ``iomt_gateway.commands``: ``verb -> callable(argv: list[str]) -> int`` — e.g. ``iomt-gateway scan``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
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


def summary(group: str, name: str) -> str:
    """First sentence of the plug-in module's docstring, read from its source without importing it
    (``scan`` would pull in bleak just to print ``--help``).  Empty when there is none."""
    for ep in entry_points(group=group, name=name):
        try:
            spec = importlib.util.find_spec(ep.module)
            if spec is None or spec.origin is None:
                return ""
            with open(spec.origin, encoding="utf-8") as f:
                doc = ast.get_docstring(ast.parse(f.read())) or ""
        except (ImportError, OSError, SyntaxError, ValueError):
            return ""
        first = doc.strip().split("\n\n", 1)[0].replace("\n", " ")
        # "``iomt-gateway scan``: list nearby ..." -> "list nearby ..."
        first = re.sub(r"^``[^`]*``:\s*", "", first)
        first = re.sub(r"\s*``[^`]*``\.?$", "", first)
        return first.split(". ", 1)[0].rstrip(".")
    return ""
