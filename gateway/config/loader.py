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

The steps live in their own modules: ``source_map`` (YAML → data and the line of every key),
``variables`` (``$VAR`` expansion), ``error_translation`` (pydantic errors → problems); this one
reads the file and runs them in order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.error_translation import problem_from_error
from gateway.config.errors import ConfigError, Problem, ProblemKind
from gateway.config.models import ConfigBase, build_config_model
from gateway.config.source_map import display, parse_yaml, too_deep
from gateway.config.variables import UnsetVariable, expand_paths

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
    data, src, problems = parse_yaml(text, file)
    unset: list[UnsetVariable] = []
    data = expand_paths(
        data, model, (), env, lambda p, name: unset.append(UnsetVariable(name, display(p), src.line_of(p)))
    )
    if require_env:
        problems += [u.problem() for u in unset]
    try:
        cfg = model.model_validate(data)
    except RecursionError:
        raise ConfigError(file, [*problems, too_deep()]) from None
    except ValidationError as e:
        problems += [problem_from_error(err, model, src) for err in e.errors(include_url=False)]
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


def load_config_for_tools(path: Path) -> ConfigBase:
    """The config as the CLI's tools read it (status, outbox, keys, billing, evidence, device-tag,
    ports): every rule of ``load_config``, but a path variable may be unset.  They run from a
    shell, where ${CREDENTIALS_DIRECTORY} (set by systemd for the service only) is not, and the
    paths they use are not the ones it names."""
    return read_config_report(path, require_env=False).config


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
