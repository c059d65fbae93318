"""Read the YAML config into the pydantic model, turning every mistake into a line-numbered ``Problem``.

Steps: read the bytes → compose the YAML node tree (syntax errors carry line and column) → index the
tree (line of every mapping key and sequence item, duplicate keys) → construct plain Python data →
expand ``$VAR`` / ``${VAR}`` in path fields → validate with pydantic → map each error's ``loc`` back
to a line.  Every failure is raised as one ``ConfigError`` listing all problems found.

Environment variables are expanded **only in path fields** (fields typed ``Path``, drivers' included),
so a password or a topic never changes meaning with the environment.  The main use is systemd's
``LoadCredential=``: ``password_file: ${CREDENTIALS_DIRECTORY}/mqtt-password``.  ``$$`` is a literal
``$``.  An unset variable is an error (the daemon must not start with a half-made path); the
``check-config`` command only notes it, since technicians run it outside the service.

Relative paths stay relative in the model: their users resolve them against ``config_dir(cfg)``.
"""

from __future__ import annotations

import difflib
import enum
import functools
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gateway.config.errors import ConfigError, Loc, Problem, ProblemKind, ValueErrorAt
from gateway.config.models import _ID, ConfigBase, build_config_model
from gateway.driver_api import DriverSettings

__all__ = [
    "ConfigError",
    "LoadReport",
    "Problem",
    "UnsetVariable",
    "analyse_config_text",
    "config_dir",
    "config_json_schema",
    "installed_config_model",
    "load_config",
    "loaded_from",
    "parse_config_text",
    "read_config_report",
    "resolve_path",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_CONFIG_BYTES = 1024 * 1024  # a large site's config is a few KiB
# Values after YAML aliases are expanded.  A large hub's file has a few thousand; a few KiB of aliases
# nested in aliases (patients × devices × ...) can expand to millions, which took minutes and a GiB.
MAX_EXPANDED_VALUES = 50_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


# --------------------------------------------------------------------------------------------------
# YAML: node tree with positions


class _Loader(yaml.SafeLoader):
    """SafeLoader whose timestamp errors carry a position (PyYAML raises a bare ValueError for
    ``2026-13-45``, which would otherwise escape without a line number)."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} looks like a date but is not a valid one ({e})", node.start_mark
            ) from e


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


@dataclass
class _SourceMap:
    """Where each piece of the data came from: data path → position of its key (or sequence item)."""

    marks: dict[Loc, yaml.Mark] = field(default_factory=dict)
    scalars: dict[Loc, yaml.ScalarNode] = field(default_factory=dict)

    def line_of(self, path: Loc) -> int | None:
        """Line of the deepest existing prefix of ``path``: a missing field points at its parent."""
        for n in range(len(path), 0, -1):
            mark = self.marks.get(path[:n])
            if mark is not None:
                return int(mark.line) + 1
        return None

    def source_text(self, path: Loc) -> str | None:
        node = self.scalars.get(path)
        return None if node is None else str(node.value)


def _key_of(node: yaml.Node) -> str | None:
    """Config keys are names: a scalar key is its text, even if YAML would read ``on``/``no``/``1`` as a
    boolean or number (``on:`` then is an unknown field, not a baffling "keys should be strings")."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    node.tag = _STR_TAG  # construct it as written
    return str(node.value)


def _index(node: yaml.Node, path: Loc, src: _SourceMap, dups: list[Problem], visited: set[int]) -> None:
    # An alias is the anchored node again: index it once, so a recursive alias (&a [*a]) ends and a
    # chain of aliases to aliases ("billion laughs") stays linear.  Its other uses fall back to the
    # line of the key holding them.
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = _key_of(key_node)
            if key is None:
                continue
            if key in first_seen:
                dups.append(
                    Problem(
                        line=key_node.start_mark.line + 1,
                        column=key_node.start_mark.column + 1,
                        path=_display(path),
                        message=f"duplicate key {str(key)!r} (first at line {first_seen[key].line + 1})",
                    )
                )
            else:
                first_seen[key] = key_node.start_mark
            # The later occurrence wins in the constructed data, so it is the one errors point to.
            src.marks[(*path, key)] = key_node.start_mark
            _index(value_node, (*path, key), src, dups, visited)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            src.marks[(*path, i)] = item.start_mark
            _index(item, (*path, i), src, dups, visited)
    elif isinstance(node, yaml.ScalarNode):
        src.scalars[path] = node


_SYNTAX_HINTS = {
    "found character '\\t'": "a tab: YAML indentation must use spaces",
    "cannot start any token": "text starting with this character must be in quotes",
    "mapping values are not allowed here": "a ':' where none is expected: check this line's indentation,"
    " or put the value in quotes",
    "could not find expected ':'": "a line that is not 'key: value': check its indentation or a missing ':'",
    "expected <block end>": "this line's indentation does not match the lines above",
    "but found another document": "the file holds more than one '---' document; keep one",
}


def _syntax_problem(e: yaml.MarkedYAMLError) -> Problem:
    problem = e.problem or e.context or "cannot be parsed"
    mark = e.problem_mark or e.context_mark
    # "could not find expected ':'" is noticed on the line after the culprit; the context names it.
    if "could not find expected ':'" in problem and e.context_mark is not None:
        mark = e.context_mark
    message = f"YAML syntax error: {problem}"
    hint = next((h for k, h in _SYNTAX_HINTS.items() if k in problem), None)
    if hint:
        message += f" ({hint})"
    elif e.context and e.context_mark is not None and e.context_mark is not mark:
        message += f" ({e.context} at line {e.context_mark.line + 1})"
    return Problem(
        line=None if mark is None else mark.line + 1,
        column=None if mark is None else mark.column + 1,
        path="",
        message=message,
        kind=ProblemKind.SYNTAX,
    )


def _reader_problem(e: yaml.reader.ReaderError, text: str) -> Problem:
    before = text[: e.position]
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return Problem(
        line,
        column,
        "",
        f"YAML syntax error: control character U+{int(e.character):04X} is not allowed in YAML text",
        kind=ProblemKind.SYNTAX,
    )


def _too_deep() -> Problem:
    return Problem(None, None, "", "YAML nested too deeply", kind=ProblemKind.SYNTAX)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Number of nodes once every alias is expanded, counting stops a little past ``limit``.

    Linear in the distinct nodes: each node's size is computed once and reused wherever it is aliased.
    A node that contains itself (``&a [*a]``) counts once; validation refuses it later.
    """
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(n: yaml.Node) -> int:
        known = sizes.get(id(n))
        if known is not None:
            return known
        if id(n) in busy:
            return 1
        busy.add(id(n))
        total = 1
        children: list[yaml.Node] = []
        if isinstance(n, yaml.MappingNode):
            children = [x for pair in n.value for x in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        for child in children:
            total += size(child)
            if total > limit:
                break
        busy.discard(id(n))
        sizes[id(n)] = total
        return total

    return size(node)


def _alias_bomb(root: yaml.Node, distinct: int) -> Problem | None:
    if distinct > MAX_EXPANDED_VALUES:
        return None  # a file that big without aliases is refused by its size already
    expanded = _expanded_size(root, MAX_EXPANDED_VALUES)
    if expanded <= MAX_EXPANDED_VALUES:
        return None
    return Problem(
        None,
        None,
        "",
        f"YAML aliases (*name) expand this file to more than {MAX_EXPANDED_VALUES:,} values; "
        "write the repeated parts out, or reuse fewer aliases inside aliases",
        kind=ProblemKind.FILE,
    )


def _parse_yaml(text: str, file: Path) -> tuple[Any, _SourceMap, list[Problem]]:
    try:
        loader = _Loader(text)  # checks for unprintable characters already
    except yaml.reader.ReaderError as e:
        raise ConfigError(file, [_reader_problem(e, text)]) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            raise ConfigError(file, [_syntax_problem(e)]) from None
        except RecursionError:  # PyYAML composes recursively
            raise ConfigError(file, [_too_deep()]) from None
        if root is None:
            raise ConfigError(
                file,
                [Problem(None, None, "", "the file holds no settings (empty or only comments)", kind=ProblemKind.FILE)],
            )
        if not isinstance(root, yaml.MappingNode):
            what = "a list" if isinstance(root, yaml.SequenceNode) else f"the text {root.value!r}"
            raise ConfigError(
                file,
                [
                    Problem(
                        root.start_mark.line + 1,
                        None,
                        "",
                        f"the file must be a mapping of sections (gateway:, upstream:, patients:, ...), "
                        f"but it holds {what}",
                        kind=ProblemKind.FILE,
                    )
                ],
            )
        src = _SourceMap()
        dups: list[Problem] = []
        visited: set[int] = set()
        try:
            _index(root, (), src, dups, visited)
            bomb = _alias_bomb(root, len(visited))
            if bomb is not None:
                raise ConfigError(file, [bomb])
            data = loader.construct_document(root)
        except yaml.MarkedYAMLError as e:
            raise ConfigError(file, [*dups, _syntax_problem(e)]) from None
        except RecursionError:
            raise ConfigError(file, [_too_deep()]) from None
        return data, src, dups
    finally:
        loader.dispose()


# --------------------------------------------------------------------------------------------------
# Walking the model's types along a path (pydantic locs, data paths)


def _unwrap(tp: Any) -> tuple[Any, bool]:
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


def _union_members(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _tags(member: type[BaseModel], discriminator: str = "driver") -> list[str]:
    f = member.model_fields.get(discriminator)
    return [] if f is None else [str(v) for v in _choices(f.annotation) or []]


def _choices(tp: Any) -> list[Any] | None:
    """The finite set of values a type allows (Literal, Enum, bool), or None."""
    tp, _ = _unwrap(tp)
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
        tp, discriminated = _unwrap(tp) if tp is not None else (None, False)
        members = _union_members(tp)
        if discriminated and isinstance(elem, str):
            chosen = [m for m in members if elem in _tags(m)]
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
    tp, _ = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# --------------------------------------------------------------------------------------------------
# pydantic errors → problems


def _display(path: Loc) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", elem):
            out += f".{elem}" if out else elem
        else:
            out += f"[{elem!r}]"
    return out


def _fmt(v: Any) -> str:
    return f"{v!r}" if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def _got(value: Any, src: _SourceMap, path: Loc) -> str:
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


def _problem_from_error(err: ErrorDetails, root: type[BaseModel], src: _SourceMap) -> Problem:
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
        tags = [t for m in _union_members(_unwrap(leaf_tp)[0]) for t in _tags(m)]
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
    return Problem(line=line, column=None, path=_display(path), message=message, allowed=allowed, kind=kind)


# --------------------------------------------------------------------------------------------------
# ${VAR} expansion in path fields

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\$))")


def _is_path_type(tp: Any) -> bool:
    tp, _ = _unwrap(tp)
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


def _expand_paths(data: Any, tp: Any, path: Loc, env: Mapping[str, str], found: Callable[[Loc, str], None]) -> Any:
    """Return ``data`` with path fields expanded, led by the model's types (not by guessing from values)."""
    tp, _ = _unwrap(tp)
    members = _union_members(tp)
    if len(members) > 1 and isinstance(data, dict):
        tag = data.get("driver")
        tp = next((m for m in members if tag in _tags(m)), None)
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
                out[key] = _expand_paths(value, f.annotation, (*path, key), env, found)
        return out
    if typing.get_origin(tp) is list and isinstance(data, list):
        (item_tp,) = typing.get_args(tp)
        return [_expand_paths(v, item_tp, (*path, i), env, found) for i, v in enumerate(data)]
    if typing.get_origin(tp) is dict and isinstance(data, dict):
        value_tp = typing.get_args(tp)[1]
        return {k: _expand_paths(v, value_tp, (*path, k), env, found) for k, v in data.items()}
    return data


@dataclass(frozen=True)
class UnsetVariable:
    """A ``$NAME`` in a path field whose variable is not set in the loader's environment."""

    name: str
    path: str
    line: int | None

    def problem(self) -> Problem:
        message = f"uses ${self.name}, which is not set"
        if self.name == "CREDENTIALS_DIRECTORY":
            message += " (systemd sets it for a service with LoadCredential=; run under the unit, or set it)"
        return Problem(self.line, None, self.path, message)


# --------------------------------------------------------------------------------------------------
# Public API


@dataclass
class LoadReport:
    """A validated config plus what the loader noticed without refusing it (for ``check-config``)."""

    config: ConfigBase
    unset: list[UnsetVariable]


def _read_text(path: Path) -> str:
    def fail(message: str) -> ConfigError:
        return ConfigError(path, [Problem(None, None, "", message, kind=ProblemKind.FILE)])

    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # bounded: `check-config /dev/zero` must not eat the RAM
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a directory, not a config file") from None
    except PermissionError:
        raise fail(f"permission denied: the user {_user()} cannot read it") from None
    except OSError as e:
        raise fail(f"cannot be read: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise fail(f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config file?")
    try:
        return raw.decode("utf-8-sig")  # a BOM from a Windows editor is harmless; drop it
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            path,
            [
                Problem(
                    line,
                    None,
                    "",
                    f"not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8",
                    kind=ProblemKind.FILE,
                )
            ],
        ) from None


def _user() -> str:
    try:
        import pwd  # noqa: PLC0415 - POSIX only

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):
        return "running the gateway"


@functools.cache
def installed_config_model() -> type[ConfigBase]:
    """The config model of the installed drivers, built once per process.

    One class for every load matters beyond speed: pydantic models of different classes never compare
    equal, so a config re-read on SIGHUP could not be compared with the running one otherwise.
    """
    return build_config_model()


def analyse_config_text(
    text: str,
    *,
    file: Path,
    env: Mapping[str, str] | None = None,
    require_env: bool = True,
    model: type[ConfigBase] | None = None,
) -> LoadReport:
    """Validate ``text`` as if read from ``file``.  Raises ``ConfigError`` with every problem found.

    With ``require_env=False`` an unset variable in a path field is reported in ``unset`` and the
    path keeps the ``$NAME`` text; otherwise it is a problem like any other.
    """
    env = os.environ if env is None else env
    if model is None:
        try:
            model = installed_config_model()
        except RuntimeError as e:  # no driver installed: a broken installation, not a typo, but no traceback
            raise ConfigError(file, [Problem(None, None, "", str(e), kind=ProblemKind.FILE)]) from None
    data, src, problems = _parse_yaml(text, file)
    unset: list[UnsetVariable] = []
    data = _expand_paths(
        data, model, (), env, lambda p, name: unset.append(UnsetVariable(name, _display(p), src.line_of(p)))
    )
    if require_env:
        problems += [u.problem() for u in unset]
    try:
        cfg = model.model_validate(data)
    except RecursionError:
        raise ConfigError(file, [*problems, _too_deep()]) from None
    except ValidationError as e:
        problems += [_problem_from_error(err, model, src) for err in e.errors(include_url=False)]
        raise ConfigError(file, problems) from None
    if problems:
        raise ConfigError(file, problems)
    # Symlinks resolved, as the daemon's resolve_paths does: one answer for "relative to what".
    cfg._source_file = file.resolve()
    return LoadReport(cfg, [] if require_env else unset)


def parse_config_text(text: str, *, file: Path, env: Mapping[str, str] | None = None) -> ConfigBase:
    """Validate config text; ``file`` names it in messages and anchors its relative paths."""
    return analyse_config_text(text, file=file, env=env).config


def load_config(path: Path, *, env: Mapping[str, str] | None = None) -> ConfigBase:
    """Read and validate the config file.  Every kind of mistake raises ``ConfigError``."""
    return parse_config_text(_read_text(path), file=path, env=env)


def read_config_report(path: Path, *, require_env: bool = True) -> LoadReport:
    return analyse_config_text(_read_text(path), file=path, require_env=require_env)


def loaded_from(cfg: ConfigBase) -> Path | None:
    """The absolute path of the file ``cfg`` was read from; None for a model built in code."""
    return cfg._source_file


def config_dir(cfg: ConfigBase) -> Path:
    """The folder relative paths in ``cfg`` are relative to: the config file's, else the working directory."""
    src = loaded_from(cfg)
    return src.parent if src is not None else Path.cwd()


def resolve_path(cfg: ConfigBase, p: Path) -> Path:
    """``p`` as its user should open it: absolute paths unchanged, relative ones under ``config_dir``."""
    return p if p.is_absolute() else config_dir(cfg) / p


def config_json_schema(model: type[ConfigBase] | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the full config, with every installed driver's settings."""
    model = installed_config_model() if model is None else model
    schema = model.model_json_schema()
    schema.pop("title", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "iomt-gateway configuration",
        "description": "Generated by `iomt-gateway schema` from the installed gateway and drivers. "
        "Path fields may use $VAR or ${VAR} (e.g. ${CREDENTIALS_DIRECTORY}); relative paths are "
        "relative to the config file's folder.",
        **schema,
    }
