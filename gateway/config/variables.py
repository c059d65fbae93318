"""``$VAR`` / ``${VAR}`` expansion, in path fields only (see ``gateway.config.loader``)."""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gateway.config.error_translation import driver_tags, union_members, unwrap
from gateway.config.errors import Loc, Problem

# --------------------------------------------------------------------------------------------------
# ${VAR} expansion in path fields

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")


def _is_path_type(tp: Any) -> bool:
    tp, _ = unwrap(tp)
    return isinstance(tp, type) and issubclass(tp, os.PathLike)


def _expand(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``$VAR``/``${VAR}``/``$$``; unset variables are left as written and returned."""
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        name = m.group(1) or m.group(2)
        if name in env:
            return env[name]
        missing.append(name)
        return m.group(0)

    return _VAR.sub(sub, text), missing


def expand_paths(data: Any, tp: Any, path: Loc, env: Mapping[str, str], found: Callable[[Loc, str], None]) -> Any:
    """Return ``data`` with path fields expanded, led by the model's types (not by guessing from values)."""
    tp, _ = unwrap(tp)
    members = union_members(tp)
    if len(members) > 1 and isinstance(data, dict):
        tag = data.get("driver")
        tp = next((m for m in members if tag in driver_tags(m)), None)
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(data, dict):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            f = tp.model_fields.get(key) if isinstance(key, str) else None
            if f is None:
                out[key] = value
            elif _is_path_type(f.annotation) and isinstance(value, str):
                expanded, missing = _expand(value, env)
                for name in missing:
                    found((*path, key), name)
                out[key] = expanded
            else:
                out[key] = expand_paths(value, f.annotation, (*path, key), env, found)
        return out
    if typing.get_origin(tp) is list and isinstance(data, list):
        (item_tp,) = typing.get_args(tp)
        return [expand_paths(v, item_tp, (*path, i), env, found) for i, v in enumerate(data)]
    if typing.get_origin(tp) is dict and isinstance(data, dict):
        value_tp = typing.get_args(tp)[1]
        return {k: expand_paths(v, value_tp, (*path, k), env, found) for k, v in data.items()}
    return data


# Set by systemd for a service whose unit asks for them (LoadCredential=, StateDirectory=, ...).
SET_BY_SYSTEMD = frozenset(
    {
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "RUNTIME_DIRECTORY",
        "CACHE_DIRECTORY",
        "LOGS_DIRECTORY",
        "CONFIGURATION_DIRECTORY",
    }
)


@dataclass(frozen=True)
class UnsetVariable:
    """A ``$NAME`` in a path field whose variable is not set in the loader's environment."""

    name: str
    path: str
    line: int | None

    @property
    def set_by_systemd(self) -> bool:
        """systemd sets it for the service (unset in a technician's shell, which is no mistake)."""
        return self.name in SET_BY_SYSTEMD

    def problem(self) -> Problem:
        message = f"uses ${self.name}, which is not set"
        if self.name == "CREDENTIALS_DIRECTORY":
            message += " (systemd sets it for a service with LoadCredential=; run under the unit, or set it)"
        return Problem(self.line, None, self.path, message)
