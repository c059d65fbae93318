"""Pure decisions of the outbox: which class gets how many rows of a lease batch.

Strict priority (alarm > evidence > billing > summary > status) would let a steady stream of alarms or a
large billing backlog starve summaries and device status for hours.  The starvation guard gives
every lower class with waiting rows a share of the batch on every ``every_n``-th lease, and
whenever its oldest row has waited ``max_age_s`` or more.  Shares are small: together at most half
the batch (rounded down), so the highest class with waiting rows always keeps at least one slot of
every batch — an alarm never waits behind a backlog of summaries, whatever the batch size.  When the
half is too small to give each waiting lower class a row, they take turns (``turn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.records import PRIORITY, RecordKind

CLASS_ORDER: tuple[RecordKind, ...] = tuple(sorted(RecordKind, key=PRIORITY.__getitem__))


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    every_n: int = 4  # every n-th lease batch serves each waiting lower class
    max_age_s: float = 60.0  # ...and so does any batch while a class's oldest row is this old

    def __post_init__(self) -> None:
        if self.every_n < 1 or self.max_age_s <= 0:
            raise ValueError("every_n must be >= 1 and max_age_s > 0")


@dataclass(frozen=True, slots=True)
class Backlog:
    available: int  # rows that may be leased now (stored, not leased, not being deleted)
    oldest_created: float | None  # oldest stored row of the class


def starving_classes(backlog: Mapping[RecordKind, Backlog], *, now: float, batch_no: int,
                     policy: LeasePolicy) -> list[RecordKind]:
    """Lower classes owed a share of lease batch number ``batch_no`` (counting from 1)."""
    periodic = batch_no % policy.every_n == 0
    out: list[RecordKind] = []
    for kind in CLASS_ORDER[1:]:
        b = backlog.get(kind)
        if b is None or b.available <= 0:
            continue
        aged = b.oldest_created is not None and now - b.oldest_created >= policy.max_age_s
        if periodic or aged:
            out.append(kind)
    return out


def lease_shares(limit: int, backlog: Mapping[RecordKind, Backlog], *, now: float, batch_no: int,
                 policy: LeasePolicy, turn: int = 0) -> dict[RecordKind, int]:
    """How many rows of each class a batch of at most ``limit`` rows takes.

    ``turn`` counts the earlier batches that had starving classes (``starving_classes``): it picks
    which of them go first when the batch cannot serve them all, so each gets its turn.
    """
    shares = dict.fromkeys(CLASS_ORDER, 0)
    remaining = max(0, limit)
    avail = {k: max(0, backlog[k].available) if k in backlog else 0 for k in CLASS_ORDER}
    top = next((k for k in CLASS_ORDER if avail[k] > 0), None)
    # only classes below the highest one waiting can be starved by it
    starving = [k for k in starving_classes(backlog, now=now, batch_no=batch_no, policy=policy) if k is not top]
    budget = remaining // 2  # < remaining: the top class keeps at least one slot
    if starving and budget:
        first = turn % len(starving)
        starving = starving[first:] + starving[:first]
        per = max(1, budget // len(starving))
        for kind in starving:
            take = min(per, avail[kind], budget)
            shares[kind] += take
            budget -= take
            remaining -= take
    for kind in CLASS_ORDER:
        take = min(avail[kind] - shares[kind], remaining)
        shares[kind] += take
        remaining -= take
    return shares
