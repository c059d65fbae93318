"""pydantic's validation errors → line-numbered ``Problem``s in the technician's words: the field
path as written in the YAML, what was found, what is allowed (or the closest valid name)."""

from __future__ import annotations

import difflib
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gateway.config.errors import Loc, Problem, ProblemKind, ValueErrorAt
from gateway.config.models import _ID
from gateway.config.source_map import SourceMap, display
from gateway.driver_api import DriverSettings

# --------------------------------------------------------------------------------------------------
# Walking the model's types along a path (pydantic locs, data paths)


def unwrap(tp: Any) -> tuple[Any, bool]:
    """Strip ``Annotated`` and ``None`` from a union; report whether a discriminator was attached."""
    discriminated = False
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            args = typing.get_args(tp)
            discriminated |= any(isinstance(m, FieldInfo) and m.discriminator for m in args[1:])
            tp = args[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp, discriminated
            tp = members[0]
        else:
            return tp, discriminated


def union_members(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def driver_tags(member: type[BaseModel], discriminator: str = "driver") -> list[str]:
    f = member.model_fields.get(discriminator)
    return [] if f is None else [str(v) for v in _choices(f.annotation) or []]


def _choices(tp: Any) -> list[Any] | None:
    """The finite set of values a type allows (Literal, Enum, bool), or None."""
    tp, _ = unwrap(tp)
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [m.value for m in tp]
    if tp is bool:
        return [True, False]
    return None


@dataclass
class _Walk:
    path: Loc  # the data path: discriminator tags removed
    types: list[Any]  # type at the root, then after each step of ``path`` (None = unknown)


def _walk(root: type[BaseModel], loc: Loc) -> _Walk:
    path: list[str | int] = []
    tps: list[Any] = [root]
    tp: Any = root
    for elem in loc:
        tp, discriminated = unwrap(tp) if tp is not None else (None, False)
        members = union_members(tp)
        if discriminated and isinstance(elem, str):
            chosen = [m for m in members if elem in driver_tags(m)]
            if chosen:  # pydantic puts the union tag into loc; it is not part of the data
                tp = chosen[0]
                tps[-1] = tp
                continue
        nxt: Any = None
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(elem, str):
            f = tp.model_fields.get(elem)
            nxt = None if f is None else f.annotation
        elif typing.get_origin(tp) is list and isinstance(elem, int):
            nxt = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            nxt = typing.get_args(tp)[1]
        path.append(elem)
        tps.append(nxt)
        tp = nxt
    return _Walk(tuple(path), tps)


def _model_of(tp: Any) -> type[BaseModel] | None:
    tp, _ = unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# --------------------------------------------------------------------------------------------------
# pydantic errors → problems




def _fmt(v: Any) -> str:
    return f"{v!r}" if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def _got(value: Any, src: SourceMap, path: Loc) -> str:
    """How the technician wrote the value: YAML's source text for numbers and booleans."""
    if value is None:
        return "it is empty"
    if isinstance(value, list):
        return "got a list"
    if isinstance(value, dict):
        return "got a section of 'key: value' lines"
    if isinstance(value, str):
        return f"got {value!r}"
    text = src.source_text(path)
    return f"got {text if text is not None else _fmt(value)}"


def _number(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _allowed_list(values: list[Any]) -> str:
    return ", ".join(_fmt(v) if not isinstance(v, str) else v for v in values)


def problem_from_error(err: ErrorDetails, root: type[BaseModel], src: SourceMap) -> Problem:
    walk = _walk(root, tuple(err["loc"]))
    path = walk.path
    etype = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    leaf_tp = walk.types[-1]
    parent_tp = walk.types[-2] if len(walk.types) > 1 else None
    got = _got(value, src, path)
    allowed = ""
    kind = ProblemKind.VALUE
    line = src.line_of(path)
    at_root = len(path) == 1

    if etype == "missing":
        message = "required section is missing" if at_root else "required field is missing"
    elif etype == "extra_forbidden":
        kind = ProblemKind.UNKNOWN_FIELD
        model = _model_of(parent_tp)
        names = list(model.model_fields) if model else []
        if model is not None and issubclass(model, DriverSettings):
            # Settings every driver shares read best after the driver's own: id, driver, port, ...
            common = [n for n in DriverSettings.model_fields if n != "id"]
            names = [n for n in names if n not in common] + common
        message = "unknown section" if at_root else "unknown field"
        close = difflib.get_close_matches(str(path[-1]), names, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        allowed = ", ".join(names)
    elif etype in ("union_tag_invalid", "union_tag_not_found"):
        tags = [t for m in union_members(unwrap(leaf_tp)[0]) for t in driver_tags(m)]
        allowed = ", ".join(sorted(tags))
        path = (*path, "driver")
        if etype == "union_tag_invalid":
            message = f"unknown driver {ctx.get('tag')!r}"
            line = src.line_of(path)
        else:
            message = "required field is missing (it names the kind of device)"
    elif etype in ("literal_error", "enum"):
        choices = _choices(leaf_tp)
        allowed = _allowed_list(choices) if choices else str(ctx.get("expected", ""))
        message = f"not one of the choices ({got})"
    elif etype == "string_type":
        message = f"must be text ({got})"
        if isinstance(value, int | float | bool):
            message += " — put it in quotes: YAML read it as a " + (
                "true/false value" if isinstance(value, bool) else "number"
            )
    elif etype in ("int_type", "int_parsing", "int_from_float"):
        message = f"must be a whole number ({got})"
    elif etype in ("float_type", "float_parsing", "finite_number"):
        message = f"must be a number ({got})"
    elif etype in ("bool_type", "bool_parsing"):
        message = f"must be true or false ({got})"
        allowed = "true, false"
    elif etype in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        words = {
            "greater_than_equal": ("at least", "ge"),
            "less_than_equal": ("at most", "le"),
            "greater_than": ("more than", "gt"),
            "less_than": ("less than", "lt"),
        }[etype]
        message = f"must be {words[0]} {_number(ctx.get(words[1]))} ({got})"
    elif etype == "too_short" and isinstance(value, list | dict):
        n = int(ctx.get("min_length", 1))
        message = f"needs at least {n} entr{'y' if n == 1 else 'ies'} (it has {len(value)})"
    elif etype == "string_pattern_mismatch":
        if ctx.get("pattern") == _ID:
            message = (
                f"may only hold letters, digits, '-', '_' and '.', start with a letter or digit, "
                f"and be at most 64 characters ({got})"
            )
        else:
            message = f"does not match the pattern {ctx.get('pattern')} ({got})"
    elif etype in ("model_type", "model_attributes_type", "dict_type"):
        message = f"must be a section of 'key: value' lines ({got})"
    elif etype == "list_type":
        message = f"must be a list of items, each starting with '- ' ({got})"
    elif etype == "path_type":
        message = f"must be a file path ({got})"
    elif etype.startswith(("datetime_", "timezone_")):
        message = f"must be a date and time with a UTC offset, like 2026-03-01T08:00:00+00:00 ({got})"
    elif etype in ("value_error", "assertion_error"):
        exc = ctx.get("error")
        message = str(exc) if exc is not None else str(err["msg"])
        if isinstance(exc, ValueErrorAt):
            path = _walk(root, (*tuple(err["loc"]), *exc.loc)).path
            line = src.line_of(path)
            if exc.first is not None:
                first_line = src.line_of(_walk(root, (*tuple(err["loc"]), *exc.first)).path)
                if first_line is not None:
                    message += f" (first at line {first_line})"
        elif isinstance(value, str | int | float) and not isinstance(value, bool) and repr(value) not in message:
            message += f" ({got})"
    else:
        message = f"{err['msg']} ({got})" if not isinstance(value, dict | list) else str(err["msg"])
    return Problem(line=line, column=None, path=display(path), message=message, allowed=allowed, kind=kind)
