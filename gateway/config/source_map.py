"""YAML text → plain data plus a source map (the line of every key and item), with every YAML
mistake (syntax, duplicate keys, alias bombs, nesting) as a line-numbered ``Problem``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.config.errors import ConfigError, Loc, Problem, ProblemKind

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
class SourceMap:
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


def _index(node: yaml.Node, path: Loc, src: SourceMap, dups: list[Problem], visited: set[int]) -> None:
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
                        path=display(path),
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


def too_deep() -> Problem:
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


def parse_yaml(text: str, file: Path) -> tuple[Any, SourceMap, list[Problem]]:
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
            raise ConfigError(file, [too_deep()]) from None
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
        src = SourceMap()
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
            raise ConfigError(file, [too_deep()]) from None
        return data, src, dups
    finally:
        loader.dispose()

def display(path: Loc) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", elem):
            out += f".{elem}" if out else elem
        else:
            out += f"[{elem!r}]"
    return out
