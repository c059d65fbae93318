"""Daemon footprint: time to READY=1, resident memory while running the demo load, import costs.

Usage: uv run python bench/daemon_footprint.py [--seconds 20] [--devices 4|8]

Starts `iomt-gateway run` on config/demo.yaml (with a private Mosquitto when installed) as systemd
would — with a NOTIFY_SOCKET — and reports:
  * start → READY=1 (target ≤ 1.5 s), measured from process spawn;
  * RSS (VmRSS) and peak RSS (VmHWM) after --seconds of the replayed devices (target ≤ 80 MB): the
    demo's four (two oximeters, two ECG streams), or with ``--devices 8`` a fuller hub — 2 ECG
    streams, 4 oximeters, a blood-pressure cuff and a scale over four patients — all replayed at
    real time;
  * CPU seconds used over that time;
  * what each heavy import costs on its own, in a fresh interpreter (RSS delta and wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import keyring  # noqa: E402
from gateway.local_broker import LocalBroker, find_mosquitto  # noqa: E402

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


def import_cost(module: str) -> tuple[float, float]:
    code = (
        "import time,resource,sys;"
        "r0=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;t=time.perf_counter();"
        f"import {module};"
        "dt=time.perf_counter()-t;r1=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "print(dt, (r1-r0)/1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
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


def eight_devices(cfg: dict[str, Any], tmp: Path) -> None:
    """The demo's two patients (oximeter + ECG each) plus two more with an oximeter each, one of
    them also with a BP cuff (a reading every 30 s) and the other with a scale (every 60 s)."""
    vitals = {p["id"]: next(d["vitals"] for d in p["devices"] if "vitals" in d) for p in cfg["patients"]}
    a, b = list(vitals.values())
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--devices", type=int, choices=(4, 8), default=4)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="iomt-bench-"))
    cfg = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    broker = None
    exe = find_mosquitto()
    if exe:
        broker = LocalBroker(exe, tmp / "broker")
        broker.start()
        cfg["upstream"]["url"] = broker.url
    else:
        cfg["upstream"]["url"] = "mqtt://127.0.0.1:9"
    cfg["storage"]["path"] = str(tmp / "state")
    keyring.init(tmp / "keyring")  # as the install script's `keys init` would
    cfg["storage"]["keyring"] = str(tmp / "keyring")
    for p in cfg["patients"]:
        for d in p["devices"]:
            for k in ("vitals", "ecg"):
                if k in d:
                    d[k] = str((ROOT / "config" / d[k]).resolve())
    if args.devices == 8:
        eight_devices(cfg, tmp)
    n_devices = sum(len(p["devices"]) for p in cfg["patients"])
    cfg_path = tmp / "gateway.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    sock_path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)  # a loaded machine can take a while to import everything
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ready_s = None
    try:
        while ready_s is None:
            msg = sock.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                ready_s = time.perf_counter() - t0
        cpu0 = _cpu_s(proc.pid)
        time.sleep(args.seconds)
        st = _status(proc.pid)
        cpu = _cpu_s(proc.pid) - cpu0
        status = _last_status(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if broker:
            broker.stop()
    print(f"{'measure':<44}{'value':>12}   target")
    print(f"{'start -> READY=1':<44}{ready_s:>10.2f} s   <= 1.5 s")
    label = f"RSS after {args.seconds:g} s, {n_devices} devices"
    print(f"{label:<44}{st['VmRSS'] / 1024:>9.1f} MB   <= 80 MB")
    print(f"{'peak RSS (VmHWM)':<44}{st['VmHWM'] / 1024:>9.1f} MB")
    # File-backed pages are the shared libraries' code (numpy's OpenBLAS, cryptography's Rust core):
    # shared with any other Python on the hub and reclaimable under pressure; anonymous pages are ours.
    print(f"{'  of which anonymous (RssAnon)':<44}{st.get('RssAnon', 0) / 1024:>9.1f} MB")
    print(f"{'  of which file-backed (RssFile)':<44}{st.get('RssFile', 0) / 1024:>9.1f} MB")
    print(f"{'CPU while running':<44}{100 * cpu / args.seconds:>10.1f} %   of one core")
    print(f"last STATUS= from the daemon: {status}")
    print()
    print(f"{'import (fresh interpreter)':<30}{'wall s':>8}{'RSS MB':>9}")
    for m in IMPORTS:
        try:
            dt, mb = import_cost(m)
        except subprocess.CalledProcessError:
            print(f"{m:<30}{'(not importable)':>17}")
            continue
        print(f"{m:<30}{dt:>8.3f}{mb:>9.1f}")


if __name__ == "__main__":
    main()
