"""A private two-node ejabberd cluster with MQTT 5 listeners, for tests and benchmarks.

ejabberd (Debian package ``ejabberd``, 23.01) is a second MQTT 5 implementation next to Mosquitto,
and a clustered one: a message published on one node reaches subscribers on the other, and
``kill -9`` of a node drops its clients' TCP connections with no DISCONNECT (sessions that lived
there are gone).  What it does not do: shared subscriptions; retained messages stay on the node
that received them.

Set-up facts that shape this module:

* ``ejabberdctl`` sources its settings file (``<config dir>/ejabberdctl.cfg``) *after* parsing
  its command-line flags, and Debian's ``/etc/ejabberd/ejabberdctl.cfg`` sets the config path:
  each node gets its own ``--config-dir`` whose ``ejabberdctl.cfg`` names the node, the cookie,
  the config, spool, log and pid paths.  Nothing of the system installation (``/etc/ejabberd``,
  ``/var/lib/ejabberd``, the ``ejabberd@localhost`` node a package install may have started) is
  used or touched; node names carry this process's pid, ports are free ports.
* ejabberdctl runs the node as the ``ejabberd`` user: the node directories are owned by it and
  live in a directory of their own under the system temp dir (pytest's per-user directory is
  mode 0700, closed to that user).
* ``ejabberdctl started`` answers before the listeners are up: we wait for the MQTT port.
* MQTT clients must send a user name and a password: anonymous auth (``login_anon``) accepts any.

The cluster is synchronous on purpose (usable from any fixture).  ``kill9(node)`` kills a node's
Erlang VM; ``start(node)`` brings it back, and it rejoins the cluster from its own Mnesia files.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.local_broker import free_port

EJABBERD_USER = "ejabberd"
USERNAME = "iomt"
PASSWORD = "any"  # anonymous auth: any password is accepted, but one must be sent


def find_ejabberdctl() -> str | None:
    for candidate in ("/usr/sbin/ejabberdctl", shutil.which("ejabberdctl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def unusable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    if find_ejabberdctl() is None:
        return "ejabberd is not installed (apt-get install ejabberd; ./scripts/test installs it as root)"
    try:
        pwd.getpwnam(EJABBERD_USER)
    except KeyError:
        return f"no '{EJABBERD_USER}' user (the Debian package creates it)"
    if os.geteuid() != 0:
        return "ejabberdctl runs nodes as the ejabberd user: the cluster fixture needs root"
    return None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    # The VM is not our child (ejabberdctl detaches it): a killed one may linger as a zombie.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_YML = """\
hosts: ["localhost"]
loglevel: info
auth_method: [anonymous]
anonymous_protocol: login_anon
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: mod_mqtt
    backlog: 1024
modules:
  mod_mqtt:
    session_expiry: 86400
    max_queue: unlimited
"""

_CTL_CFG = """\
ERLANG_NODE={node}
ERL_OPTIONS="-setcookie {cookie} -env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_CONFIG_PATH={dir}/conf/ejabberd.yml
EJABBERD_PID_PATH={dir}/ejabberd.pid
SPOOL_DIR={dir}/spool
LOGS_DIR={dir}/logs
CONTRIB_MODULES_CONF_DIR={dir}/conf/modules.d
"""


@dataclass
class EjabberdNode:
    name: str  # Erlang node name, e.g. iomt-1234-a@localhost
    port: int  # MQTT listener on 127.0.0.1
    directory: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def config_dir(self) -> Path:
        return self.directory / "conf"

    def pid(self) -> int | None:
        try:
            return int((self.directory / "ejabberd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)

    def log_text(self) -> str:
        try:
            return (self.directory / "logs" / "ejabberd.log").read_text(errors="replace")
        except OSError:
            return ""


class EjabberdCluster:
    def __init__(self, *, nodes: int = 2, executable: str | None = None) -> None:
        exe = executable or find_ejabberdctl()
        if exe is None:
            raise FileNotFoundError("ejabberd is not installed (apt-get install ejabberd)")
        self.executable = exe
        self.root = Path(tempfile.mkdtemp(prefix="iomt-ejabberd-"))
        tag = f"iomt{os.getpid()}x{time.monotonic_ns() % 100_000}"
        self.cookie = f"{tag}cookie"
        self.nodes = [
            EjabberdNode(f"{tag}{chr(ord('a') + i)}@localhost", free_port(), self.root / chr(ord("a") + i))
            for i in range(nodes)
        ]
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._write_files()

    def _write_files(self) -> None:
        for node in self.nodes:
            for sub in ("conf/modules.d", "spool", "logs"):
                (node.directory / sub).mkdir(parents=True, exist_ok=True)
            (node.config_dir / "ejabberd.yml").write_text(_YML.format(port=node.port))
            (node.config_dir / "ejabberdctl.cfg").write_text(
                _CTL_CFG.format(node=node.name, cookie=self.cookie, dir=node.directory)
            )
            (node.config_dir / "inetrc").write_text("")
        user = pwd.getpwnam(EJABBERD_USER)
        os.chmod(self.root, 0o755)
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                os.chown(name, user.pw_uid, user.pw_gid)

    def _ctl(self, node: EjabberdNode, *args: str, timeout: float = 60.0) -> str:
        proc = subprocess.run(
            [self.executable, "--config-dir", str(node.config_dir), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"ejabberdctl {' '.join(args)} on {node.name} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n{node.log_text()[-3000:]}"
            )
        return proc.stdout

    def _launch(self, node: EjabberdNode) -> None:
        (node.directory / "ejabberd.pid").unlink(missing_ok=True)
        # ``foreground`` keeps the VM in our process tree: when a killed VM's parent (su) reaps
        # it and exits, we reap that one; a detached VM would stay a zombie under a container's
        # init that reaps nothing.
        log = (node.directory / "console.log").open("ab")
        try:
            self._procs[node.name] = subprocess.Popen(
                [self.executable, "--config-dir", str(node.config_dir), "foreground"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def _wait_listening(self, node: EjabberdNode, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not (_port_open(node.port) and node.running):
            proc = self._procs.get(node.name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"ejabberd node {node.name} exited ({proc.returncode}):\n{node.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ejabberd node {node.name} not on port {node.port}:\n{node.log_text()[-3000:]}")
            time.sleep(0.05)

    def start(self) -> None:
        """Start every node, join them into one cluster and wait for every MQTT listener."""
        for node in self.nodes:
            self._launch(node)  # detached: the nodes boot in parallel
        for node in self.nodes:
            self._wait_listening(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            # Restarts the joining node's ejabberd application, listeners included.
            self._ctl(node, "join_cluster", first.name)
        for node in self.nodes:
            self._wait_listening(node)

    def start_node(self, node: EjabberdNode) -> None:
        """Bring a stopped or killed node back; it rejoins the cluster from its Mnesia files."""
        if node.running:
            return
        self._launch(node)
        self._wait_listening(node)

    def heal(self) -> None:
        for node in self.nodes:
            self.start_node(node)

    def kill9(self, node: EjabberdNode) -> None:
        """``kill -9`` of the node's VM: its clients' connections drop with no DISCONNECT."""
        pid = node.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc = self._procs.pop(node.name, None)
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Kill every node (their state is throw-away) and remove the cluster's directory
        (unless ``IOMT_KEEP_EJABBERD=1``)."""
        for node in self.nodes:
            self.kill9(node)
        if os.environ.get("IOMT_KEEP_EJABBERD") != "1":  # keep the nodes' logs to debug a failure
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EjabberdCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
