"""Crash safety: a producer process killed with SIGKILL mid-stream loses nothing it was told is accepted.

SIGKILL stops the process between any two instructions (also inside a commit); the kernel keeps
what was written.  Power loss additionally depends on fsync, which ``synchronous=FULL`` provides.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from gateway.outbox import Outbox
from gateway.records import RecordKind
from tests.test_outbox import GW, open_box

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import asyncio, sys
from pathlib import Path
from gateway.outbox import Outbox
from tests.test_outbox import GW, billing, summary

async def main(path: str) -> None:
    box = await Outbox.open(Path(path), gateway_id=GW, commit_interval_ms=15,
                            free_bytes=lambda _f: 10**12)

    async def one(rec) -> None:
        await box.accept(rec)
        print("ok", rec.key, flush=True)

    await asyncio.gather(*(one(summary(box.next_key())) for _ in range(20)))
    for row in await box.lease(5):  # leased, never acked: must come back after the crash
        print("leased", row.key, flush=True)
    print("go", flush=True)
    n = 0
    while True:
        batch = [summary(box.next_key()) for _ in range(40)]
        batch.append(billing(f"svc-{n}"))
        n += 1
        await asyncio.gather(*(one(r) for r in batch))

asyncio.run(main(sys.argv[1]))
"""


async def test_sigkill_mid_stream_loses_no_accepted_record(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path), cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    accepted: set[str] = set()
    leased: set[str] = set()
    after_go = 0
    try:
        async with asyncio.timeout(60):
            while after_go < 400:
                line = await proc.stdout.readline()
                assert line, "the child stopped early"
                word, _, rest = line.decode().strip().partition(" ")
                if word == "ok":
                    accepted.add(rest)
                    after_go += bool(leased)
                elif word == "leased":
                    leased.add(rest)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: submits and commits are in flight
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(leased) == 5

    box = await open_box(path)
    rows = await box.lease(1_000_000)
    stored = {r.key for r in rows}
    assert accepted <= stored, f"lost {len(accepted - stored)} accepted records"
    assert leased <= stored  # leased-but-unacked rows are pending again
    assert any(r.kind is RecordKind.BILLING for r in rows)
    assert len(stored) == len(rows)  # no key stored twice
    await box.close()
    # the key counter resumes above everything the dead process handed out
    box2 = await open_box(path)
    seqs = [int(k.rsplit(":", 1)[1]) for k in stored if k.startswith(f"{GW}:")]
    assert int(box2.next_key().rsplit(":", 1)[1]) > max(seqs)
    await box2.close()
    assert Outbox.inspect(path).depth == len(stored)
