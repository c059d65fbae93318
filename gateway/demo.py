"""``iomt-gateway demo``: the real daemon on the recorded fixtures, with a live view.

Three patients' recordings (pulse oximetry with a desaturation, a sensor-off spell, a fever; MIT-BIH
ECG; a bedside ECG with ventricular fibrillation, then asystole) are replayed at N× speed through
the real drivers, pipeline, outbox and uplink.  A private Mosquitto is started on a free port when
the binary is installed; without it the demo runs offline and shows the outbox filling.  Ctrl-C
ends it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path

import yaml

from gateway import keyring, logs
from gateway.config.loader import ConfigError, load_config
from gateway.config.models import ConfigBase
from gateway.local_broker import LocalBroker, find_mosquitto
from gateway.share import demo_config
from gateway.status_view import LiveView, format_outbox

DEMO_CONFIG = demo_config()


def _effective_config(cfg: ConfigBase, state: Path, url: str, speed: float, keyring_file: Path) -> Path:
    """The demo's config as a file in its state folder: the broker it started, its state and key,
    the replay speed, and every file a device reads (each ``Path`` field of its validated settings)
    made absolute, since the file no longer sits beside them.  The daemon reads it (and re-reads
    it on SIGHUP), and ``iomt-gateway evidence -c`` finds the demo's strips through it."""
    doc = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    base = DEMO_CONFIG.parent
    doc["upstream"] = {**doc.get("upstream", {}), "url": url, "backoff_max_s": 5.0}
    # the demo's own key, in its state folder (a real hub's comes from `iomt-gateway keys init`)
    doc["storage"] = {**doc.get("storage", {}), "path": str(state / "gateway"), "keyring": str(keyring_file)}
    for patient, model in zip(doc["patients"], cfg.patients, strict=True):
        for device, settings in zip(patient["devices"], model.devices, strict=True):
            device["speed"] = speed
            for name, value in settings:
                if isinstance(value, Path):
                    device[name] = str((base / value).resolve())
    path = state / "demo-config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run_demo(*, duration: float | None, speed: float, offline: bool, state: Path | None) -> int:
    logs.configure("warning", "console")
    try:
        demo_cfg = load_config(DEMO_CONFIG)
    except ConfigError as e:
        print(e.render())
        return 2
    kept = state is not None
    tmp = None
    if state is None:
        tmp = Path(tempfile.mkdtemp(prefix="iomt-demo-"))
        state = tmp
    state.mkdir(parents=True, exist_ok=True)
    broker = None
    binary = None if offline else find_mosquitto()
    if binary is not None:
        broker = LocalBroker(binary, state / "broker")
        broker.start()
        print(f"Started a private Mosquitto at {broker.url} (state in {state})")
    elif not offline:
        print("Mosquitto is not installed: running offline — watch the outbox fill (apt-get install mosquitto).")
    keyring_file = state / "keyring"
    keyring.init(keyring_file)
    url = broker.url if broker else "mqtt://127.0.0.1:9"  # nothing listens on the discard port
    try:
        config_path = _effective_config(demo_cfg, state, url, speed, keyring_file)
        cfg = load_config(config_path)
        print(
            f"Replaying {sum(len(p.devices) for p in cfg.patients)} devices of {len(cfg.patients)} patients at "
            f"{speed:g}x real time. Ctrl-C to stop.\n"
        )
        view = asyncio.run(_demo(config_path, cfg, duration))
    except ConfigError as e:
        print(e.render())
        return 2
    finally:
        if broker is not None:
            broker.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if view.strips:
        if kept:
            print(
                f"  evidence strips: {view.strips}; list them with `iomt-gateway evidence --list -c {config_path}`,"
                f" draw one with `iomt-gateway evidence ALARM_ID -c {config_path}` (needs the plots extra)"
            )
        else:
            print(f"  evidence strips: {view.strips} (run the demo with --state DIR to keep them and draw them)")
    return 0


async def _demo(config_path: Path, cfg: ConfigBase, duration: float | None) -> LiveView:
    from gateway.daemon import Daemon  # noqa: PLC0415

    view = LiveView()
    daemon = Daemon(config_path, cfg, observer=view.observe, own_process=True)

    async def screen() -> None:
        while True:
            await asyncio.sleep(0.5)
            if daemon.outbox is not None and daemon.supervisor is not None:
                view.tick(daemon)

    async def timer() -> None:
        if duration is not None:
            await asyncio.sleep(duration)
            daemon.request_stop()

    tasks = [asyncio.create_task(screen()), asyncio.create_task(timer())]
    try:
        await daemon.run()
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    if daemon.outbox is not None:
        print()
        print(format_outbox(daemon.outbox.stats(), daemon.paths.outbox))
        up = daemon.uplink.stats if daemon.uplink else None
        if up is not None:
            print(f"  delivered to the broker this run (PUBACK): {up.delivered}, resent: {up.resent}")
    # Leave the terminal tidy when Ctrl-C arrived while asyncio owned SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return view
