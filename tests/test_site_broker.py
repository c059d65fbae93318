"""The shipped Mosquitto site template (config/mosquitto/) against a real broker and a test PKI.

These tests speak to the broker with plain paho clients (not the gateway's uplink), so they check
the template itself: what a certificate from the site CA may publish and read, and that a revoked
or foreign certificate does not get in.  The uplink's side is in test_uplink_tls.py.
"""

from __future__ import annotations

import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from tests.broker import MosquittoBroker, free_port, site_listener_config
from tests.pki import CertFiles, Pki

RECEIVER = "iomt-receiver"


def _context(pki: Pki, client: CertFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.site_ca.cert))
    ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


class _Paho:
    """A blocking MQTT 5 client for one test: connect, publish QoS 1 and get the PUBACK's reason."""

    def __init__(self, port: int, ctx: ssl.SSLContext, client_id: str) -> None:
        self.port = port
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.tls_set_context(ctx)
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.acks: dict[int, ReasonCode] = {}
        self.acked = threading.Condition()
        self.messages: list[str] = []
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, m: self.messages.append(m.topic)
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.closed = False
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: object, _u: object, _f: object, rc: ReasonCode, _p: object = None) -> None:
        self.connack = rc
        self.connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.closed = True
        self.connected.set()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object = None) -> None:
        with self.acked:
            self.acks[mid] = rc
            self.acked.notify_all()

    def __enter__(self) -> _Paho:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        assert self.connack is not None and not self.connack.is_failure, self.connack
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str) -> ReasonCode:
        info = self.client.publish(topic, b"{}", qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, 10), f"no PUBACK for {topic}"
            return self.acks[info.mid]


@pytest.fixture
def site(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    port = free_port()
    config = site_listener_config(pki, tmp_path / "site", port, receiver=RECEIVER)
    b = MosquittoBroker(tmp_path / "broker", port=port, listener_config=config)
    b.start()
    try:
        yield b
    finally:
        b.kill()


def test_a_hub_publishes_only_under_its_own_id(site: MosquittoBroker, pki: Pki) -> None:
    receiver = _Paho(site.port, _context(pki, pki.client(RECEIVER)), "receiver")
    with receiver:
        receiver.client.subscribe("iomt/#", qos=1)
        assert receiver.subscribed.wait(10)
        with _Paho(site.port, _context(pki, pki.client("hub-a")), "hub-a") as hub_a:
            own = hub_a.publish("iomt/hub-a/summary/p1")
            status = hub_a.publish("iomt/hub-a/status")
            foreign = hub_a.publish("iomt/hub-b/billing/p9")
            outside = hub_a.publish("other/hub-a/summary/p1")
            # The PUBACKs are ordered after the deliveries the broker made for earlier publishes;
            # one more round trip makes sure the receiver has had the time to get hub-b's if any.
            hub_a.publish("iomt/hub-a/summary/p2")
        with _Paho(site.port, _context(pki, pki.client("hub-b")), "hub-b") as hub_b:
            hub_b.publish("iomt/hub-b/summary/p9")
    assert not own.is_failure and not status.is_failure
    assert foreign.value == 0x87 and outside.value == 0x87  # not authorised
    topics = set(receiver.messages)
    assert {"iomt/hub-a/summary/p1", "iomt/hub-a/status", "iomt/hub-b/summary/p9"} <= topics
    assert "iomt/hub-b/billing/p9" not in topics and "other/hub-a/summary/p1" not in topics


def test_a_hub_cannot_read_another_hubs_records(site: MosquittoBroker, pki: Pki) -> None:
    with _Paho(site.port, _context(pki, pki.client("hub-a")), "hub-a") as hub_a:
        hub_a.client.subscribe("iomt/#", qos=1)
        assert hub_a.subscribed.wait(10)
        with _Paho(site.port, _context(pki, pki.client("hub-b")), "hub-b") as hub_b:
            hub_b.publish("iomt/hub-b/summary/p9")
        hub_a.publish("iomt/hub-a/summary/p1")  # reaches hub-a's own subscription after hub-b's
        with hub_a.acked:
            hub_a.acked.wait_for(lambda: "iomt/hub-a/summary/p1" in hub_a.messages, 10)
    assert hub_a.messages == ["iomt/hub-a/summary/p1"]


def _refused(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether the broker ends the connection before accepting the MQTT session."""
    client = _Paho(port, ctx, "probe")
    try:
        client.client.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return True
    client.client.loop_start()
    try:
        assert client.connected.wait(10), "neither CONNACK nor disconnect"
        return client.closed or client.connack is None or client.connack.is_failure
    finally:
        client.client.disconnect()
        client.client.loop_stop()


def test_revoked_expired_and_foreign_certificates_are_refused(tmp_path: Path, pki: Pki) -> None:
    revoked = pki.client("hub-r")
    port = free_port()
    config = site_listener_config(pki, tmp_path / "site", port, crl=pki.site_ca.crl([revoked]))
    with MosquittoBroker(tmp_path / "broker", port=port, listener_config=config) as b:
        assert not _refused(b.port, _context(pki, pki.client("hub-a")))
        assert _refused(b.port, _context(pki, revoked))
        assert _refused(b.port, _context(pki, pki.client("hub-a", expired=True)))
        assert _refused(b.port, _context(pki, pki.unknown_ca.issue_client("hub-a")))


def test_revoking_a_hub_on_a_running_broker(tmp_path: Path, pki: Pki) -> None:
    """Enrolment guide, "Revoking a hub": publish a new CRL, SIGHUP the broker; the hub's next
    connection is refused, the other hubs' are not."""
    port = free_port()
    site = tmp_path / "site"
    config = site_listener_config(pki, site, port, crl=pki.site_ca.crl([]))
    with MosquittoBroker(tmp_path / "broker", port=port, listener_config=config) as b:
        hub_a, hub_b = _context(pki, pki.client("hub-a")), _context(pki, pki.client("hub-b"))
        assert not _refused(b.port, hub_a) and not _refused(b.port, hub_b)
        shutil.copyfile(pki.site_ca.crl([pki.client("hub-a")]), site / "ca.crl")
        b.reload()
        deadline = time.monotonic() + 10
        while not _refused(b.port, hub_a):  # the reload is asynchronous to our signal
            assert time.monotonic() < deadline, "hub-a still accepted after the CRL reload"
            time.sleep(0.1)
        assert not _refused(b.port, hub_b)
