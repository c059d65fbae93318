"""What a field technician meets at the hub: the shipped config's tools work from a shell, and a
mistake or a damaged file gets a clear line and an exit code, never a traceback, a password
repeated, or a daemon that restarts every 5 s (exit 2 stops systemd's restarts).  The commands run
as processes, as a technician runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = (ROOT / "config" / "demo.yaml").read_text()
EXAMPLE = ROOT / "config" / "example.yaml"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        check=False,
    )


def config(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("path: ../demo-state", f"path: {tmp_path / 'state'}"))
    return path


@pytest.mark.parametrize("zone", ["America", "Europe", "x" * 300])
def test_a_time_zone_that_is_no_zone_is_named(tmp_path: Path, zone: str) -> None:
    cfg = config(tmp_path, DEMO.replace("timezone: America/Chicago", f"timezone: {zone}"))
    out = cli("check-config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert "unknown time zone" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("url", ["mqtts:/hub:S3cret@broker", "mqtts//hub:S3cret@broker", "hub:S3cret@broker"])
def test_a_mistyped_broker_url_never_repeats_its_password(tmp_path: Path, url: str) -> None:
    cfg = config(tmp_path, DEMO.replace("url: mqtt://127.0.0.1:1883", f'url: "{url}"'))
    out = cli("check-config", str(cfg))
    assert out.returncode == 2 and "upstream.url" in out.stderr
    assert "S3cret" not in out.stderr + out.stdout


def test_check_config_refuses_a_misspelled_variable_and_notes_one_systemd_sets() -> None:
    text = EXAMPLE.read_text()
    assert "${CREDENTIALS_DIRECTORY}/" in text
    ok = cli("check-config", str(EXAMPLE))
    assert ok.returncode == 0 and "note: $CREDENTIALS_DIRECTORY is not set here" in ok.stdout
    misspelled = Path(os.environ.get("TMPDIR", "/tmp")) / f"misspelled-{os.getpid()}.yaml"
    misspelled.write_text(text.replace("${CREDENTIALS_DIRECTORY}/", "${CREDENTIALS_DIRECTROY}/", 1))
    try:
        bad = cli("check-config", str(misspelled))
    finally:
        misspelled.unlink()
    assert bad.returncode == 2 and "$CREDENTIALS_DIRECTROY" in bad.stderr and "misspelling" in bad.stderr


@pytest.mark.parametrize("command", [["status"], ["outbox"], ["device-tag"], ["billing"], ["keys", "status"]])
def test_the_field_commands_read_the_shipped_config_from_a_shell(command: list[str]) -> None:
    """The installed config names files under ${CREDENTIALS_DIRECTORY}, set by systemd for the
    service only: the tools run from a shell all the same (they said it was not set, exit 2)."""
    out = cli(*command, "-c", str(EXAMPLE))
    assert "CREDENTIALS_DIRECTORY" not in out.stderr, out.stderr
    assert out.returncode != 2 and "Traceback" not in out.stderr


def test_a_damaged_status_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    from gateway.status_file import SCHEMA  # noqa: PLC0415

    cfg = config(tmp_path, DEMO)
    (tmp_path / "state").mkdir()
    status = tmp_path / "state" / "status.json"
    for damaged, why in ((b"\xff\xfe{", "not UTF-8"), (b'{"schema": %d}' % SCHEMA, "damaged")):
        status.write_bytes(damaged)
        out = cli("status", "-c", str(cfg))
        assert out.returncode == 1 and why in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_file_that_is_no_outbox_or_keyring_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff\xfe not a database")
    for args in (["outbox", "--db", str(junk)], ["outbox", "--db", str(junk), "--json"]):
        out = cli(*args)
        assert out.returncode == 1 and "not a database" in out.stderr and "Traceback" not in out.stderr
    out = cli("keys", "status", "--keyring", str(junk))
    assert out.returncode != 0 and "not a keyring file" in out.stderr and "Traceback" not in out.stderr


def test_a_state_directory_it_cannot_make_stops_the_daemon_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cfg = config(tmp_path, DEMO.replace("path: ../demo-state", f"path: {tmp_path / 'a-file' / 'state'}"))
    out = cli("run", "-c", str(cfg))
    assert out.returncode == 2, out.stderr
    assert "cannot use the state directory" in out.stderr and "Traceback" not in out.stderr


def test_a_config_error_is_an_error_line_in_the_journal(tmp_path: Path) -> None:
    cfg = config(tmp_path, DEMO.replace("timezone: America/Chicago", "timezone: Mars/Olympus"))
    out = cli("run", "-c", str(cfg), "--log-format", "json")
    assert out.returncode == 2
    line = next(x for x in out.stderr.splitlines() if "config_invalid" in x)
    assert line.startswith("<3>")  # journald's priority prefix: shown by journalctl -p warning
