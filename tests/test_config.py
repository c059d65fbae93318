"""Config loading as a technician meets it: every mistake named with file, line and field path."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from gateway.config.commands import check_config_command, schema_command
from gateway.config.errors import ConfigError, ProblemKind
from gateway.config.loader import (
    JSON_SCHEMA_DIALECT,
    analyse_config_text,
    config_dir,
    config_json_schema,
    load_config,
    loaded_from,
    parse_config_text,
    resolve_path,
)
from gateway.config.models import build_config_model
from gateway.driver_api import DriverSettings, DriverSpec, registry

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "config"
EXAMPLE = ROOT / "config" / "example.yaml"
INSTALLED = ", ".join(sorted(registry()))  # serial/BLE drivers join as their packages register

MINIMAL = """\
gateway:
  id: hub-01
upstream:
  url: mqtts://broker
patients:
  - id: p1
    devices:
      - id: d1
        driver: replay
        vitals: a.jsonl
"""


def _error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def _only_line(err: ConfigError) -> str:
    """The single problem line of the rendered error (the first line is the header)."""
    lines = err.render().splitlines()
    assert len(lines) == 2, err.render()
    return lines[1]


# file, expected rendered problem line (prefix "<file>:" added by the test), a regex
BROKEN: list[tuple[str, str]] = [
    ("syntax_error.yaml", r":5:21: YAML syntax error: mapping values are not allowed here"),
    ("tab_indent.yaml", r":4:1: YAML syntax error: found character '\\t'.*indentation must use spaces"),
    ("duplicate_key.yaml", r":5: gateway: duplicate key 'id' \(first at line 3\)$"),
    (
        "unknown_section.yaml",
        r":5: loging: unknown section \(did you mean 'logging'\?\) — allowed here: gateway, clock, upstream, "
        r"storage, logging, processing, alarms, billing, patients$",
    ),
    (
        "unknown_device_field.yaml",
        r":16: patients\[1\]\.devices\[0\]\.sped: unknown field \(did you mean 'speed'\?\) — allowed here: "
        r"id, driver, vitals, ecg, .*block_ms, speed, loop",
    ),
    (
        "unknown_driver.yaml",
        r":12: patients\[0\]\.devices\[1\]\.driver: unknown driver 'nonin-9560' — allowed: "
        + re.escape(", ".join(sorted(registry())))
        + "$",
    ),
    ("wrong_type.yaml", r":5: upstream\.keepalive_s: must be a whole number \(got 'thirty'\)$"),
    ("out_of_range.yaml", r":7: storage\.commit_interval_ms: must be at least 10 \(got 1\)$"),
    ("no_valid_ecg_too_soon.yaml", r":7: alarms\.ecg\.no_valid_ecg\.raise_after_s: must be at least 4 \(got 2\)$"),
    ("bad_url.yaml", r":9: upstream\.url: must start with mqtt:// or mqtts:// \(got 'http://broker'\)$"),
    ("missing_required.yaml", r":1: gateway\.id: required field is missing$"),
    ("empty.yaml", r": the file holds no settings"),
    ("not_mapping.yaml", r":1: the file must be a mapping of sections .* but it holds a list$"),
    ("bad_timezone.yaml", r":7: patients\[0\]\.timezone: unknown time zone 'Central Time'"),
    (
        "duplicate_device_id.yaml",
        r":16: patients\[1\]\.devices\[1\]\.id: device id 'ox-1' is used twice .*\(first at line 8\)$",
    ),
]


@pytest.mark.parametrize(("name", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_is_named_with_file_line_and_path(name: str, expected: str) -> None:
    path = DATA / name
    err = _error(path)
    line = _only_line(err)
    assert re.fullmatch(re.escape(str(path)) + expected + ".*", line), line
    assert "Traceback" not in err.render()
    assert err.file == path


def test_several_problems_are_reported_at_once_sorted_by_line() -> None:
    err = _error(DATA / "several_problems.yaml")
    got = [(p.line, p.path) for p in err.problems]
    assert got == [
        (2, "gateway.id"),
        (4, "upstream.url"),
        (5, "upstream.inflight"),
        (7, "logging.level"),
        (11, "patients[0].devices[0].id"),  # missing: the line of the device that lacks it
        (13, "patients[0].devices[1].driver"),
    ]
    text = err.render()
    assert text.splitlines()[0].endswith("6 problems in the configuration")
    assert "allowed: debug, info, warning, error" in text
    assert "has an invalid port (got 'mqtts://broker:99999')" in text
    assert f"required field is missing (it names the kind of device) — allowed: {INSTALLED}" in text


def test_file_not_found_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _only_line(_error(path)) == f"{path}: file not found"


def test_directory_and_non_utf8_are_config_errors(tmp_path: Path) -> None:
    assert "is a directory" in _only_line(_error(tmp_path))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(MINIMAL.replace("Ward", "").encode() + b"# caf\xe9\n")
    assert re.fullmatch(rf"{re.escape(str(bad))}:11: not UTF-8 text \(byte 0xe9\).*", _only_line(_error(bad)))


def test_control_characters_and_oversized_files(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL.replace("hub-01", "hub-\x0001"))
    assert _only_line(_error(path)).endswith(
        ":2:11: YAML syntax error: control character U+0000 is not allowed in YAML text"
    )
    path.write_text("# x\n" * 300_000)
    assert _only_line(_error(path)) == f"{path}: larger than 1024 KiB: not a config file?"


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(MINIMAL)
    path.chmod(0)
    if os.geteuid() != 0:
        assert "permission denied" in _only_line(_error(path))
        return
    # root reads any file: check through the command, run as root without the two capabilities
    # that let it (CI runs as root; a technician's `sudo -u iomt-gateway` meets the same error)
    drop = shutil.which("setpriv")
    assert drop, "setpriv (util-linux) is needed to test this as root"
    out = subprocess.run([drop, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "gateway.cli",
                          "check-config", "-c", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "permission denied" in out.stderr.lower() and str(path) in out.stderr, out
    assert "Traceback" not in out.stderr


def test_number_where_text_is_expected_says_to_quote_it(tmp_path: Path) -> None:
    text = MINIMAL.replace("id: hub-01", "id: 0012")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=tmp_path / "c.yaml")
    line = _only_line(info.value)
    # YAML 1.1 read 0012 as octal 10: the technician sees what they wrote, and the fix.
    assert line.endswith(":2: gateway.id: must be text (got 0012) — put it in quotes: YAML read it as a number")


def test_invalid_date_and_unknown_tag_are_located(tmp_path: Path) -> None:
    text = MINIMAL + "        start_time: 2026-13-45\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=tmp_path / "c.yaml")
    assert re.search(r":11:21: YAML syntax error: '2026-13-45' looks like a date but is not", _only_line(info.value))
    with pytest.raises(ConfigError) as info:
        parse_config_text(MINIMAL.replace("a.jsonl", "!include a.jsonl"), file=tmp_path / "c.yaml")
    assert ":10:" in _only_line(info.value)


def test_two_documents_and_an_unclosed_quote(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(MINIMAL + "---\nmore: 1\n", file=tmp_path / "c.yaml")
    assert ":11:1: YAML syntax error: but found another document" in _only_line(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config_text('gateway:\n  site: "Ward 3\n', file=tmp_path / "c.yaml")
    assert info.value.problems[0].kind is ProblemKind.SYNTAX


def test_duplicate_keys_are_reported_alongside_validation_problems(tmp_path: Path) -> None:
    text = MINIMAL.replace("  url: mqtts://broker\n", "  url: mqtts://broker\n  url: ftp://x\n")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=tmp_path / "c.yaml")
    assert [(p.line, p.path) for p in info.value.problems] == [(5, "upstream"), (5, "upstream.url")]


def test_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "      - id: d1\n",
        "      - &base {driver: replay, vitals: a.jsonl, id: x}\n      - <<: *base\n        id: d1\n",
    )
    cfg = parse_config_text(text.replace("        driver: replay\n        vitals: a.jsonl\n", ""), file=tmp_path / "c")
    assert [d.id for d in cfg.patients[0].devices] == ["x", "d1"]


def test_recursive_alias_and_deep_nesting_do_not_hang_or_crash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_config_text(MINIMAL + "processing: &a\n  summaries: *a\n", file=tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as info:
        parse_config_text(MINIMAL + "extra: " + "[" * 5000 + "]" * 5000 + "\n", file=tmp_path / "c.yaml")
    assert _only_line(info.value).endswith(": YAML nested too deeply")


def test_keys_are_names_even_when_yaml_reads_them_as_booleans(tmp_path: Path) -> None:
    text = MINIMAL.replace("gateway:\n", "on: 1\ngateway:\n  no: 2\n") + "      - pulse-ox\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=tmp_path / "c.yaml")
    assert [(p.line, p.path, p.kind) for p in info.value.problems] == [
        (1, "on", ProblemKind.UNKNOWN_FIELD),
        (3, "gateway.no", ProblemKind.UNKNOWN_FIELD),
        (13, "patients[0].devices[1]", ProblemKind.VALUE),
    ]
    assert info.value.problems[2].message == "must be a section of 'key: value' lines (got 'pulse-ox')"


def test_missing_top_level_section_has_no_line(tmp_path: Path) -> None:
    text = "gateway:\n  id: hub\npatients: []\n"
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=tmp_path / "c.yaml")
    rendered = info.value.render()
    assert f"{tmp_path / 'c.yaml'}: upstream: required section is missing" in rendered
    assert ":3: patients: needs at least 1 entry (it has 0)" in rendered


# ----------------------------------------------------------------------------- several drivers


class _SerialLike(DriverSettings):
    driver: Literal["fakeserial"] = "fakeserial"
    port: Path
    baud: int = Field(9600, ge=300, le=115200)
    parity: Literal["none", "even", "odd"] = "none"


def _two_driver_model() -> Any:
    specs = {"fakeserial": DriverSpec("fakeserial", _SerialLike, "tests.nowhere:Driver"), **registry()}
    return build_config_model(specs)


SERIAL = (
    MINIMAL
    + """\
      - id: ox-2
        driver: fakeserial
        port: ${DEV_DIR}/ttyUSB0
        baud: 100
        parity: mark
        baudrate: 9600
"""
)


def test_discriminator_tag_is_not_part_of_the_displayed_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        analyse_config_text(SERIAL, file=tmp_path / "c.yaml", model=_two_driver_model(), env={"DEV_DIR": "/dev"})
    lines = info.value.render().splitlines()[1:]
    prefix = f"{tmp_path / 'c.yaml'}:"
    assert lines == [
        f"{prefix}14: patients[0].devices[1].baud: must be at least 300 (got 100)",
        f"{prefix}15: patients[0].devices[1].parity: not one of the choices (got 'mark') — allowed: none, even, odd",
        f"{prefix}16: patients[0].devices[1].baudrate: unknown field (did you mean 'baud'?) — allowed here: "
        "id, driver, port, baud, parity, no_data_minutes",
    ]


def test_unknown_driver_lists_every_installed_driver(tmp_path: Path) -> None:
    text = MINIMAL.replace("driver: replay", "driver: nonin")
    with pytest.raises(ConfigError) as info:
        analyse_config_text(text, file=tmp_path / "c.yaml", model=_two_driver_model())
    allowed = ", ".join(sorted([*registry(), "fakeserial"]))
    assert _only_line(info.value).endswith(
        f":9: patients[0].devices[0].driver: unknown driver 'nonin' — allowed: {allowed}"
    )


def test_env_expansion_in_driver_path_fields_only(tmp_path: Path) -> None:
    text = SERIAL.replace("        baud: 100\n        parity: mark\n        baudrate: 9600\n", "")
    text = text.replace("id: hub-01", "id: hub-01\n  site: $HOME-$$5")
    report = analyse_config_text(text, file=tmp_path / "c.yaml", model=_two_driver_model(), env={"DEV_DIR": "/dev"})
    cfg = report.config
    assert cfg.patients[0].devices[1].port == Path("/dev/ttyUSB0")
    assert cfg.gateway.site == "$HOME-$$5"  # not a path field: left exactly as written
    with pytest.raises(ConfigError) as info:
        analyse_config_text(text, file=tmp_path / "c.yaml", model=_two_driver_model(), env={})
    assert _only_line(info.value).endswith(":14: patients[0].devices[1].port: uses $DEV_DIR, which is not set")


def test_credentials_directory_expansion_and_dollar_escape(tmp_path: Path) -> None:
    text = MINIMAL.replace("mqtts://broker", "mqtts://broker\n  password_file: ${CREDENTIALS_DIRECTORY}/pw")
    text = text.replace("a.jsonl", "cost$$5/${X}a.jsonl")
    cfg = parse_config_text(text, file=tmp_path / "c.yaml", env={"CREDENTIALS_DIRECTORY": "/run/creds/x", "X": ""})
    assert cfg.upstream.password_file == Path("/run/creds/x/pw")
    assert cfg.patients[0].devices[0].vitals == Path("cost$5/a.jsonl")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, file=tmp_path / "c.yaml", env={"X": ""})
    assert "uses $CREDENTIALS_DIRECTORY, which is not set (systemd sets it" in _only_line(info.value)


# ----------------------------------------------------------------------------- where paths resolve


def test_loaded_from_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "config.yaml"
    path.write_text(MINIMAL + "storage:\n  path: state\n")
    cfg = load_config(path)
    assert loaded_from(cfg) == path
    assert config_dir(cfg) == tmp_path / "etc"
    assert resolve_path(cfg, cfg.storage.path) == tmp_path / "etc" / "state"
    assert resolve_path(cfg, Path("/abs")) == Path("/abs")
    assert loaded_from(cfg.model_copy()) == path
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    assert config_dir(load_config(link)) == tmp_path / "etc"  # the real file's folder, like the daemon
    built = build_config_model().model_validate(cfg.model_dump())
    assert loaded_from(built) is None
    assert config_dir(built) == Path.cwd()


# ----------------------------------------------------------------------------- example, commands, schema


def test_example_config_validates_and_names_real_fixtures() -> None:
    report = analyse_config_text(
        EXAMPLE.read_text(), file=EXAMPLE, env={"CREDENTIALS_DIRECTORY": "/run/credentials/iomt-gateway.service"}
    )
    cfg = report.config
    assert cfg.upstream.tls and cfg.upstream.cert_file == Path("/run/credentials/iomt-gateway.service/iomt_client.crt")
    assert len(cfg.patients) == 2
    assert any(p.alarms.limits for p in cfg.patients)
    for p in cfg.patients:
        for d in p.devices:
            for rel in (d.vitals, d.ecg):
                if rel is not None:
                    target = resolve_path(cfg, rel)
                    assert target.exists() or target.with_suffix(".hea").exists(), target
    # Every section of the model appears in the example, so technicians see them all.
    top = {line.split(":")[0] for line in EXAMPLE.read_text().splitlines() if re.match(r"^[a-z_]+:", line)}
    assert top == set(build_config_model().model_fields)
    assert EXAMPLE.read_text().startswith("# yaml-language-server: $schema=")


def test_check_config_summary(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert check_config_command(EXAMPLE) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"{EXAMPLE}: OK"
    body = "\n".join(lines)
    assert re.search(r"gateway +hub-ward3-01 \(Ward 3, beds 1-4\)", body)
    assert re.search(r"upstream +mqtts://mqtt\.hospital\.example\.org:8883, TLS with client certificate", body)
    assert re.search(r"patients +2\n", body)
    assert re.search(r"devices +3 \(replay: 3\)", body)
    assert re.search(r"storage +/var/lib/iomt-gateway\n", body)
    assert re.search(r"alarm limits +gateway-wide: built-in defaults\n +per patient: p-c21e \(spo2\)", body)
    assert "note: $CREDENTIALS_DIRECTORY is not set here" in body
    assert "upstream.ca_file (line 45)" in body


def test_check_config_reports_changed_and_dropped_alarm_limits(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "alarms:\n  limits:\n    spo2:\n      low: {raise_at: 85}\n")
    out = io.StringIO()
    assert check_config_command(path, out=out) == 0
    text = out.getvalue()
    assert "gateway-wide: changed for spo2; NO limit alarm for body_temperature, heart_rate" in text
    assert "per patient: none" in text
    assert f"storage      {os.path.normpath('/var/lib/iomt-gateway')}" in text


def test_check_config_prints_the_error_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_command(DATA / "several_problems.yaml") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 7 and "Traceback" not in err
    assert f"{DATA / 'several_problems.yaml'}:7: logging.level" in err


def _refs_resolve(node: Any, defs: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in defs, ref
        for v in node.values():
            _refs_resolve(v, defs)
    elif isinstance(node, list):
        for v in node:
            _refs_resolve(v, defs)


# Draft 2020-12 keywords pydantic may emit, plus OpenAPI's "discriminator" (ignored by JSON Schema tools).
_KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "type",
        "enum",
        "const",
        "properties",
        "additionalProperties",
        "required",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "discriminator",
    }
)
_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


def _check_schema(node: Any, where: str = "#") -> None:
    """Every key is a keyword and every subschema is a schema: what a meta-schema check would catch."""
    assert isinstance(node, dict), where
    assert set(node) <= _KEYWORDS, (where, set(node) - _KEYWORDS)
    for key, value in node.items():
        if key in ("properties", "$defs", "patternProperties"):
            for name, sub in value.items():
                _check_schema(sub, f"{where}/{key}/{name}")
        elif key in ("items", "additionalProperties", "not", "contains", "propertyNames") and isinstance(value, dict):
            _check_schema(value, f"{where}/{key}")
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for i, sub in enumerate(value):
                _check_schema(sub, f"{where}/{key}/{i}")
        elif key == "type":
            assert set([value] if isinstance(value, str) else value) <= _TYPES, where
        elif key == "required":
            assert set(value) <= set(node.get("properties", {})), where


def test_schema_structure_includes_every_driver() -> None:
    schema = config_json_schema(_two_driver_model())
    assert schema["$schema"] == JSON_SCHEMA_DIALECT
    json.dumps(schema)  # serialisable as is
    defs = schema["$defs"]
    _refs_resolve(schema, defs)
    _check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert {"gateway", "upstream", "patients"} <= set(schema["required"])
    devices = defs["Patient"]["properties"]["devices"]["items"]
    assert devices["discriminator"]["propertyName"] == "driver"
    assert set(devices["discriminator"]["mapping"]) == {*registry(), "fakeserial"}
    replay = defs["ReplaySettings"]
    assert replay["properties"]["driver"]["const"] == "replay"
    assert replay["additionalProperties"] is False and "vitals" in replay["properties"]


def test_schema_command_writes_file_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "config.schema.json"
    assert schema_command(out) == 0
    written = json.loads(out.read_text())
    assert "ReplaySettings" in written["$defs"]
    capsys.readouterr()
    assert schema_command(None) == 0
    assert json.loads(capsys.readouterr().out) == written
    assert schema_command(tmp_path / "missing-dir" / "s.json") == 1


# ----------------------------------------------------------------------------- no input crashes the loader

_EXAMPLE_LINES = EXAMPLE.read_text().splitlines(keepends=True)


@st.composite
def _mangled_example(draw: st.DrawFn) -> str:
    lines = list(_EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "insert", "indent", "dedent"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "insert":
            col = draw(st.integers(0, len(lines[i])))
            junk = draw(st.text(st.sampled_from(list(":-{}[]#&*!|>'\"%@`\t ,?0a9\x00é")), max_size=4))
            lines[i] = lines[i][:col] + junk + lines[i][col:]
        elif action == "indent":
            lines[i] = "  " + lines[i]
        else:
            lines[i] = lines[i].lstrip()
        if not lines:
            break
    return "".join(lines)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mangled_example())
def test_mangled_config_gives_config_error_or_model(text: str) -> None:
    nlines = text.count("\n") + 1
    try:
        parse_config_text(text, file=EXAMPLE, env={"CREDENTIALS_DIRECTORY": "/run/c"})
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.line is None or 1 <= p.line <= nlines
        assert "Traceback" not in e.render()


def test_reloading_the_same_file_gives_an_equal_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    first, again = load_config(path), load_config(path)
    assert first == again and first.patients[0] == again.patients[0]
    path.write_text(MINIMAL.replace("a.jsonl", "b.jsonl"))
    changed = load_config(path)
    assert changed.patients[0] != first.patients[0] and changed.upstream == first.upstream
