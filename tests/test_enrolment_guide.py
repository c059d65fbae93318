"""The openssl commands of docs/security.md ("Enrolling a hub", "Revoking a hub"), run as written.

Each command is checked to appear verbatim in the guide, so the guide cannot drift from what is
tested.  The site CA uses the shipped config/mosquitto/site-ca.cnf (with the broker's names set
to this machine's, as a site sets its own); the result drives the real gateway uplink against the
shipped Mosquitto template: the enrolled hub delivers, then is revoked and refused.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.outbox import Outbox
from gateway.tls import TlsCause
from gateway.uplink import Uplink
from tests.broker import MosquittoBroker, free_port, site_listener_config
from tests.conftest import _require_mosquitto
from tests.pki import CertFiles
from tests.test_uplink import running, submit_mixed, until, upstream
from tests.test_uplink_tls import _refusal

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "security.md").read_text()

CA_SETUP = [
    "mkdir issued && touch index.txt && echo 1000 > serial && echo 1000 > crlnumber",
    "openssl req -x509 -config site-ca.cnf -extensions ca_ext -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
    "-nodes -days 3650 -keyout ca.key -out ca.crt",
    "chmod 600 ca.key",
]
BROKER = [
    "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    '-subj "/CN=mqtt.hospital.example.org" -keyout server.key -out server.csr',
    "openssl ca -config site-ca.cnf -extensions broker -days 825 -batch -in server.csr -out server.crt",
]
HUB_KEY = [
    "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    '-subj "/CN=hub-ward3-01" -keyout client.key -out hub-ward3-01.csr',
    "chmod 600 client.key",
]
SIGN = [
    "openssl req -in hub-ward3-01.csr -noout -subject",
    "openssl ca -config site-ca.cnf -extensions hub -batch -in hub-ward3-01.csr -out hub-ward3-01.crt",
]
REVOKE = [
    "openssl ca -config site-ca.cnf -revoke hub-ward3-01.crt",
    "openssl ca -config site-ca.cnf -gencrl -out ca.crl",
]


def _run(commands: list[str], cwd: Path) -> list[str]:
    outputs = []
    for cmd in commands:
        assert cmd in GUIDE, f"docs/security.md no longer says: {cmd}"
        done = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{cmd}\n{done.stderr}"
        outputs.append(done.stdout)
    return outputs


@pytest.fixture
async def outbox(tmp_path: Path) -> Outbox:
    ob = await Outbox.open(tmp_path / "outbox.db", gateway_id="hub-ward3-01", commit_interval_ms=20)
    yield ob  # type: ignore[misc]
    await ob.close()


async def test_enrol_then_revoke_a_hub_with_the_guides_commands(tmp_path: Path, outbox: Outbox) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    ca_dir, hub_dir = tmp_path / "site-ca", tmp_path / "hub"
    ca_dir.mkdir()
    hub_dir.mkdir()
    cnf = (ROOT / "config" / "mosquitto" / "site-ca.cnf").read_text()
    # What a site edits: the broker's names (here, this machine's).
    assert "subjectAltName = DNS:mqtt.hospital.example.org" in cnf
    (ca_dir / "site-ca.cnf").write_text(
        cnf.replace("DNS:mqtt.hospital.example.org", "DNS:localhost, IP:127.0.0.1", 1)
    )
    _run(CA_SETUP + BROKER, ca_dir)
    _run(HUB_KEY, hub_dir)
    shutil.copy(hub_dir / "hub-ward3-01.csr", ca_dir)
    subject = _run(SIGN, ca_dir)[0]
    assert subject.strip() == "subject=CN = hub-ward3-01"
    shutil.copy(ca_dir / "hub-ward3-01.crt", hub_dir / "client.crt")
    shutil.copy(ca_dir / "ca.crt", hub_dir / "ca.crt")

    port = free_port()
    site = tmp_path / "site"
    _run(["openssl ca -config site-ca.cnf -gencrl -out ca.crl"], ca_dir)
    config = site_listener_config(
        None, site, port, ca=ca_dir / "ca.crt", server=CertFiles(ca_dir / "server.crt", ca_dir / "server.key", 0),
        crl=ca_dir / "ca.crl",
    )  # fmt: skip
    cfg = upstream(
        f"mqtts://localhost:{port}",
        ca_file=hub_dir / "ca.crt",
        cert_file=hub_dir / "client.crt",
        key_file=hub_dir / "client.key",
        backoff_max_s=1.0,
    )
    b = MosquittoBroker(tmp_path / "broker", port=port, listener_config=config, executable=_require_mosquitto())
    b.start()
    try:
        await submit_mixed(outbox, 4)
        uplink = Uplink(cfg, outbox, gateway_id="hub-ward3-01")
        async with running(uplink):
            await until(lambda: uplink.stats.delivered == 4)

        _run(REVOKE, ca_dir)
        shutil.copy(ca_dir / "ca.crl", site / "ca.crl")
        b.reload()
        # Mosquitto reloads between two turns of its (single-threaded) loop: once it has logged
        # the reload, the next connection meets the new CRL.
        await until(lambda: "Reloading config" in b.log_text(), within_s=10)
        await submit_mixed(outbox, 3)
        uplink = Uplink(cfg, outbox, gateway_id="hub-ward3-01", backoff_base_s=0.05)
        entry, _, failures = await _refusal(uplink, TlsCause.CLIENT_CERT_REVOKED)
        assert entry["cause"] == TlsCause.CLIENT_CERT_REVOKED.value, failures
    finally:
        b.kill()


def test_guide_commands_are_plain_shell() -> None:
    # Every command parses as shell words (no smart quotes or stray characters pasted into the doc).
    for cmd in CA_SETUP + BROKER + HUB_KEY + SIGN + REVOKE:
        for part in cmd.split("&&"):
            assert shlex.split(part)
