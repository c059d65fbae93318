"""Records submitted together commit together, with the state that made them.

The daemon hands a reading's records to the outbox in one synchronous burst, its processing state
riding on the last.  Were the writer to commit part of the burst first, a crash between the two
commits would leave records on disk without that state; the restored older state would make them
again under new keys: the same record sent twice under two identities.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config.models import QuotaSection
from gateway.outbox import OutboxFull
from tests.test_outbox import billing, drain, open_box, summary


@contextlib.contextmanager
def eager_thread_switches() -> Iterator[None]:
    """The writer thread gets the GIL as often as the interpreter allows: if it can wake and
    commit in the middle of a burst, it does."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


async def test_a_burst_commits_in_one_transaction_with_its_state(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    b = await open_box(path, commit_interval_ms=1)  # the writer commits what it has almost at once
    splits = 0
    for r in range(20):
        recs = [summary(b.next_key()) for _ in range(100)]
        before = b.stats().commits
        with eager_thread_switches():
            futs = b.submit_many(recs, state={"pipeline/p1": b"after-%d" % r})
        seen: list[bool] = []
        # a done-callback of the first runs after every future completed in the same wake-up
        futs[0].add_done_callback(lambda _f, last=futs[-1], seen=seen: seen.append(last.done()))
        await asyncio.gather(*futs)
        await asyncio.sleep(0)
        assert seen == [True]
        splits += b.stats().commits - before - 1
    assert splits == 0
    assert await b.load_state("pipeline/") == {"pipeline/p1": b"after-19"}
    await b.close()
    with contextlib.closing(sqlite3.connect(path)) as c:
        assert c.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2000


async def test_a_refused_record_in_a_burst_is_refused_alone(tmp_path: Path) -> None:
    """Per-record refusal is kept: beyond the billing quota the records over it are refused
    (OutboxFull, the producer holds them), the others stored; the state riding on a refused
    record is not written, as with ``submit``."""
    b = await open_box(tmp_path / "o.db", quotas=QuotaSection(billing=100))
    await asyncio.gather(*(b.submit(billing(f"svc-{i}")) for i in range(99)))
    recs = [summary(b.next_key()), billing("svc-a"), billing("svc-b")]
    futs = b.submit_many(recs, state={"ledger/x": b"1"})
    done = await asyncio.gather(*futs, return_exceptions=True)
    assert done[:2] == [None, None] and isinstance(done[2], OutboxFull)
    assert await b.load_state("ledger/") == {}
    keys = {r.key for r in await drain(b)}
    assert {recs[0].key, "svc-a:v1"} <= keys and "svc-b:v1" not in keys
    await b.close()


@pytest.mark.parametrize("n", [0, 1])
async def test_a_burst_of_one_or_none_is_a_plain_submit(tmp_path: Path, n: int) -> None:
    b = await open_box(tmp_path / "o.db")
    futs = b.submit_many([summary(b.next_key()) for _ in range(n)], state={"pipeline/p": b"s"})
    await asyncio.gather(*futs)
    assert len(futs) == 1 and await b.load_state("pipeline/") == {"pipeline/p": b"s"}
    assert len(await drain(b)) == n
    await b.close()
