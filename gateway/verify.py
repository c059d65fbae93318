"""Check received records against the gateway's hash chain and signed checkpoints (pure logic).

Input: the messages of a capture as ``(topic, payload)``.  Records are authenticated by walking
back from each valid checkpoint: position ``k`` is good when ``SHA-256(prev_k || bytes_k)``
equals the link expected there (the checkpoint's root, or the ``prev`` of the good record at
``k + 1``).  A tombstone, once itself authenticated, lets the walk cross the positions it says
were dropped by quota (it names the links on both sides of each dropped run).

Violations (exit status 1): a checkpoint that does not verify, two checkpoints of one size that
disagree, two different records at one position, a record whose link does not match (altered,
reordered within the chain, or forged), a break between neighbouring records, a record without
a chain member, and positions below the chain's known size that neither arrived nor were dropped
by policy (lost or withheld).  Duplicates (the same record twice) are counted and are fine.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway import chain, checkpoint


@dataclass
class Entry:
    canonical: bytes
    prev: bytes
    link: bytes
    tombstone: list[tuple[int, int, bytes, bytes]] | None = None  # (first, last, prev, link) runs


@dataclass
class Report:
    messages: int = 0
    records: int = 0
    duplicates: int = 0
    checkpoints: int = 0
    chain_size: int = 0  # highest position known (from records or valid checkpoints)
    intact_to: int = 0  # largest checkpoint size with every position up to it accounted for
    authenticated: int = 0
    dropped: int = 0  # positions a tombstone says were dropped by quota
    unverified: list[list[int]] = field(default_factory=list)  # present, not yet under a checkpoint
    missing: list[list[int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    ignored: int = 0  # messages that are not records or checkpoints (gateway status...)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        lines = [
            f"messages {self.messages}: {self.records} chained records ({self.duplicates} duplicates, fine), "
            f"{self.checkpoints} valid checkpoints, {self.ignored} other messages",
            f"chain known up to position {self.chain_size}; intact up to checkpoint {self.intact_to}; "
            f"{self.authenticated} positions authenticated, {self.dropped} dropped by quota (tombstoned)",
        ]
        if self.unverified:
            lines.append(f"not yet covered by a checkpoint: {_fmt(self.unverified)}")
        if self.missing:
            lines.append(f"missing positions: {_fmt(self.missing)}")
        lines += [f"VIOLATION: {v}" for v in self.violations]
        lines.append("OK" if self.ok else f"FAILED: {len(self.violations)} violation(s)")
        return "\n".join(lines)


def _fmt(runs: list[list[int]]) -> str:
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:20])
    return shown + (f", ... ({len(runs)} runs)" if len(runs) > 20 else "")


def _tombstone_runs(canonical: bytes) -> list[tuple[int, int, bytes, bytes]] | None:
    try:
        body = json.loads(canonical)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("kind") != "tombstone":
        return None
    runs = []
    try:
        for first, last, prev, link in body["dropped"]:
            runs.append((int(first), int(last), base64.b64decode(prev, validate=True),
                         base64.b64decode(link, validate=True)))
    except (KeyError, TypeError, ValueError, binascii.Error):
        return []
    return runs


def verify(messages: list[tuple[str, bytes]],
           verifier: checkpoint.Verifier | Sequence[checkpoint.Verifier]) -> Report:
    """Audit a capture; ``verifier``: the gateway's key, or its keys across a signing-key rotation."""
    verifiers = [verifier] if isinstance(verifier, checkpoint.Verifier) else list(verifier)
    origins = {v.name for v in verifiers}
    rep = Report(messages=len(messages))
    entries: dict[int, Entry] = {}
    roots: dict[int, bytes] = {}
    for topic, payload in messages:
        if topic.endswith("/checkpoint"):
            try:
                cp = checkpoint.open_note(payload.decode("utf-8", "replace"), verifiers)
            except checkpoint.BadCheckpoint as err:
                rep.violations.append(f"checkpoint on {topic} rejected (forged or damaged): {err}")
                continue
            if cp.origin not in origins:
                rep.violations.append(f"checkpoint for another origin {cp.origin!r}")
                continue
            rep.checkpoints += 1
            if roots.setdefault(cp.size, cp.head) != cp.head:
                rep.violations.append(f"two different signed checkpoints of size {cp.size} (forked chain)")
            continue
        try:
            canonical, n, prev = chain.split_payload(payload)
        except chain.NotChained:
            if _looks_like_record(payload):
                rep.violations.append(f"record on {topic} carries no chain position (forged or unchained)")
            else:
                rep.ignored += 1
            continue
        rep.records += 1
        entry = Entry(canonical, prev, chain.link(prev, canonical), _tombstone_runs(canonical))
        old = entries.get(n)
        if old is None:
            entries[n] = entry
        elif (old.canonical, old.prev) == (entry.canonical, entry.prev):
            rep.duplicates += 1
        else:
            rep.violations.append(f"position {n}: two different records (altered or forged)")
    rep.chain_size = max([*entries, *roots, 0])
    good = _walk(entries, roots, rep)
    dropped: set[int] = set()
    for n in good:
        runs = entries[n].tombstone if n in entries else None
        for first, last, _, _ in runs or []:
            dropped.update(range(first, last + 1))
    rep.authenticated = len(good)
    rep.dropped = len(dropped - set(entries))
    # neighbours must link up even where no checkpoint reaches yet
    flagged = _flagged(rep)
    for n, entry in sorted(entries.items()):
        nxt = entries.get(n + 1)
        if nxt is not None and nxt.prev != entry.link and n not in flagged:
            rep.violations.append(f"position {n}: link does not match the next record's (altered or reordered)")
    if 1 in entries and entries[1].prev != chain.GENESIS:
        rep.violations.append("position 1 does not start from the genesis link")
    present = set(entries)
    rep.unverified = chain.ranges(present - good)
    rep.missing = chain.ranges(set(range(1, rep.chain_size + 1)) - present - dropped)
    if rep.missing:
        rep.violations.append(f"{sum(b - a + 1 for a, b in rep.missing)} positions missing (lost or withheld)")
    accounted = present | dropped
    for size in sorted(roots, reverse=True):
        if all(k in good or k in dropped for k in range(1, size + 1)) and accounted >= set(range(1, size + 1)):
            rep.intact_to = size
            break
    return rep


def _flagged(rep: Report) -> set[int]:
    out = set()
    for v in rep.violations:
        if v.startswith("position "):
            head = v.split(":", 1)[0].removeprefix("position ")
            if head.isdigit():
                out.add(int(head))
    return out


def _walk(entries: dict[int, Entry], roots: dict[int, bytes], rep: Report) -> set[int]:
    """Positions authenticated by some checkpoint (see the module docstring)."""
    good: set[int] = set()
    skips: dict[int, tuple[int, bytes, bytes]] = {}  # last dropped position -> (first, prev, link)
    for size in sorted(roots, reverse=True):
        k, cur = size, roots[size]
        while k > 0 and k not in good:
            e = entries.get(k)
            if e is not None:
                if e.link != cur:
                    rep.violations.append(
                        f"position {k}: record does not match the signed chain (altered, reordered or forged)")
                    break
                good.add(k)
                for first, last, prev, link in e.tombstone or []:
                    skips[last] = (first, prev, link)
                cur, k = e.prev, k - 1
                continue
            skip = skips.get(k)
            if skip is None or skip[2] != cur:
                break  # a gap this checkpoint cannot cross; a lower checkpoint may cover the rest
            cur, k = skip[1], skip[0] - 1
        else:
            if k == 0 and cur != chain.GENESIS:
                rep.violations.append("the chain does not start from the genesis link")
            elif k > 0 and entries[k].link != cur:
                rep.violations.append(f"checkpoint of size {size} disagrees with the chain at position {k}")
    return good


def _looks_like_record(payload: bytes) -> bool:
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return isinstance(body, dict) and "kind" in body and "key" in body
