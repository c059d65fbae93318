"""``iomt-gateway demo``: the real daemon on the recorded fixtures, with a live view.

Two patients' recordings (pulse oximetry with a desaturation, a sensor-off spell, a fever; MIT-BIH
ECG) are replayed at N× speed through the real drivers, pipeline, outbox and uplink.  A private
Mosquitto is started on a free port when the binary is installed; without it the demo runs offline
and shows the outbox filling.  Ctrl-C ends it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from pathlib import Path

from gateway import keyring, logs
from gateway.config.loader import ConfigError, load_config
from gateway.local_broker import LocalBroker, find_mosquitto
from gateway.share import demo_config
from gateway.status_view import LiveView, format_outbox

DEMO_CONFIG = demo_config()


def run_demo(*, duration: float | None, speed: float, offline: bool, state: Path | None) -> int:
    logs.configure("warning", "console")
    try:
        cfg = load_config(DEMO_CONFIG)
    except ConfigError as e:
        print(e.render())
        return 2
    tmp = None
    if state is None:
        tmp = Path(tempfile.mkdtemp(prefix="iomt-demo-"))
        state = tmp
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
    patients = [
        p.model_copy(update={"devices": [d.model_copy(update={"speed": speed}) for d in p.devices]})
        for p in cfg.patients
    ]
    cfg = cfg.model_copy(
        update={
            "upstream": cfg.upstream.model_copy(update={"url": url, "backoff_max_s": 5.0}),
            # the demo's own key, in its state folder (a real hub's comes from `iomt-gateway keys init`)
            "storage": cfg.storage.model_copy(update={"path": state / "gateway", "keyring": keyring_file}),
            "patients": patients,
        }
    )
    print(
        f"Replaying {sum(len(p.devices) for p in cfg.patients)} devices of {len(cfg.patients)} patients at "
        f"{speed:g}x real time. Ctrl-C to stop.\n"
    )
    try:
        asyncio.run(_demo(cfg, duration))
    finally:
        if broker is not None:
            broker.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


async def _demo(cfg: object, duration: float | None) -> None:
    from gateway.daemon import Daemon  # noqa: PLC0415

    view = LiveView()
    daemon = Daemon(DEMO_CONFIG, cfg, observer=view.observe, own_process=True)  # type: ignore[arg-type]

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
