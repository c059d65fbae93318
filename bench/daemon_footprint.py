"""Daemon footprint: time to READY=1, resident memory while running the demo load, import costs.

Usage: uv run python bench/daemon_footprint.py [--seconds 30] [--load demo hub] [--bytecode installed|none]

Starts `iomt-gateway run` on config/demo.yaml (with a private Mosquitto when installed) as systemd
would — with a NOTIFY_SOCKET — once per load (``--load``), and reports side by side:
  * start → READY=1 (target ≤ 1.5 s), measured from process spawn;
  * RSS (VmRSS) at READY=1 and after --seconds of the replayed devices (target ≤ 80 MB), split into
    anonymous and file-backed pages, and the peak (VmHWM): the demo's load (``demo``: its five
    devices, two oximeters and three ECG streams over three patients) and a fuller hub (``hub``:
    the demo plus two patients with an oximeter each, one with a blood-pressure cuff and one with
    a scale: nine devices) — all replayed at real time;
  * CPU used over that time, as a share of one core;
  * what each heavy import costs on its own, in a fresh interpreter (RSS delta and wall time).

Memory depends on whether the modules have compiled bytecode: compiling ~600 modules from source
at every start leaves ~10 MB of compiler garbage in the heap (most of it returned since
gateway/heap_trim.py).  ``--bytecode installed`` (the default) first byte-compiles the repository
and the environment's site-packages, as scripts/build-deb and the package's postinst do;
``--bytecode none`` makes the daemon compile everything from source, as a checkout run with
PYTHONDONTWRITEBYTECODE=1 and no .pyc files does.

Memory figures are stable on a loaded machine; CPU figures are not (a shared CI runner or
developer machine steals and throttles cycles): compare CPU only between runs on an idle host.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import keyring  # noqa: E402
from gateway.local_broker import LocalBroker, find_mosquitto  # noqa: E402

LOADS = ("demo", "hub")  # config/demo.yaml as it is; the same with two more patients (``fuller_hub``)

IMPORTS = [
    "pydantic",
    "structlog",
    "yaml",
    "tenacity",
    "aiomqtt",
    "numpy",
    "scipy.signal",
    "serial",
    "bleak",
    "gateway.config.loader",
    "gateway.daemon",
]


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0])  # kB
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _last_status(sock: socket.socket) -> str:
    """The newest STATUS= the daemon sent (it sends one every 10 s): shows every device was up."""
    sock.setblocking(False)
    last = "(none)"
    while True:
        try:
            msg = sock.recv(4096).decode()
        except BlockingIOError:
            return last
        for line in msg.split("\n"):
            if line.startswith("STATUS="):
                last = line.removeprefix("STATUS=")


def import_cost(module: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds, MB of VmRSS) that importing ``module`` adds to a fresh interpreter.  VmRSS, not
    ru_maxrss: the peak survives exec, so a child forked from this script would start at our size."""
    code = (
        "import time\n"
        "def rss():\n"
        "    return next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmRSS:'))\n"
        "r0 = rss(); t = time.perf_counter()\n"
        f"import {module}\n"
        "print(time.perf_counter() - t, (rss() - r0) / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    dt, mb = out.stdout.split()
    return float(dt), float(mb)


def _spot_checks(path: Path, every_s: float, values: list[tuple[str, float]], span_s: float = 3600.0) -> str:
    """A recording of spot checks (a cuff or a scale): ``values`` every ``every_s`` seconds."""
    lines = [
        json.dumps({"t": k * every_s + j * 0.5, "vital": vital, "value": value})
        for k in range(int(span_s / every_s))
        for j, (vital, value) in enumerate(values)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def fuller_hub(cfg: dict[str, Any], tmp: Path) -> None:
    """The demo's patients plus two more with an oximeter each (replaying the demo's first two
    oximeters' recordings), one of them also with a BP cuff (a reading every 30 s) and the other
    with a scale (every 60 s)."""
    oximeters = [d["vitals"] for p in cfg["patients"] for d in p["devices"] if "vitals" in d]
    if len(oximeters) < 2:
        raise SystemExit("config/demo.yaml has fewer than two oximeter recordings to replay for the fuller hub")
    a, b = oximeters[:2]
    bp = [("systolic_bp", 128.0), ("diastolic_bp", 82.0), ("pulse_rate", 71.0)]
    cuff = _spot_checks(tmp / "cuff.jsonl", 30.0, bp)
    scale = _spot_checks(tmp / "scale.jsonl", 60.0, [("body_weight", 81.5)])
    cfg["patients"] += [
        {"id": "p-3b90", "devices": [
            {"id": "ox-3b90", "driver": "replay", "vitals": a, "loop": True},
            {"id": "bp-3b90", "driver": "replay", "vitals": cuff, "loop": True},
        ]},
        {"id": "p-88d4", "devices": [
            {"id": "ox-88d4", "driver": "replay", "vitals": b, "loop": True},
            {"id": "scale-88d4", "driver": "replay", "vitals": scale, "loop": True},
        ]},
    ]  # fmt: skip


def byte_compile() -> float:
    """Compile what the daemon can import, as the package does at install; seconds it took."""
    paths = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", str(ROOT / "gateway"), str(ROOT / "drivers"), *paths],
        stdout=subprocess.DEVNULL,
        check=False,  # a file that does not compile (a test fixture of some package) is not ours
    )
    return time.perf_counter() - t


def daemon_env(bytecode: str, tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    if bytecode == "none":
        # An empty cache prefix hides every __pycache__ (the standard library's too): each module is
        # compiled from source at import, and nothing is written.
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "no-bytecode")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Run:
    devices: int
    ready_s: float
    at_ready: dict[str, int]  # kB, from /proc/PID/status
    after: dict[str, int]
    cpu_share: float  # of one core
    status: str


def daemon_config(load: str, tmp: Path, url: str) -> dict[str, Any]:
    """config/demo.yaml made to run from ``tmp`` against the broker at ``url``: the recordings'
    paths made absolute, the state and a new keyring (as the install's ``keys init`` makes it)
    in ``tmp``; for ``load`` "hub", with the fuller hub's two more patients."""
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    cfg["upstream"]["url"] = url
    cfg["storage"]["path"] = str(tmp / "state")
    keyring.init(tmp / "keyring")
    cfg["storage"]["keyring"] = str(tmp / "keyring")
    for p in cfg["patients"]:
        for d in p["devices"]:
            for k in ("vitals", "ecg"):
                if k in d:
                    d[k] = str((ROOT / "config" / d[k]).resolve())
    if load == "hub":
        fuller_hub(cfg, tmp)
    return cfg


def run_daemon(load: str, seconds: float, env: dict[str, str]) -> Run:
    tmp = Path(tempfile.mkdtemp(prefix="iomt-bench-"))
    broker = None
    exe = find_mosquitto()
    if exe:
        broker = LocalBroker(exe, tmp / "broker")
        broker.start()
    cfg = daemon_config(load, tmp, broker.url if broker else "mqtt://127.0.0.1:9")
    cfg_path = tmp / "gateway.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    sock_path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)  # a loaded machine can take a while to import everything
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg_path)],
        cwd=ROOT,
        env={**env, "NOTIFY_SOCKET": str(sock_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready_s = None
    try:
        while ready_s is None:
            msg = sock.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                ready_s = time.perf_counter() - t0
        at_ready = _status(proc.pid)
        cpu0 = _cpu_s(proc.pid)
        time.sleep(seconds)
        after = _status(proc.pid)
        cpu = _cpu_s(proc.pid) - cpu0
        status = _last_status(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if broker:
            broker.stop()
    n_devices = sum(len(p["devices"]) for p in cfg["patients"])
    return Run(n_devices, ready_s, at_ready, after, cpu / seconds, status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--load", nargs="+", choices=LOADS, default=list(LOADS), help="the demo's devices, a fuller hub")
    ap.add_argument("--bytecode", choices=("installed", "none"), default="installed")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="iomt-bench-"))
    if args.bytecode == "installed":
        took = byte_compile()
        print(f"bytecode: compiled beforehand, as the package installs it ({took:.1f} s to bring it up to date)")
    else:
        print("bytecode: none, every module compiled from source at start (PYTHONDONTWRITEBYTECODE=1, no .pyc)")
    env = daemon_env(args.bytecode, tmp)
    runs = [run_daemon(load, args.seconds, env) for load in args.load]

    def mb(kb: int) -> str:
        return f"{kb / 1024:>9.1f} MB"

    def row(label: str, cells: list[str], target: str = "") -> None:
        print(f"{label:<36}" + "".join(f"{c:>14}" for c in cells) + f"   {target}")

    row("measure", [f"{r.devices} devices" for r in runs], "target")
    row("start -> READY=1", [f"{r.ready_s:>10.2f} s" for r in runs], "<= 1.5 s")
    row("RSS at READY=1", [mb(r.at_ready["VmRSS"]) for r in runs])
    row(f"RSS after {args.seconds:g} s", [mb(r.after["VmRSS"]) for r in runs], "<= 80 MB")
    # File-backed pages are the shared libraries' code (numpy's OpenBLAS, cryptography's Rust core):
    # shared with any other Python on the hub and reclaimable under pressure; anonymous pages are ours.
    row("  of which anonymous (RssAnon)", [mb(r.after.get("RssAnon", 0)) for r in runs])
    row("  of which file-backed (RssFile)", [mb(r.after.get("RssFile", 0)) for r in runs])
    row("peak RSS (VmHWM)", [mb(r.after["VmHWM"]) for r in runs])
    row("CPU while running, one core", [f"{100 * r.cpu_share:>10.1f} %" for r in runs], "(varies with machine load)")
    for r in runs:
        print(f"last STATUS= from the daemon, {r.devices} devices: {r.status}")
    print()
    print(f"{'import (fresh interpreter)':<30}{'wall s':>8}{'RSS MB':>9}")
    for m in IMPORTS:
        try:
            dt, mbs = import_cost(m, env)
        except subprocess.CalledProcessError:
            print(f"{m:<30}{'(not importable)':>17}")
            continue
        print(f"{m:<30}{dt:>8.3f}{mbs:>9.1f}")


if __name__ == "__main__":
    main()
