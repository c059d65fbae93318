"""One command line: every verb says what it does with an example, reads the config with -c, reports
errors on stderr under the program's name, and exits 0 / 1 / 2 (success / runtime failure / usage or config)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import plugins

ROOT = Path(__file__).resolve().parent.parent
VERBS = ["run", "check-config", "schema", "outbox", "status", "doctor", "demo", "decode", "billing", "keys", "verify",
         *plugins.names(plugins.COMMANDS_GROUP)]

GOOD = """\
gateway:
  id: hub-01
upstream:
  url: mqtt://127.0.0.1
storage:
  path: state
patients:
  - id: p1
    devices:
      - {id: d1, driver: replay, vitals: a.jsonl}
"""


def _cli(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        stdin=stdin,
        check=False,
    )


def test_main_help_lists_every_verb_with_what_it_does_and_the_exit_codes() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    assert "(plug-in command)" not in out.stdout
    for verb in VERBS:
        assert f"    {verb}" in out.stdout, verb
    assert "list nearby BLE devices and the health services they advertise" in out.stdout
    assert "listen on a serial port and name the protocol, baud rate and format it speaks" in out.stdout
    assert "exit status: 0 success, 1 runtime failure, 2 usage or config error." in out.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_help_has_a_description_and_an_example(verb: str) -> None:
    out = _cli(verb, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("usage: iomt-gateway"), text
    assert "example" in text and "iomt-gateway " + verb in text.split("example", 1)[1], text
    assert "``" not in text


def test_billing_help_is_plain_words() -> None:
    text = _cli("billing", "--help").stdout
    assert "persist_interval_s" not in text and "``" not in text
    assert "-c CONFIG, --config CONFIG" in text and "/etc/iomt-gateway/config.yaml" in text


def test_no_verb_prints_help_and_exits_2() -> None:
    out = _cli()
    assert out.returncode == 2 and "usage: iomt-gateway" in out.stderr and out.stdout == ""


def test_check_config_takes_dash_c_and_keeps_its_positional_form(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)
    for args in (("-c", str(path)), (str(path),), ("--config", str(path))):
        out = _cli("check-config", *args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"{path}: OK")
    both = _cli("check-config", str(path), "-c", str(path))
    assert both.returncode == 2
    assert both.stderr.startswith("iomt-gateway check-config: name the config file once")


def test_config_errors_are_prefixed_with_the_program_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace("mqtt://127.0.0.1", "http://broker"))
    for verb in ("check-config", "outbox", "billing"):
        out = _cli(verb, "-c", str(path))
        assert out.returncode == 2, (verb, out.stderr)
        head, problem = out.stderr.splitlines()[:2]
        assert head.startswith(f"iomt-gateway {verb}: {path}: 1 problem"), head
        assert problem.startswith(f"{path}:4: upstream.url:"), problem  # the form editors jump to
        assert out.stdout == ""


def test_runtime_failure_is_exit_1_with_the_program_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)  # valid, but the daemon never ran: no outbox yet
    out = _cli("outbox", "-c", str(path))
    assert out.returncode == 1
    assert out.stderr.startswith("iomt-gateway outbox: no outbox database at")


def test_usage_errors_exit_2() -> None:
    out = _cli("outbox", "--frobnicate")
    assert out.returncode == 2 and "iomt-gateway: error: unrecognized arguments: --frobnicate" in out.stderr
    assert _cli("decode", "nonin2", "/nonexistent/capture.bin").returncode == 2
    assert _cli("decode", "ble-heart-rate").returncode == 2


def test_decode_refuses_to_wait_on_a_terminal() -> None:
    """Without a file, a serial decode on a terminal says what it needs instead of waiting silently."""
    primary, secondary = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "decode", "nonin2"],
            cwd=ROOT,
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError("decode waited on the terminal") from None
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 2
    assert err.strip() == (
        "iomt-gateway decode nonin2: no capture given: name a FILE, or pipe one in "
        "(iomt-gateway decode nonin2 - < capture.bin)"
    )


def test_decode_still_reads_a_pipe(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "decode", "nonin2"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.close()
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        select.select([], [], [], 0.05)
    assert proc.returncode == 0
    assert b"nonin2: nothing decoded" in proc.stderr.read()
