"""Property: any interleaving of submit/lease/ack/release/reopen loses no accepted record and never
hands out an acknowledged one."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.outbox import Outbox, PendingRow
from tests.test_outbox import alarm, billing, open_box, status, summary

MAKERS = (summary, alarm, status)

Op = tuple[str, int, int]
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(0, 3), st.integers(1, 6)),
        st.tuples(st.just("submit_nowait"), st.integers(0, 3), st.integers(1, 6)),
        st.tuples(st.just("resubmit"), st.integers(0, 1000), st.just(0)),
        st.tuples(st.just("lease"), st.integers(1, 8), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 1000), st.integers(1, 4)),
        st.tuples(st.just("release"), st.integers(0, 1000), st.integers(1, 4)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


class Model:
    def __init__(self) -> None:
        self.accepted: dict[str, object] = {}  # key -> record, future resolved OK
        self.acked: set[str] = set()
        self.leased: dict[int, PendingRow] = {}
        self.waiting: list[tuple[asyncio.Future[None], object]] = []
        self.billing_no = 0

    def settle(self) -> None:
        still = []
        for fut, rec in self.waiting:
            if fut.done():
                assert fut.exception() is None
                self.accepted[rec.key] = rec  # type: ignore[attr-defined]
            else:
                still.append((fut, rec))
        self.waiting = still

    def check_lease(self, rows: list[PendingRow]) -> None:
        self.settle()
        for r in rows:
            assert r.key not in self.acked, "an acknowledged record was handed out again"
            assert r.key in self.accepted, "a record was handed out before it was accepted"
            assert r.id not in self.leased, "a leased row was handed out twice"
            self.leased[r.id] = r


async def run(ops: list[Op], folder: Path) -> None:
    path = folder / "o.db"
    box: Outbox = await open_box(path, commit_interval_ms=2)
    m = Model()

    def make(kind: int) -> object:
        if kind == 3:
            m.billing_no += 1
            return billing(f"svc-{m.billing_no}")
        return MAKERS[kind](box.next_key())

    for name, a, b in ops:
        if name == "submit":
            recs = [make(a) for _ in range(b)]
            await asyncio.gather(*(box.submit(r) for r in recs))  # type: ignore[arg-type]
            for r in recs:
                m.accepted[r.key] = r  # type: ignore[attr-defined]
        elif name == "submit_nowait":
            for _ in range(b):
                rec = make(a)
                m.waiting.append((box.submit(rec), rec))  # type: ignore[arg-type]
        elif name == "resubmit" and m.accepted:
            # a key already stored or already delivered: a no-op success either way (billing
            # keys are remembered after delivery; other kinds are only re-sent while stored)
            keys = sorted(k for k in m.accepted if k not in m.acked or k.startswith("svc-"))
            if keys:
                await box.accept(m.accepted[keys[a % len(keys)]])  # type: ignore[arg-type]
        elif name == "lease":
            m.check_lease(await box.lease(a))
        elif name in ("ack", "release") and m.leased:
            ids = sorted(m.leased)
            start = a % len(ids)
            chosen = ids[start : start + b]
            if name == "ack":
                await box.ack(chosen)
                m.acked.update(m.leased[i].key for i in chosen)
            else:
                await box.release(chosen)
            for i in chosen:
                del m.leased[i]
        elif name == "reopen":
            await box.close()  # also settles every queued submit
            m.settle()
            assert not m.waiting
            box = await open_box(path, commit_interval_ms=2)
            m.leased.clear()  # leases do not survive a restart
    await box.close()
    m.settle()
    box = await open_box(path)
    rows = await box.lease(100_000)
    expected = set(m.accepted) - m.acked
    assert {r.key for r in rows} == expected
    assert len(rows) == len(expected)
    assert box.stats().depth == len(expected)
    await box.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy)
def test_no_accepted_record_lost_and_no_acked_record_returned(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run(ops, Path(d)))
