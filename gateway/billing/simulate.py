"""``billing simulate``: the ledger's rules over a CSV of ``patient,device,timestamp`` rows.

For billing staff asking "what would this month produce", and for anyone checking the rules on
their own data: the same ``PatientBook`` as the daemon, fed rows sorted by time (timestamps are
ISO 8601 with an offset, so they are trusted as the daemon trusts a synchronised clock).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.billing.book import PatientBook
from gateway.billing.ledger import PatientBilling, new_book
from gateway.config.billing import BillingSection
from gateway.records import BillingRecord, ClockQuality

_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the config's id pattern


class RowError(ValueError):
    """One CSV row that cannot be used (message starts with its line number)."""


@dataclass(frozen=True, slots=True, order=True)
class Row:
    t: float
    line: int
    patient: str
    device: str


def parse_row(cells: list[str], line: int) -> Row | None:
    """One CSV row; None for blank lines, comments and the header."""
    if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
        return None
    cells = [c.strip() for c in cells]
    if cells[:3] == ["patient", "device", "timestamp"]:
        return None
    if len(cells) != 3:
        raise RowError(f"line {line}: expected 3 columns patient,device,timestamp, got {len(cells)}")
    patient, device, stamp = cells
    for what, value in (("patient", patient), ("device", device)):
        if not _IDENT.match(value):
            raise RowError(f"line {line}: {what} {value!r} is not an id (letters, digits, '-', '_', '.')")
    try:
        dt = datetime.fromisoformat(stamp)
    except ValueError:
        raise RowError(f"line {line}: timestamp {stamp!r} is not ISO 8601") from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise RowError(f"line {line}: timestamp {stamp!r} has no UTC offset (e.g. 2026-03-01T08:00:00-06:00)")
    return Row(dt.timestamp(), line, patient, device)


def read_rows(lines: Iterable[str]) -> tuple[list[Row], list[str]]:
    """Good rows (in file order) and one message per bad row."""
    rows: list[Row] = []
    errors: list[str] = []
    for n, cells in enumerate(csv.reader(lines), start=1):
        try:
            row = parse_row(cells, n)
        except RowError as e:
            errors.append(str(e))
            continue
        if row is not None:
            rows.append(row)
    return rows, errors


@dataclass
class Simulation:
    cfg: BillingSection
    default_zone: ZoneInfo
    known: Mapping[str, PatientBilling] = field(default_factory=dict)
    gateway_id: str = "simulate"
    books: dict[str, PatientBook] = field(default_factory=dict)

    def book(self, patient: str) -> PatientBook:
        b = self.books.get(patient)
        if b is None:
            info = self.known.get(patient, PatientBilling(self.default_zone))
            b = self.books[patient] = new_book(patient, info, self.cfg, self.gateway_id)
        return b

    def run(self, rows: Iterable[Row], until: float | None = None) -> list[BillingRecord]:
        """Records in the order the daemon would send them; periods ending before ``until`` close."""
        records: list[BillingRecord] = []
        for row in sorted(rows):
            records.extend(self.book(row.patient).observe(row.device, row.t, ClockQuality.SYNCED).records)
        end = float("inf") if until is None else until
        for b in self.books.values():
            records.extend(b.close_due(end))
        return records


def latest_versions(records: list[BillingRecord]) -> list[BillingRecord]:
    """The last version of each service, in the order the services first appeared."""
    last: dict[str, BillingRecord] = {}
    for r in records:
        last[r.service_key] = r
    return list(last.values())
