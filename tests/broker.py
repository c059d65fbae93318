"""A private Mosquitto for tests and benchmarks, plus helpers to watch and break the link to it.

* ``MosquittoBroker`` — one broker process per test on a free 127.0.0.1 port, persistence in the
  test's own directory (so an MQTT 5 persistent session survives ``restart()`` on the same port),
  optional TLS / mutual TLS with certificates made by ``make_tls_files`` or ``tests.pki.Pki``, or
  any listener section given as text (``listener_config``, e.g. the shipped site template rendered
  by ``site_listener_config``).
* ``TcpProxy`` — sits between the uplink and the broker; ``sever()`` resets every connection the
  way a dropped Wi-Fi link does, ``blackhole()`` keeps connections open but stops forwarding (a
  half-open link, so publishes time out), ``heal()`` goes back to normal.
* ``Subscriber`` — subscribes to ``#`` with QoS 1 on a persistent session and keeps what arrives,
  reconnecting across broker restarts.

aiomqtt is used here freely: the rule "only the uplink imports aiomqtt" is about product code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.local_broker import find_mosquitto, free_port
from tests.pki import CertFiles, Pki, TlsFiles

# The demo starts its broker with the same two helpers: one way to find Mosquitto and a free port.


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------------------------


def make_tls_files(directory: Path, client_id: str = "gw-test") -> TlsFiles:
    """A throw-away site CA, a server certificate for 127.0.0.1/localhost and a client certificate
    with CN ``client_id`` (see ``tests.pki.Pki`` for expired, unknown-CA and wrong-host variants)."""
    return Pki(directory).tls_files(client_id)


SITE_TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "config" / "mosquitto"
_SITE_PATHS = "/etc/mosquitto/iomt/"


def site_listener_config(
    pki: Pki | None,
    directory: Path,
    port: int,
    *,
    crl: Path | None = None,
    server: CertFiles | None = None,
    receiver: str | None = None,
    ca: Path | None = None,
) -> str:
    """The shipped ``config/mosquitto/iomt-gateway.conf`` (mTLS, identity as username, ACL) made
    runnable by a test: its files (site CA, ``server`` or ``pki.server``, the shipped ``acl`` and,
    if given, ``crl`` with ``crlfile`` enabled) copied into ``directory``, its listener moved to
    127.0.0.1:``port``.  ``receiver``: enable the ACL's commented receiver entry for that CN (a
    client certificate with that CN may then read every hub's topics).  Pass the result as
    ``MosquittoBroker(listener_config=...)``.  Without ``pki``, give ``ca`` and ``server`` (a site
    CA made some other way, e.g. with openssl by the enrolment guide's commands)."""
    directory.mkdir(parents=True, exist_ok=True)
    if pki is not None:
        server = server or pki.server
        ca = ca or pki.site_ca.cert
    if server is None or ca is None:
        raise ValueError("site_listener_config needs a pki, or both ca and server")
    for src, name in ((ca, "ca.crt"), (server.cert, "server.crt"), (server.key, "server.key"),
                      (SITE_TEMPLATE_DIR / "acl", "acl"), *([(crl, "ca.crl")] if crl else [])):  # fmt: skip
        shutil.copyfile(src, directory / name)
    if receiver is not None:
        acl = (directory / "acl").read_text()
        if "#user iomt-receiver\n#topic read iomt/#\n" not in acl:
            raise AssertionError("the shipped ACL template changed shape: update site_listener_config")
        acl = acl.replace("#user iomt-receiver\n#topic read iomt/#\n", f"user {receiver}\ntopic read iomt/#\n")
        (directory / "acl").write_text(acl)
    text = (SITE_TEMPLATE_DIR / "iomt-gateway.conf").read_text()
    if "listener 8883\n" not in text or _SITE_PATHS not in text:
        raise AssertionError("the shipped Mosquitto template changed shape: update site_listener_config")
    text = text.replace("listener 8883\n", f"listener {port} 127.0.0.1\n")
    if crl is not None:
        text = text.replace("#crlfile ", "crlfile ")
    return text.replace(_SITE_PATHS, f"{directory}/")


# --------------------------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------------------------


class MosquittoBroker:
    """A Mosquitto process owned by one test.  Synchronous on purpose: usable from any fixture."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: TlsFiles | None = None,
        require_client_cert: bool = True,
        extra_config: str = "",
        executable: str | None = None,
        listener_config: str | None = None,
    ) -> None:
        """``tls`` turns the generated listener into mqtts:// (``require_client_cert``: mutual TLS).
        ``listener_config``, if given, replaces the generated listener lines entirely: it must open
        ``listener <self.port> ...`` itself (build it after choosing ``port``).  ``extra_config``
        is appended after the listener, so listener options there apply to it."""
        exe = executable or find_mosquitto()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.executable = exe
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.extra_config = extra_config
        self.listener_config = listener_config
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        tls = self.tls is not None or (self.listener_config is not None and "certfile" in self.listener_config)
        return f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        if self.listener_config is not None:
            lines = [self.listener_config]
        else:
            lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        lines += [
            "persistence true",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            # Tests park tens of thousands of QoS 1 messages for an offline subscriber.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_dest stderr",
            # Started as root, Mosquitto drops to user "mosquitto", which cannot write the test's
            # directory (persistence) nor read its ACL files: stay who we are.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.tls is not None and self.listener_config is None:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_client_cert else 'false'}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._write_config()
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [self.executable, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"mosquitto did not listen on {self.port}:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file on the way out."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its ACL, certificates and CRL (connected clients stay)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


# --------------------------------------------------------------------------------------------
# A breakable TCP link
# --------------------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the broker; lets a test cut or freeze the link.

    ``latency_s`` delays every chunk by that much in each direction (a WAN's round trip is twice
    it), for benchmarks; ordering is kept.  ``tap(link, to_broker, data)`` sees every chunk before
    it is passed on (``link`` numbers the connections from 1), e.g. tests/mqtt_wire.py's PubackTap.
    """

    def __init__(
        self, target_port: int, *, latency_s: float = 0.0, tap: Callable[[int, bool, bytes], None] | None = None
    ) -> None:
        self.target_port = target_port
        self.latency_s = latency_s
        self.tap = tap
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        link = self.accepted
        for src, dst, to_broker in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pump(src, dst, pair, link, to_broker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        link: int,
        to_broker: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        delayed: asyncio.Queue[tuple[float, bytes]] | None = None
        sender: asyncio.Task[None] | None = None
        if self.latency_s > 0:
            delayed = asyncio.Queue()
            sender = asyncio.create_task(self._send_late(delayed, dst))
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                if self.tap is not None:
                    self.tap(link, to_broker, data)
                if delayed is not None:
                    delayed.put_nowait((loop.time() + self.latency_s, data))
                else:
                    dst.write(data)
                    await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if sender is not None:
                sender.cancel()
            self._drop(pair)

    @staticmethod
    async def _send_late(delayed: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while True:
                due, data = await delayed.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                dst.write(data)
                await dst.drain()

    def _drop(self, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        if pair in self._pairs:
            self._pairs.discard(pair)
            for w in pair:
                w.transport.abort()  # RST, not FIN: the broker must see an unclean loss

    def sever(self) -> None:
        for pair in list(self._pairs):
            self._drop(pair)

    def blackhole(self) -> None:
        self._flowing.clear()

    def refuse(self) -> None:
        """Reset new connections at once (existing ones are left alone)."""
        self._refusing = True

    def heal(self) -> None:
        self._refusing = False
        self._flowing.set()

    async def close(self) -> None:
        self.heal()
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------------
# Subscriber
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    user_properties: dict[str, str]
    content_type: str | None
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """Collects everything published on the broker; survives broker restarts (persistent session)."""

    host: str
    port: int
    topic: str = "#"
    client_id: str = "test-subscriber"
    tls_context: Any = None
    username: str | None = None  # ejabberd wants one (any, with any password)
    password: str | None = None
    received: list[Received] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    subscriptions: int = 0  # successful (re)subscriptions so far

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        first = True
        while True:
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = 3600
            client = aiomqtt.Client(
                self.host,
                self.port,
                identifier=self.client_id,
                username=self.username,
                password=self.password,
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=first,
                properties=connect_props,
                tls_context=self.tls_context,
                timeout=5,
            )
            try:
                async with client:
                    first = False
                    await client.subscribe(self.topic, qos=1)
                    self.subscriptions += 1
                    self._subscribed.set()
                    self._changed.set()
                    async for message in client.messages:
                        self._keep(message)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def _keep(self, message: aiomqtt.Message) -> None:
        props = message.properties
        user = dict(getattr(props, "UserProperty", []) or []) if props is not None else {}
        content_type = getattr(props, "ContentType", None) if props is not None else None
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        self.received.append(Received(str(message.topic), payload, user, content_type, message.retain))
        self._changed.set()

    async def wait_until(self, predicate: Callable[[list[Received]], bool], within_s: float = 20.0) -> None:
        """Wait until ``predicate(received)`` holds; the timeout only turns a hang into a failure."""

        async def _wait() -> None:
            while not predicate(self.received):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_wait(), within_s)
        except TimeoutError:
            raise AssertionError(
                f"condition not met after {within_s} s; {len(self.received)} messages received"
            ) from None

    async def wait_subscriptions(self, count: int, within_s: float = 20.0) -> None:
        """Wait until the subscriber has (re)subscribed ``count`` times in all."""
        await self.wait_until(lambda _: self.subscriptions >= count, within_s)

    def records(self, prefix: str = "") -> list[Received]:
        """Non-status messages (the record stream), optionally under a topic prefix."""
        return [r for r in self.received
                if r.topic.startswith(prefix) and not r.topic.endswith(("/status", "/checkpoint"))]

    def checkpoints(self) -> list[Received]:
        return [r for r in self.received if r.topic.endswith("/checkpoint")]

    def status(self) -> list[Received]:
        return [r for r in self.received if r.topic.endswith("/status")]
