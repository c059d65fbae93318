"""Serial decoder throughput and the CPU cost of live Nonin #2 devices.

    uv run python bench/serial_decoders.py [--seconds 20] [--devices 4]

1. Bytes/s each protocol's decoder sustains on one core (decode only, and decode + translation to
   readings), on a simulated stream with 1 % of its frames damaged.
2. CPU % of this process while ``--devices`` Nonin #2 oximeters stream at their real rate (one
   5-byte frame every 1/75 s each) through pseudo-terminals into the real ``SerialDriver``.  The
   devices are simulated by a separate feeder process, so only the gateway side is measured.
3. With ``--daemon``: the same devices read by the whole daemon (``iomt-gateway run``: supervisor,
   pipeline, SQLite outbox, MQTT uplink to a private Mosquitto), its CPU % read from /proc.
4. Vitals fabricated from noise: seeded random bytes through each protocol's decoder and
   translator; frames and vitals with a value per MB (a trustworthy decoder makes none).
   ``--noise-only [--noise-mb N]`` prints just this table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tty
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import structlog  # noqa: E402

from drivers.serial import simulate  # noqa: E402
from drivers.serial.driver import SerialDriver  # noqa: E402
from drivers.serial.framing import Dropped  # noqa: E402
from drivers.serial.protocols import PROTOCOLS  # noqa: E402
from drivers.serial.settings import Nonin2Settings  # noqa: E402
from gateway import keyring  # noqa: E402
from gateway.clock import SyncPolicy, SystemClock  # noqa: E402
from gateway.driver_api import DeviceContext, DriverDisconnected  # noqa: E402
from gateway.records import ClockQuality, VitalReading  # noqa: E402


def test_stream(protocol: str, seconds: int) -> bytes:
    course = simulate.course(seconds, seed=1)
    if protocol in ("nonin2", "nonin7"):
        data = simulate.nonin75_stream(course, fmt=int(protocol[-1]))
    elif protocol == "nonin8":
        data = simulate.nonin8_stream(course * 75)
    elif protocol == "contec":
        data = simulate.contec_stream(course)
    elif protocol == "masimo":
        data = simulate.masimo_stream(course * 4, datetime(2026, 3, 1))
    else:
        rng = np.random.default_rng(1)
        counts = rng.integers(-2000, 2000, size=seconds * 500)
        data = b"".join(simulate.ecg_frames(counts, 500, 1000, per_frame=25))
    # Damage about 1 % of the stream with single-byte flips so the resync paths are exercised.
    rnd = random.Random(0)
    buf = bytearray(data)
    for _ in range(len(buf) // 500):
        buf[rnd.randrange(len(buf))] ^= 0x5A
    return bytes(buf)


def throughput(protocol: str, data: bytes, translate: bool, chunk: int = 4096) -> float:
    info = PROTOCOLS[protocol]
    best = 0.0
    for _ in range(3):
        dec = info.make_decoder()
        tr = info.make_translator("bench")
        t0 = time.process_time()
        for i in range(0, len(data), chunk):
            items = dec.feed(data[i : i + chunk])
            if translate:
                tr.translate(items, 1.0, ClockQuality.SYNCED)
        dt = time.process_time() - t0
        best = max(best, len(data) / dt)
    return best


def noise_vitals(protocol: str, mb: float, seed: int = 1, chunk: int = 4096) -> tuple[float, float]:
    """(frames, vitals with a value) per MB of uniformly random bytes."""
    data = np.random.default_rng(seed).bytes(int(mb * 1_000_000))
    info = PROTOCOLS[protocol]
    dec = info.make_decoder()
    tr = info.make_translator("noise")
    frames = vitals = 0
    for i in range(0, len(data), chunk):
        items = dec.feed(data[i : i + chunk])
        frames += sum(1 for it in items if not isinstance(it, Dropped))
        readings = tr.translate(items, 1.0, ClockQuality.SYNCED)
        vitals += sum(1 for r in readings if isinstance(r, VitalReading) and r.value is not None)
    return frames / mb, vitals / mb


def print_noise(mb: float) -> None:
    print(f"\n{mb:g} MB of random bytes (seed 1) per protocol: what comes out, per MB")
    print(f"{'protocol':<10} {'frames/MB':>10} {'vitals/MB':>10}")
    for name in PROTOCOLS:
        frames, vitals = noise_vitals(name, mb)
        print(f"{name:<10} {frames:>10,.1f} {vitals:>10,.1f}")


def feeder(devices: int, seconds: float) -> None:
    """Child process: open ptys, print their slave paths, then send Nonin #2 frames at 75/s per device."""
    data = simulate.nonin75_stream(simulate.course(int(seconds) + 5, seed=2), fmt=2)
    masters = []
    for _ in range(devices):
        m, s = os.openpty()
        tty.setraw(s)
        masters.append((m, s))
        print(os.ttyname(s), flush=True)
    sys.stdin.readline()  # the gateway side has opened every port
    period = 1 / 75
    t0 = time.monotonic()
    k = 0
    while k * 5 < len(data) and time.monotonic() - t0 < seconds:
        frame = data[k * 5 : k * 5 + 5]
        for m, _ in masters:
            os.write(m, frame)
        k += 1
        delay = t0 + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for m, s in masters:
        os.close(m)
        os.close(s)


async def live_cpu(proc: subprocess.Popen[str], paths: list[str]) -> tuple[float, int, int]:
    assert proc.stdin is not None
    devices = len(paths)
    clock = SystemClock(SyncPolicy.ASSUME_SYNCED)
    drivers = [
        SerialDriver(DeviceContext(f"ox-{k}", "p", clock, Path("/tmp")), Nonin2Settings(id=f"ox-{k}", port=p))
        for k, p in enumerate(paths)
    ]
    for d in drivers:
        await d.connect()
    counts = [0] * devices

    async def consume(k: int) -> None:
        try:
            async for _ in drivers[k].readings():
                counts[k] += 1
        except DriverDisconnected:
            pass

    proc.stdin.write("go\n")
    proc.stdin.flush()
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(consume(k) for k in range(devices)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for d in drivers:
        await d.close()
    frames = sum(d.stats.frames for d in drivers)
    return 100.0 * cpu / wall, frames, sum(counts)


def spawn_feeder(devices: int, seconds: float) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--feeder", str(devices), "--seconds", str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, [proc.stdout.readline().strip() for _ in range(devices)]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def daemon_cpu(devices: int, seconds: float, warmup_s: float = 5.0) -> float:
    """CPU % of one core used by ``iomt-gateway run`` reading ``devices`` live Nonin #2 devices."""
    sys.path.insert(0, str(ROOT / "tests"))
    from broker import MosquittoBroker  # noqa: PLC0415 - test helper, only for this measurement

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(work / "mqtt")
        broker.start()
        feeder_proc, paths = spawn_feeder(devices, seconds + warmup_s + 5)
        patients = "".join(
            f"  - id: p-{k}\n    devices:\n      - {{id: ox-{k}, driver: nonin2, port: {p}}}\n"
            for k, p in enumerate(paths)
        )
        cfg = work / "gateway.yaml"
        keyring.init(work / "keyring")  # as the install script's `keys init` would
        cfg.write_text(
            "gateway: {id: bench}\nclock: {sync: assume_synced}\n"
            f"upstream: {{url: '{broker.url}'}}\n"
            f"storage: {{path: '{work / 'state'}', keyring: '{work / 'keyring'}'}}\n"
            f"logging: {{level: info, format: json}}\npatients:\n{patients}"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        with (work / "daemon.log").open("wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg)], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        try:
            time.sleep(2.0)  # let the daemon open its ports before the devices start talking
            assert feeder_proc.stdin is not None
            feeder_proc.stdin.write("go\n")
            feeder_proc.stdin.flush()
            time.sleep(warmup_s)
            if daemon.poll() is not None:
                raise RuntimeError((work / "daemon.log").read_text()[-2000:])
            t0, c0 = time.monotonic(), _cpu_ticks(daemon.pid)
            time.sleep(seconds)
            t1, c1 = time.monotonic(), _cpu_ticks(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(10)
            feeder_proc.kill()
            feeder_proc.wait()
            broker.stop()
        log_text = (work / "daemon.log").read_text()
        # A figure is only meaningful if every device stayed connected for the whole run.
        if log_text.count('"device_connected"') != devices or '"device_disconnected"' in log_text:
            raise RuntimeError("a device session failed during the run:\n" + log_text[-3000:])
        return 100.0 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the live run")
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--daemon", action="store_true", help="also measure the whole daemon (needs mosquitto)")
    ap.add_argument("--noise-mb", type=float, default=8.0, help="random bytes fed to each decoder (section 4)")
    ap.add_argument("--noise-only", action="store_true", help="only section 4")
    ap.add_argument("--feeder", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.feeder:
        feeder(args.feeder, args.seconds)
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.noise_only:
        print_noise(args.noise_mb)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; one core per figure")
    print(f"{'protocol':<10} {'stream':>9} {'decode B/s':>12} {'+readings B/s':>14} {'x real time':>12}")
    for name in PROTOCOLS:
        data = test_stream(name, 600)
        dec = throughput(name, data, translate=False)
        full = throughput(name, data, translate=True)
        real_rate = len(data) / (600 * (4 if name == "masimo" else 75 if name == "nonin8" else 1))
        print(f"{name:<10} {len(data):>9} {dec:>12,.0f} {full:>14,.0f} {full / real_rate:>12,.0f}")
    proc, paths = spawn_feeder(args.devices, args.seconds)
    cpu, frames, readings = asyncio.run(live_cpu(proc, paths))
    proc.wait()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"\n{args.devices} Nonin #2 devices at 75 frames/s through ptys for {args.seconds:g} s: "
        f"{cpu:.1f} % of one core ({frames} frames, {readings} readings; max RSS {ru.ru_maxrss / 1024:.0f} MiB)"
    )

    if args.daemon:
        pct = daemon_cpu(args.devices, args.seconds)
        print(
            f"the whole daemon (pipeline, outbox, uplink to Mosquitto) with the same devices: {pct:.1f} % of one core"
        )
    print_noise(args.noise_mb)


if __name__ == "__main__":
    main()
