"""The import rules of docs/architecture.md, checked on the source (every import, lazy ones too)
and, for the read-only commands, on what a real run loads.  A broken rule fails here with the
file and line that broke it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "drivers")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository, e.g. "gateway/uplink.py"
    line: int
    module: str  # absolute dotted name, e.g. "gateway.outbox.api"


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def imports_of(rel: str, source: str) -> Iterator[Import]:
    """Every module ``source`` imports, anywhere in the file (function-level imports included)."""
    package = rel.removesuffix(".py").replace("/", ".").rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source, rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield Import(rel, node.lineno, module)
            for alias in node.names:  # `from gateway import uplink` imports gateway.uplink
                yield Import(rel, node.lineno, f"{module}.{alias.name}")


def calls_open(rel: str, source: str) -> Iterator[Import]:
    for node in ast.walk(ast.parse(source, rel)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            yield Import(rel, node.lineno, "open()")


def sources() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return out


def _is(module: str, *names: str) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def violations(files: dict[str, str]) -> list[str]:
    """Each broken rule as 'file:line: module — rule', once per line and rule."""
    out: list[str] = []
    for rel, source in files.items():
        found = list(imports_of(rel, source))
        for imp in found:
            m = imp.module
            where = f"{imp.file}:{imp.line}: {m}"
            if rel.startswith("drivers/") and _is(m, "gateway.outbox", "gateway.uplink"):
                out.append(f"{where} — drivers never import the outbox or the uplink")
            if rel.startswith("drivers/") and _is(m, "gateway.records"):
                out.append(f"{where} — drivers yield gateway.readings, they never build wire records")
            if _is(m, "aiomqtt", "paho") and rel != "gateway/uplink.py":
                out.append(f"{where} — only gateway/uplink.py speaks MQTT (aiomqtt, paho)")
            if _is(m, "sqlite3") and not rel.startswith("gateway/outbox/"):
                out.append(f"{where} — only gateway/outbox/ speaks SQL")
            if _is(m, "bleak", "bleak_retry_connector") and not rel.startswith("drivers/ble/"):
                out.append(f"{where} — only drivers/ble/ imports bleak")
            if rel.startswith("gateway/") and _is(m, "drivers"):
                out.append(f"{where} — the gateway finds drivers by name (entry points), never imports one")
            if rel.startswith("gateway/signal/") and _is(m, *IMPURE):
                out.append(f"{where} — gateway/signal/ stays pure: no asyncio, threads, clocks, logs or I/O")
        if rel.startswith("gateway/signal/"):
            out += [f"{o.file}:{o.line}: open() — gateway/signal/ stays pure: no file I/O"
                    for o in calls_open(rel, source)]
    seen: set[tuple[str, str]] = set()  # `from a.b import c` also imports a.b.c: one report
    unique = []
    for problem in out:
        where, rule = problem.split(": ", 1)[0], problem.rsplit(" — ", 1)[1]
        if (where, rule) not in seen:
            seen.add((where, rule))
            unique.append(problem)
    return unique


IMPURE = (
    "asyncio", "threading", "multiprocessing", "concurrent", "socket", "select", "selectors", "subprocess",
    "os", "io", "shutil", "tempfile", "sqlite3", "serial", "bleak", "aiomqtt", "paho", "time", "logging",
    "structlog", "gateway.outbox", "gateway.uplink", "gateway.daemon", "gateway.supervisor",
)  # fmt: skip


def test_the_import_rules_hold() -> None:
    assert violations(sources()) == []


@pytest.mark.parametrize(
    ("rel", "source", "rule"),
    [
        ("drivers/serial/x.py", "from gateway.outbox import Outbox\n", "drivers never import the outbox"),
        ("drivers/ble/x.py", "def f():\n    from gateway import uplink\n", "or the uplink"),
        ("drivers/serial/x.py", "from gateway.records import VitalReading\n", "never build wire records"),
        ("gateway/pipeline.py", "import aiomqtt\n", "only gateway/uplink.py speaks MQTT"),
        ("gateway/billing/x.py", "import sqlite3 as db\n", "only gateway/outbox/ speaks SQL"),
        ("gateway/signal/x.py", "import asyncio\n", "gateway/signal/ stays pure"),
        ("gateway/signal/x.py", "def f(p):\n    return open(p).read()\n", "no file I/O"),
        ("gateway/cli.py", "from drivers.serial import nonin\n", "never imports one"),
    ],
)
def test_a_broken_rule_is_reported(rel: str, source: str, rule: str) -> None:
    """The checker itself: each rule, broken on purpose in a made-up file, is caught."""
    (problem,) = violations({rel: source})
    assert problem.startswith(rel) and rule in problem


# The read-only commands must not pay for (or depend on) the daemon: no gateway.daemon, and with
# it no aiomqtt or tenacity.  Each runs for real in a fresh interpreter.
_PROBE = """
import json, sys
from gateway.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
watched = ("gateway.daemon", "gateway.uplink", "aiomqtt", "tenacity", "gateway.supervisor")
print(json.dumps({"rc": rc, "loaded": sorted(m for m in watched if m in sys.modules)}))
"""


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        "gateway: {id: gw-arch}\nupstream: {url: 'mqtt://127.0.0.1:1883'}\n"
        f"storage: {{path: '{tmp_path / 'state'}'}}\n"
        "patients: [{id: p1, devices: [{id: ox1, driver: replay, "
        f"vitals: '{ROOT}/hil_fixtures/vitals/patient-a.jsonl'}}]}}]\n"
    )
    return cfg


@pytest.mark.parametrize(
    "argv",
    [
        ["check-config", "-c", "{cfg}"],
        ["schema", "-o", "{tmp}/schema.json"],
        ["outbox", "-c", "{cfg}"],
        ["billing", "-c", "{cfg}"],
        ["decode", "nonin2", f"{ROOT}/hil_fixtures/serial/nonin2_patient-a_220s.bin"],
    ],
    ids=lambda a: a[0],
)
def test_read_only_commands_do_not_import_the_daemon(tmp_path: Path, argv: list[str]) -> None:
    cfg = _config(tmp_path)
    args = [a.format(cfg=cfg, tmp=tmp_path) for a in argv]
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], (args, result, proc.stderr[-2000:])
