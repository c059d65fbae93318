"""The shipped package and unit under a real systemd: install with the README's command, run as the
hub runs it, reload, watchdog, stop, an unsynchronised clock, upgrade and rollback, and an outbox the
running version cannot read.  One container boots for the module; the tests run in file order and
each leaves the service running for the next.

Needs root, systemd-nspawn and mmdebstrap (./scripts/test installs them when run as root); skipped
elsewhere with the reason.  Figures (time to READY, install time) are printed with -s.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from gateway import __version__
from tests.systemd_container import Container, ContainerUnavailable, booted, check_host, ensure_rootfs

ROOT = Path(__file__).resolve().parent.parent
UNIT = "iomt-gateway"
CONF = "/etc/iomt-gateway/config.yaml"
DB = "/var/lib/iomt-gateway/outbox.sqlite3"
NEXT = "9.9.1"  # the "newer build" of the upgrade test: this tree with another version number
FIXTURE = "/opt/iomt-gateway/lib/gateway/share/hil_fixtures/vitals/patient-a.jsonl"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _build(versions: dict[str, str | None], out: Path) -> dict[str, Path]:
    """Build the packages side by side (each is mostly waiting on I/O)."""
    procs = {}
    for name, version in versions.items():
        cmd = [str(ROOT / "scripts" / "build-deb"), "--out", str(out / name)]
        if version:
            cmd += ["--version", version]
        procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    debs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr
        debs[name] = Path(stdout.strip().splitlines()[-1])
    return debs


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    try:
        check_host()
    except ContainerUnavailable as e:
        pytest.skip(str(e))
    return _build({"current": None, "next": NEXT}, tmp_path_factory.mktemp("debs"))


@pytest.fixture(scope="module")
def hub(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    base = ensure_rootfs()
    with booted(base, tmp_path_factory.mktemp("hub")) as c:
        for name, deb in debs.items():
            c.put(f"/root/{name}.deb", deb.read_bytes())
        # A subscriber that sees every record the broker accepted, from before the gateway starts, and
        # across broker restarts: a persistent session (-c, QoS 1) that Debian's Mosquitto keeps on
        # disk, and a unit that restarts mosquitto_sub when the broker drops it.
        c.run(["systemd-run", "--unit=capture", "-p", "StandardOutput=append:/root/capture.txt",
               "-p", "Restart=always", "-p", "RestartSec=500ms",
               "mosquitto_sub", "-h", "127.0.0.1", "-c", "-q", "1", "-i", "capture", "-t", "iomt/#", "-F", "%t\t%p"])
        yield c


def _config(speed: float = 20) -> str:
    return yaml.safe_dump({
        "gateway": {"id": "hub-ci-01"},
        "clock": {"sync": "auto"},
        "upstream": {"url": "mqtt://127.0.0.1:1883", "topic_prefix": "iomt", "backoff_max_s": 2.0},
        "storage": {"path": "/var/lib/iomt-gateway", "commit_interval_ms": 200},
        "logging": {"level": "info", "format": "json"},
        "processing": {"summaries": {"period_s": 2}},
        "patients": [{"id": "p-ci-1", "timezone": "UTC",
                      "devices": [{"id": "ox-ci-1", "driver": "replay", "vitals": FIXTURE,
                                   "speed": speed, "loop": True}]}],
    }, sort_keys=False)


def _wait(what: str, check: Callable[[], bool], within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.2)


def _state(c: Container) -> dict[str, str]:
    return c.show(UNIT, "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result",
                  "ExecMainStatus", "ExecMainCode")


def _journal(c: Container, *args: str) -> str:
    return c.run(["journalctl", "-u", UNIT, "--no-pager", "-o", "cat", *args], check=False).stdout


def _outbox(c: Container) -> dict[str, object]:
    out = c.run(["runuser", "-u", "iomt-gateway", "--", "iomt-gateway", "outbox", "--db", DB, "--json"]).stdout
    data: dict[str, object] = json.loads(out)
    return data


def _captured_keys(c: Container) -> set[str]:
    keys = set()
    for line in c.run(["cat", "/root/capture.txt"], check=False).stdout.splitlines():
        _topic, _, payload = line.partition("\t")
        try:
            keys.add(json.loads(payload)["key"])
        except (ValueError, KeyError, TypeError):
            continue
    return keys


def _sha(c: Container, *paths: str) -> str:
    return c.run(["sha256sum", *paths]).stdout


def _apt_install(c: Container, deb: str, *extra: str) -> float:
    t0 = time.monotonic()
    done = c.run(["apt-get", "install", "-y", "-q", *extra, deb], check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return time.monotonic() - t0


# ---- install, first start -------------------------------------------------------------------


def test_install_creates_user_directories_and_enables_without_starting(hub: Container) -> None:
    took = _apt_install(hub, "/root/current.deb")
    print(f"\ninstall: {took:.1f} s")
    assert hub.run(["iomt-gateway", "--version"]).stdout.strip() == f"iomt-gateway {__version__}"
    assert hub.run(["id", "-u", "iomt-gateway"]).stdout.strip() != "0"
    modes = hub.run(["stat", "-c", "%n %a %U %G", "/etc/iomt-gateway", "/etc/iomt-gateway/credentials",
                     "/var/lib/iomt-gateway", CONF]).stdout.split("\n")
    assert modes[:4] == ["/etc/iomt-gateway 750 root iomt-gateway",
                         "/etc/iomt-gateway/credentials 700 root root",
                         "/var/lib/iomt-gateway 750 iomt-gateway iomt-gateway",
                         f"{CONF} 640 root iomt-gateway"]
    # the outbox keyring: root-only on disk, handed to the service as a credential
    assert hub.run(["stat", "-c", "%a %U", "/etc/iomt-gateway/keyring"]).stdout.strip() == "600 root"
    assert hub.run(["systemctl", "is-enabled", UNIT]).stdout.strip() == "enabled"
    # the example config names devices this hub does not have: not started until edited
    assert _state(hub)["ActiveState"] == "inactive"
    exposure = hub.run(["systemd-analyze", "security", "--no-pager", f"{UNIT}.service"], check=False).stdout
    print(exposure.strip().splitlines()[-1])
    level = float(exposure.strip().splitlines()[-1].split("level for")[1].split(":")[1].split()[0])
    assert level <= 1.5


def test_demo_runs_from_the_installed_package(hub: Container) -> None:
    done = hub.run(["iomt-gateway", "demo", "--duration", "8", "--speed", "50"], timeout=120)
    assert "Started a private Mosquitto" in done.stdout, done.stdout[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "ALARM RAISED" in done.stdout
    delivered = re.search(r"delivered to the broker this run \(PUBACK\): (\d+)", done.stdout)
    assert delivered and int(delivered.group(1)) > 0, done.stdout[-2000:]


def test_start_reaches_ready_as_the_service_user_in_its_sandbox(hub: Container) -> None:
    hub.put(CONF, _config(), 0o640)
    hub.run(["chgrp", "iomt-gateway", CONF])
    hub.put("/etc/iomt-gateway/credentials/mqtt-password", "not-used-by-this-broker\n", 0o600)
    t0 = time.monotonic()
    hub.run(["systemctl", "start", UNIT], timeout=60)  # Type=notify: returns once READY=1 came
    print(f"\nsystemctl start → READY: {time.monotonic() - t0:.2f} s")
    st = _state(hub)
    assert (st["ActiveState"], st["SubState"]) == ("active", "running")
    pid = st["MainPID"]
    assert hub.run(["ps", "-o", "user=", "-p", pid]).stdout.strip() == "iomt-gateway"
    status = hub.run(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapBnd"].strip(), 16) == 0
    creds = hub.run(["ls", f"/proc/{pid}/root/run/credentials/{UNIT}.service"], check=False)
    assert "iomt_mqtt-password" in creds.stdout and "iomt-gateway-keyring" in creds.stdout
    # read-only file system outside its state directory
    denied = hub.run(["runuser", "-u", "iomt-gateway", "--", "touch", "/opt/iomt-gateway/x"], check=False)
    assert denied.returncode != 0
    _wait("records at the broker", lambda: len(_captured_keys(hub)) >= 3)


def test_unsynchronised_clock_runs_without_sigsys(hub: Container) -> None:
    # The container has no NTP: timedated says NTPSynchronized=false, as on an offline hub at boot.
    assert hub.run(["busctl", "get-property", "org.freedesktop.timedate1", "/org/freedesktop/timedate1",
                    "org.freedesktop.timedate1", "NTPSynchronized"]).stdout.strip() == "b false"
    _wait("STATUS= says the clock is not synchronised", lambda: "clock not synchronised" in _state(hub)["StatusText"])
    assert "clock_not_synchronised" in _journal(hub, "-p", "warning")
    # Without timedated the gateway falls back to a read-only adjtimex under the unit's filter:
    # EPERM (SystemCallErrorNumber=), not SIGSYS.
    hub.run(["systemctl", "mask", "--now", "systemd-timedated.service"])
    try:
        hub.run(["systemctl", "restart", UNIT], timeout=60)
        time.sleep(3.0)
        st = _state(hub)
        assert (st["ActiveState"], st["NRestarts"]) == ("active", "0"), st
    finally:
        hub.run(["systemctl", "unmask", "systemd-timedated.service"])
    assert "status=31/SYS" not in _journal(hub) and "SIGSYS" not in _journal(hub)
    hub.run(["systemctl", "restart", UNIT], timeout=60)


# ---- reload, watchdog, stop -----------------------------------------------------------------


def test_reload_with_a_good_and_a_broken_config_ends_ready(hub: Container) -> None:
    pid = _state(hub)["MainPID"]
    hub.put(CONF, _config(speed=25), 0o640)
    hub.run(["systemctl", "reload", UNIT], timeout=30)
    _wait("active after a good reload", lambda: _state(hub)["ActiveState"] == "active", 10)
    assert "config_reloaded" in _journal(hub)

    hub.put(CONF, _config(speed=25).replace("patients:", "patients:\n  - oops: [unclosed"), 0o640)
    hub.run(["systemctl", "reload", UNIT], timeout=30)
    _wait("active (not 'reloading') after a broken reload", lambda: _state(hub)["ActiveState"] == "active", 10)
    st = _state(hub)
    assert st["MainPID"] == pid, "a reload never restarts the process"
    assert "config reload failed, previous config still running" in st["StatusText"]
    assert "config_reload_failed" in _journal(hub, "-p", "warning")
    hub.put(CONF, _config(), 0o640)
    hub.run(["systemctl", "reload", UNIT], timeout=30)
    _wait("failure cleared from STATUS=", lambda: "reload failed" not in _state(hub)["StatusText"], 10)


def test_frozen_event_loop_is_restarted_by_the_watchdog(hub: Container) -> None:
    # The shipped WatchdogSec=30 would make this test wait a minute; a drop-in shortens it here only.
    hub.put(f"/etc/systemd/system/{UNIT}.service.d/ci-watchdog.conf", "[Service]\nWatchdogSec=4\n")
    hub.run(["systemctl", "daemon-reload"])
    hub.run(["systemctl", "restart", UNIT], timeout=60)
    before = _state(hub)
    hub.run(["kill", "-STOP", before["MainPID"]])
    _wait("a new main process after the watchdog fired",
          lambda: (s := _state(hub))["MainPID"] not in ("0", before["MainPID"]) and s["ActiveState"] == "active", 60)
    assert int(_state(hub)["NRestarts"]) >= int(before["NRestarts"]) + 1
    assert "Watchdog timeout" in hub.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    hub.run(["rm", "-r", f"/etc/systemd/system/{UNIT}.service.d"])
    hub.run(["systemctl", "daemon-reload"])
    hub.run(["systemctl", "restart", UNIT], timeout=60)


def test_stop_is_prompt_and_loses_nothing_accepted(hub: Container) -> None:
    time.sleep(3.0)
    t0 = time.monotonic()
    hub.run(["systemctl", "stop", UNIT], timeout=60)
    took = time.monotonic() - t0
    print(f"\nsystemctl stop: {took:.2f} s (TimeoutStopSec=10)")
    st = _state(hub)
    assert st["Result"] == "success" and st["ExecMainStatus"] == "0", st
    assert took < 10
    ob = _outbox(hub)
    assert ob["accepted"] == ob["delivered"] + ob["depth"], ob  # type: ignore[operator]
    assert len(_captured_keys(hub)) >= int(ob["delivered"])  # type: ignore[call-overload]
    hub.run(["systemctl", "start", UNIT], timeout=60)


# ---- upgrade, rollback, an unreadable outbox ------------------------------------------------


def test_upgrade_and_rollback_keep_config_credentials_and_every_pending_record(hub: Container) -> None:
    kept = (CONF, "/etc/iomt-gateway/credentials/mqtt-password")
    hub.run(["systemctl", "stop", "mosquitto"])  # records pile up in the outbox meanwhile
    time.sleep(4.0)
    hashes = _sha(hub, *kept)
    before = _outbox(hub)
    assert int(before["depth"]) > 0  # type: ignore[call-overload]

    took = _apt_install(hub, "/root/next.deb")
    print(f"\nupgrade: {took:.1f} s")
    assert hub.run(["iomt-gateway", "--version"]).stdout.strip() == f"iomt-gateway {NEXT}"
    _wait("upgraded service active", lambda: _state(hub)["ActiveState"] == "active")
    time.sleep(2.0)
    assert _sha(hub, *kept) == hashes
    mid = _outbox(hub)
    assert int(mid["accepted"]) >= int(before["accepted"]) and int(mid["depth"]) >= int(before["depth"])  # type: ignore[call-overload]

    took = _apt_install(hub, "/root/current.deb", "--allow-downgrades")
    print(f"rollback: {took:.1f} s")
    assert hub.run(["iomt-gateway", "--version"]).stdout.strip() == f"iomt-gateway {__version__}"
    _wait("rolled-back service active", lambda: _state(hub)["ActiveState"] == "active")
    assert _sha(hub, *kept) == hashes
    assert "corrupt" not in hub.run(["ls", "/var/lib/iomt-gateway"]).stdout

    backlog = int(_outbox(hub)["accepted"])  # type: ignore[call-overload]
    hub.run(["systemctl", "start", "mosquitto"])
    # The replay keeps producing: "drained" means everything accepted before the broker returned
    # has been delivered since.
    _wait("backlog delivered", lambda: int(_outbox(hub)["delivered"]) >= backlog, 60)  # type: ignore[call-overload]
    hub.run(["systemctl", "stop", UNIT], timeout=60)
    end = _outbox(hub)
    assert end["accepted"] == end["delivered"] + end["depth"], end  # type: ignore[operator]
    assert len(_captured_keys(hub)) >= int(end["delivered"])  # type: ignore[call-overload]


def test_outbox_this_version_cannot_read_is_refused_and_left_in_place(hub: Container) -> None:
    hub.run(["systemctl", "stop", UNIT], timeout=60)
    hub.run(["runuser", "-u", "iomt-gateway", "--", "sqlite3", DB,
             "INSERT OR REPLACE INTO meta(name, value) VALUES ('min_reader_format', '99'), ('written_by', '7.0.0');"
             " PRAGMA user_version = 99;"])
    files = hub.run(["ls", "/var/lib/iomt-gateway"]).stdout
    digest = _sha(hub, DB)
    hub.run(["systemctl", "start", UNIT], check=False, timeout=60)
    _wait("the unit failed", lambda: _state(hub)["ActiveState"] == "failed", 30)
    st = _state(hub)
    assert st["ExecMainStatus"] == "2" and st["NRestarts"] == "0", st  # RestartPreventExitStatus=2
    assert _sha(hub, DB) == digest and hub.run(["ls", "/var/lib/iomt-gateway"]).stdout == files
    warnings = _journal(hub, "-p", "warning")
    assert "written by iomt-gateway 7.0.0" in warnings and f"this is iomt-gateway {__version__}" in warnings


def test_purge_keeps_the_outbox_with_its_keyring_and_a_reinstall_reads_it_again(hub: Container) -> None:
    """apt purge removes the config but keeps the outbox (billing evidence): the keyring that
    reads it stays beside it, and a reinstall puts it back rather than making a new one, which
    would refuse to start on the kept outbox."""
    hub.run(["systemctl", "stop", UNIT], timeout=60)
    keyring = _sha(hub, "/etc/iomt-gateway/keyring").split()[0]
    digest = _sha(hub, DB)
    done = hub.run(["apt-get", "purge", "-y", "-q", "iomt-gateway"], check=False, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "keyring.kept" in done.stderr + done.stdout
    assert hub.run(["test", "-e", "/etc/iomt-gateway"], check=False).returncode != 0
    assert hub.run(["stat", "-c", "%a %U", "/var/lib/iomt-gateway/keyring.kept"]).stdout.strip() == "600 root"
    assert _sha(hub, DB) == digest
    _apt_install(hub, "/root/current.deb")
    assert _sha(hub, "/etc/iomt-gateway/keyring").split()[0] == keyring
    assert hub.run(["stat", "-c", "%a %U", "/etc/iomt-gateway/keyring"]).stdout.strip() == "600 root"
    assert hub.run(["test", "-e", "/var/lib/iomt-gateway/keyring.kept"], check=False).returncode != 0
