"""IANA time-zone names in the config, checked when the file is loaded rather than at first use."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: a region ("America"), a long name
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like 'America/Chicago')") from e
    return name


ZoneName = Annotated[str, AfterValidator(check_zone)]
