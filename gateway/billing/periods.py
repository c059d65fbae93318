"""Device-supply periods: which 30-day window a day of data belongs to.

Two anchors (``billing.period_anchor``):

* ``first_data`` — a period starts on the first day of data not covered by an earlier period and
  lasts ``period_days``; after a pause in monitoring, the next period starts with the next data,
  not on a fixed grid.
* ``enrolment`` — back-to-back periods from the enrolment date; data before enrolment does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True, slots=True, order=True)
class Period:
    start: date
    end: date  # inclusive

    def __contains__(self, d: object) -> bool:
        return isinstance(d, date) and self.start <= d <= self.end

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def period_from(start: date, length: int) -> Period:
    return Period(start, start + timedelta(days=length - 1))


def new_period(d: date, length: int, enrolment: date | None) -> Period | None:
    """The period a day of data opens when no open period holds it.

    With an enrolment date, the grid period holding ``d`` (None before enrolment); otherwise the
    period starting on ``d`` itself.
    """
    if enrolment is None:
        return period_from(d, length)
    if d < enrolment:
        return None
    k = (d - enrolment).days // length
    return period_from(enrolment + timedelta(days=k * length), length)
