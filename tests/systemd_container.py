"""A real systemd (Debian 12, systemd 252) booted as PID 1 of a systemd-nspawn container.

How, and why these flags, is measured in ../shared/reference/systemd-in-ci.md: a minimal root file
system made with mmdebstrap from the host's own apt mirror (cached between runs on one machine,
rebuilt on a fresh one), ``--register=no --keep-unit`` (no machined on the host), driven from the
test with ``nsenter`` into the container's namespaces.  ``--private-network`` keeps the container's
Mosquitto on its own loopback.  ``--system-call-filter=@clock`` lifts nspawn's own filter of the
@clock calls, so what reaches a service is what *its unit* allows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "procps", "mosquitto", "mosquitto-clients", "sqlite3"]
CACHE = Path(os.environ.get("IOMT_CI_CACHE", "/var/cache/iomt-gateway-ci"))
SUITE = "bookworm"


class ContainerUnavailable(Exception):
    """This machine cannot boot the container (not root, no systemd-nspawn or mmdebstrap)."""


def _mirrors() -> list[str]:
    """The host's Debian mirrors (so the build goes through the configured registry)."""
    uris: list[str] = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            for raw in f.read_text().splitlines():
                line = raw.strip()
                if line.startswith("URIs:"):  # deb822 .sources
                    uris += line.split()[1:]
                elif line.startswith("deb "):
                    uris += [w for w in line.split()[1:] if "://" in w][:1]
    base = next((u for u in uris if u.rstrip("/").endswith("/debian")), "http://deb.debian.org/debian")
    security = next((u for u in uris if u.rstrip("/").endswith("/debian-security")), "http://deb.debian.org/debian-security")
    return [f"deb {base} {SUITE} main", f"deb {security} {SUITE}-security main"]


def check_host() -> None:
    if os.geteuid() != 0:
        raise ContainerUnavailable("booting systemd in a container needs root")
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter"):
        if shutil.which(tool) is None:
            raise ContainerUnavailable(f"{tool} not found (apt-get install systemd-container mmdebstrap)")


def ensure_rootfs() -> Path:
    """The cached root file system, built once per machine and package list (about 1 min, 260 MB)."""
    check_host()
    mirrors = _mirrors()
    key = hashlib.sha256("\n".join([SUITE, *PACKAGES, *mirrors]).encode()).hexdigest()[:12]
    target = CACHE / f"rootfs-{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs on one machine build it once
        if (target / "usr/lib/systemd/systemd").exists():
            return target
        tmp = CACHE / f".building-{key}"
        # One retry: a fresh machine downloads ~130 packages from the mirror, and one dropped
        # connection should not fail the suite. A failed attempt's half-built tree (up to 250 MB) is
        # removed at once, not left to fill the disk under the tests that follow.
        errors = []
        for _attempt in range(2):
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                done = subprocess.run(
                    ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                     str(tmp), *mirrors],
                    capture_output=True, text=True, check=False, timeout=900,
                )
            except subprocess.TimeoutExpired:
                errors.append("mmdebstrap did not finish within 900 s")
                continue
            if done.returncode == 0:
                tmp.rename(target)
                return target
            errors.append(f"mmdebstrap exited {done.returncode}: {done.stderr[-2000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(CACHE).free / 1e6
        raise AssertionError(f"could not build the container's root file system ({free:.0f} MB free in {CACHE}):\n"
                             + "\n".join(errors))
    return target


def _cleanup_cgroups() -> None:
    # Empty cgroups an exited nspawn may leave behind; the next boot fails on them otherwise.
    for top in (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        for name in ("payload", "supervisor"):
            d = top / name
            if not d.is_dir():
                continue
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()


class Container:
    """One booted container on a private copy of the cached root file system."""

    def __init__(self, base: Path, workdir: Path) -> None:
        # The cached tree is booted read-only under a tmpfs overlay (--volatile=overlay): whatever the
        # tests install or write lives in memory and goes with the container, the cache stays pristine,
        # and no 250 MB copy is made on the disk the rest of the suite needs.
        self.root = base
        self.log_path = workdir / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None

    def boot(self, timeout: float = 60.0) -> None:
        _cleanup_cgroups()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
             "--console=pipe", "--volatile=overlay", "--private-network", "--system-call-filter=@clock"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while self.pid1 is None:
            self.pid1 = self._find_pid1()
            if self.pid1 is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"container did not start:\n{self.log_path.read_text(errors='replace')}")
                time.sleep(0.05)
        while True:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                jobs = self.run(["systemctl", "list-jobs", "--no-pager"], check=False).stdout
                raise AssertionError(f"container's systemd is {state!r} after {timeout} s; pending jobs:\n{jobs}\n"
                                     f"{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def _find_pid1(self) -> int | None:
        assert self.proc is not None
        todo, seen = [self.proc.pid], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
            if pid != self.proc.pid and nspid and nspid.group(1).split()[-1] == "1":
                return pid
            todo.extend(int(c) for c in children)
        return None

    def run(self, cmd: list[str], *, check: bool = True, timeout: float = 120.0,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (its mount, UTS, IPC, network, PID and cgroup namespaces)."""
        assert self.pid1 is not None
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-C", "--", *cmd],
            capture_output=True, text=True, timeout=timeout, input=input_text, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def put(self, inside: str, data: bytes | str, mode: int = 0o644) -> None:
        assert self.pid1 is not None
        path = Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")  # the container's view, overlay included
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.chmod(mode)

    def shutdown(self) -> None:
        """Power off, or kill: nothing of the container may outlive the tests that used it (a
        leftover systemd would keep the gateway and its broker running beside the rest of the suite)."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid1 is not None:
            with contextlib.suppress(Exception):
                self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            # SIGKILL to the container's PID 1 ends its whole PID namespace; nspawn then exits.
            if self.pid1 is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid1, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        _cleanup_cgroups()


@contextlib.contextmanager
def booted(base: Path, workdir: Path) -> Iterator[Container]:
    """One container at a time per machine: without machined, every nspawn with --keep-unit puts its
    payload in the same cgroup (``payload/``), so two test runs at once would share one."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "boot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        c = Container(base, workdir)
        try:
            c.boot()
            yield c
        finally:
            c.shutdown()
