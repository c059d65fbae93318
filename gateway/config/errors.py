"""Config mistakes as data: each ``Problem`` knows its line and field path, ``ConfigError`` renders them.

Kept apart from the loader so the models can raise ``ValueErrorAt`` (a validator error that names the
exact field it is about) without importing YAML machinery.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Loc = tuple[str | int, ...]


class ProblemKind(enum.Enum):
    FILE = "file"  # missing, unreadable, empty, not a mapping
    SYNTAX = "syntax"  # the YAML parser stopped; the column matters
    UNKNOWN_FIELD = "unknown_field"  # "allowed" lists the field names valid at that place
    VALUE = "value"  # anything else about a value; "allowed" lists valid values when finite


@dataclass(frozen=True)
class Problem:
    line: int | None
    """1-based line in the file, None when the problem has no place (file missing, section absent)."""
    column: int | None
    path: str
    """Field path as a technician reads it: ``patients[0].devices[1].port``; empty for file-level problems."""
    message: str
    allowed: str = ""
    kind: ProblemKind = ProblemKind.VALUE

    def sort_key(self) -> tuple[int, str, int]:
        return (self.line or 0, self.path, self.column or 0)

    def render(self, file: Path) -> str:
        where = str(file)
        if self.line is not None:
            where += f":{self.line}"
            # A column helps only where the parser stopped; for fields the key's line says enough.
            if self.kind is ProblemKind.SYNTAX and self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.allowed:
            label = "allowed here" if self.kind is ProblemKind.UNKNOWN_FIELD else "allowed"
            text += f" — {label}: {self.allowed}"
        return text


class ConfigError(Exception):
    """Everything wrong with one config file, ready to show to a technician (no traceback needed)."""

    def __init__(self, file: Path, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = sorted(problems, key=Problem.sort_key)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        head = f"{self.file}: {n} problem{'s' if n != 1 else ''} in the configuration"
        return "\n".join([head, *(p.render(self.file) for p in self.problems)])


class ValueErrorAt(ValueError):
    """A validator error about one field of the model being validated, rather than the model as a whole.

    pydantic places a ``model_validator`` error on the model itself; raising this instead lets the
    loader point at the field's own line.  ``loc`` is relative to the model that raised it;
    ``first`` optionally names an earlier field it clashes with (a duplicate id).
    """

    def __init__(self, message: str, loc: Loc, first: Loc | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.first = first
