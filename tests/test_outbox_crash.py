"""Crash safety: a producer process killed with SIGKILL mid-stream loses nothing it was told is accepted.

SIGKILL stops the process between any two instructions (also inside a commit); the kernel keeps
what was written.  Power loss additionally depends on fsync, which ``synchronous=FULL`` provides.
"""

from __future__ import annotations

import asyncio
import contextlib
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

def report(fut, key):
    if not fut.cancelled() and fut.exception() is None:
        print("ok", key, flush=True)

async def main(path: str) -> None:
    # a long commit interval widens the window in which a premature "accepted" would show
    box = await Outbox.open(Path(path), gateway_id=GW, commit_interval_ms=100,
                            free_bytes=lambda _f: 10**12)
    await asyncio.gather(*(box.submit(summary(box.next_key())) for _ in range(20)))
    for row in await box.lease(5):  # leased, never acked: must come back after the crash
        print("leased", row.key, flush=True)
    print("go", flush=True)
    n = 0
    while True:  # a steady stream; each key is printed as soon as its future resolves
        batch = [summary(box.next_key()) for _ in range(20)] + [billing(f"svc-{n}")]
        n += 1
        for rec in batch:
            box.submit(rec).add_done_callback(lambda f, k=rec.key: report(f, k))
        await asyncio.sleep(0.005)

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

    def take(line: bytes) -> None:
        if not line.endswith(b"\n"):
            return  # cut short by the kill: the child had not finished saying it
        word, _, rest = line.decode().strip().partition(" ")
        if word == "ok":
            accepted.add(rest)
        elif word == "leased":
            leased.add(rest)

    try:
        async with asyncio.timeout(60):
            while (line := await proc.stdout.readline()) != b"go\n":
                assert line, "the child stopped before streaming"
                take(line)
        before = len(accepted)
        # Kill at an arbitrary moment of the stream, not at a line boundary we chose:
        # submits, commits and prints are all in flight.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while line := await proc.stdout.readline():
                    take(line)
    finally:
        proc.send_signal(signal.SIGKILL)
    # everything the child printed before it died counts as accepted
    for line in (await proc.stdout.read()).splitlines(keepends=True):
        take(line)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(leased) == 5
    assert len(accepted) - before > 100, "the stream was too short to say anything"

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
