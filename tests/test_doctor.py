"""``iomt-gateway doctor`` against a real Mosquitto with a TLS listener, a client certificate and a
password, all made by the test PKI (tests/pki.py): everything passes; then a wrong CA, an expired
client certificate, a wrong password and a closed port each give exactly one ✗ naming the cause."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.doctor import doctor_command
from gateway.local_broker import find_mosquitto, free_port
from tests.broker import MosquittoBroker
from tests.daemon_harness import FIXTURES, replay_device, write_config
from tests.pki import Pki

PASSWORD = "s3cret-Pw!"


@dataclass
class Site:
    broker: MosquittoBroker
    pki: Pki
    password_file: Path
    credentials: Path


def _make_site(tmp_path: Path, days: int = 30) -> Site:
    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed")
    pki = Pki(tmp_path / "pki", days=days)
    passwd = tmp_path / "mosquitto.passwd"
    passwd.write_text("")
    try:
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw-test", PASSWORD], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mosquitto_passwd unavailable")
    broker = MosquittoBroker(
        tmp_path / "broker",
        tls=pki.tls_files("gw-test"),
        extra_config=f"allow_anonymous false\npassword_file {passwd}",
    )
    broker.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    return Site(broker, pki, secret, tmp_path / "no-credentials-dir")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = _make_site(tmp_path)
    try:
        yield s
    finally:
        s.broker.kill()


def _config(tmp_path: Path, site: Site, **upstream: Any) -> Path:
    client = site.pki.client("gw-test")
    up: dict[str, Any] = {
        "url": f"mqtts://localhost:{site.broker.port}",
        "username": "gw-test",
        "password_file": str(site.password_file),
        "ca_file": str(site.pki.site_ca.cert),
        "cert_file": str(client.cert),
        "key_file": str(client.key),
    }
    up.update({k: str(v) if isinstance(v, Path) else v for k, v in upstream.items()})
    return write_config(
        tmp_path,
        broker_url=up.pop("url"),
        patients={"p-a": [replay_device("ox-a", vitals=FIXTURES / "vitals" / "patient-a.jsonl")]},
        extra={"upstream": up, "storage": {"min_free_mb": 1}},
        name="doctor.yaml",
    )


def _run(path: Path, credentials: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    rc = doctor_command(path, out=out, credentials=credentials)
    return rc, out.getvalue().splitlines()


def _failed(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


def test_all_checks_pass_against_a_tls_broker_with_client_certificate_and_password(tmp_path: Path, site: Site) -> None:
    rc, lines = _run(_config(tmp_path, site), site.credentials)
    assert _failed(lines) == [], "\n".join(lines)
    assert rc == 0
    port = site.broker.port
    text = "\n".join(lines)
    assert "✓ broker DNS localhost: " in text
    assert f"✓ broker TCP localhost:{port}: connection accepted" in text
    tls_line = next(line for line in lines if line.startswith(f"✓ TLS localhost:{port}: "))
    assert "chain to 'site-ca' verified" in tls_line and "host name localhost matches" in tls_line
    assert "certificate valid until 20" in tls_line  # the broker's expiry date is shown
    assert f"✓ MQTT CONNECT localhost:{port}: accepted (user 'gw-test')" in lines
    assert any(line.startswith("✓ client certificate ") and "CN=gw-test, valid until" in line for line in lines)
    assert any(line.startswith(f"✓ password file {site.password_file}: present, mode 0600") for line in lines)
    assert lines[-1].endswith("checks: all passed")


def test_wrong_ca_is_one_failure_naming_the_unknown_ca(tmp_path: Path, site: Site) -> None:
    rc, lines = _run(_config(tmp_path, site, ca_file=site.pki.unknown_ca.cert), site.credentials)
    assert rc == 1
    (failure,) = _failed(lines)
    assert failure == (
        f"✗ TLS localhost:{site.broker.port}: TLS refused: the broker's certificate is not signed by the trusted "
        "CA (ca_file) (server_unknown_ca)"
    )
    fix = lines[lines.index(failure) + 1]
    assert fix.strip().startswith("fix: ca_file must be the CA that signed the broker's certificate")
    assert not any(line.startswith("✓ MQTT CONNECT") for line in lines)  # nothing after a failed handshake


def test_an_expired_crl_fails_the_file_check_and_the_handshake_with_one_fix(tmp_path: Path, site: Site) -> None:
    crl = site.pki.site_ca.crl([], "hub-view", expired=True)
    rc, lines = _run(_config(tmp_path, site, crl_file=crl), site.credentials)
    assert rc == 1
    file_line, tls_line = _failed(lines)
    assert file_line.startswith(f"✗ revocation list {crl}: present") and "PAST its next update" in file_line
    assert tls_line == (
        f"✗ TLS localhost:{site.broker.port}: TLS refused: the revocation list (crl_file) is past its next update: "
        "install a fresh one from the site CA (or this hub's clock is wrong) (crl_expired)"
    )
    assert lines[lines.index(tls_line) + 1].strip().startswith("fix: install a fresh revocation list from the site CA")


def test_a_current_crl_passes_and_shows_its_next_update(tmp_path: Path, site: Site) -> None:
    crl = site.pki.site_ca.crl([site.pki.client("hub-z")], "hub-view")
    rc, lines = _run(_config(tmp_path, site, crl_file=crl), site.credentials)
    assert rc == 0, "\n".join(lines)
    line = next(x for x in lines if x.startswith(f"✓ revocation list {crl}"))
    assert "CN=site-ca" in line and "1 revoked, next update 20" in line


def test_expired_client_certificate_is_one_failure_naming_it(tmp_path: Path, site: Site) -> None:
    expired = site.pki.client("gw-test", expired=True)
    rc, lines = _run(_config(tmp_path, site, cert_file=expired.cert, key_file=expired.key), site.credentials)
    assert rc == 1
    (failure,) = _failed(lines)
    assert failure == (
        f"✗ TLS localhost:{site.broker.port}: TLS refused: the broker refused this hub's certificate: it has "
        "expired (client_cert_expired)"
    )
    # The file check shows the date, so the technician sees which certificate it is.
    assert any(line.startswith("✓ client certificate ") and "EXPIRED until" in line for line in lines)


def test_wrong_password_is_one_failure_naming_it(tmp_path: Path, site: Site) -> None:
    site.password_file.write_text("not-the-password\n")
    rc, lines = _run(_config(tmp_path, site), site.credentials)
    assert rc == 1
    (failure,) = _failed(lines)
    assert failure == (
        # Mosquitto answers a wrong password with "not authorised" (0x87), not 0x86.
        f"✗ MQTT CONNECT localhost:{site.broker.port}: refused: not authorised (a wrong password, or an identity "
        "the broker does not allow) (0x87) (user 'gw-test')"
    )
    assert "not-the-password" not in "\n".join(lines)


def test_closed_port_is_one_failure_naming_it(tmp_path: Path, site: Site) -> None:
    port = free_port()
    rc, lines = _run(_config(tmp_path, site, url=f"mqtts://localhost:{port}"), site.credentials)
    assert rc == 1
    (failure,) = _failed(lines)
    assert failure == f"✗ broker TCP localhost:{port}: connection refused: nothing listens on that port"


def test_secret_readable_by_others_and_missing_files(tmp_path: Path, site: Site) -> None:
    site.password_file.chmod(0o644)
    rc, lines = _run(_config(tmp_path, site, ca_file=tmp_path / "nowhere" / "ca.crt"), site.credentials)
    assert rc == 1
    failed = _failed(lines)
    assert f"✗ password file {site.password_file}: mode 0644: group or others may read a secret" in failed
    assert f"✗ CA certificate {tmp_path / 'nowhere' / 'ca.crt'}: missing" in failed
    too_open = f"✗ password file {site.password_file}: mode 0644: group or others may read a secret"
    assert lines[lines.index(too_open) + 1] == f"    fix: sudo chmod 0600 {site.password_file}"


def test_invalid_config_is_exit_2_with_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("gateway:\n  id: hub\nupstream:\n  url: http://x\npatients: []\n")
    rc, lines = _run(path, tmp_path)
    assert rc == 2
    (failure,) = _failed(lines)
    assert failure.startswith(f"✗ config: {path}:4: upstream.url: must start with mqtt:// or mqtts://")


def test_credentials_are_read_as_the_service_gets_them(tmp_path: Path, site: Site) -> None:
    """Outside the service ${CREDENTIALS_DIRECTORY} is unset: the doctor reads the installed files under the
    names systemd gives them (LoadCredential=iomt:DIR -> iomt_<name>)."""
    installed = tmp_path / "etc-credentials"
    installed.mkdir(mode=0o700)
    client = site.pki.client("gw-test")
    for name, src in (("ca.crt", site.pki.site_ca.cert), ("client.crt", client.cert), ("client.key", client.key)):
        (installed / name).write_bytes(src.read_bytes())
    (installed / "client.key").chmod(0o600)
    (installed / "mqtt-password").write_text(PASSWORD + "\n")
    (installed / "mqtt-password").chmod(0o600)
    cfg = _config(
        tmp_path,
        site,
        ca_file="${CREDENTIALS_DIRECTORY}/iomt_ca.crt",
        cert_file="${CREDENTIALS_DIRECTORY}/iomt_client.crt",
        key_file="${CREDENTIALS_DIRECTORY}/iomt_client.key",
        password_file="${CREDENTIALS_DIRECTORY}/iomt_mqtt-password",
    )
    rc, lines = _run(cfg, installed)
    assert _failed(lines) == [], "\n".join(lines)
    assert rc == 0
    assert lines[1] == (
        f"  note: ${{CREDENTIALS_DIRECTORY}}/iomt_<name> read as {installed}/<name>, as the service gets them"
    )
    assert any(line.startswith(f"✓ client key {installed / 'client.key'}: present, mode 0600") for line in lines)


def test_a_broker_certificate_about_to_expire_is_one_failure(tmp_path: Path) -> None:
    site = _make_site(tmp_path, days=5)  # every certificate of this PKI ends in 5 days
    try:
        rc, lines = _run(_config(tmp_path, site), site.credentials)
    finally:
        site.broker.kill()
    assert rc == 1
    (failure,) = _failed(lines)
    assert failure.startswith(f"✗ TLS localhost:{site.broker.port}: TLS")
    assert failure.endswith(" — expires in 5 days"), failure
    assert lines[lines.index(failure) + 1] == "    fix: ask the broker's administrator to renew its certificate"
