"""Conversions between aware UTC datetimes, the store's naive UTC, and text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobd.core.durations import format_duration

if TYPE_CHECKING:  # only annotations here; importing zoneinfo costs a history read ~3 ms
    from zoneinfo import ZoneInfo


def to_db(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    # combine(), not replace(tzinfo=None): replace's keyword handling costs 2 µs,
    # four times the rest, and every run written or read converts a few of these.
    return datetime.combine(utc, utc.time())


def from_db(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite returns text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return datetime.combine(value, value.time(), UTC)  # see to_db
    return value.astimezone(UTC)


def rfc3339(moment: datetime | None, tz: ZoneInfo | None = None) -> str | None:
    """RFC 3339 text in UTC ('Z'), or in `tz` with its offset."""
    if moment is None:
        return None
    if tz is None:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return moment.astimezone(tz).isoformat(timespec="milliseconds")


def parse_instant(text: str, tz: ZoneInfo | None = None) -> datetime:
    """An RFC 3339 / ISO 8601 instant; a naive one is read in `tz` (UTC by default)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz or UTC)
    # Near year 1 or 9999 the conversion, and any schedule walked from there, would
    # leave what datetime can hold; no job runs then.
    if not 1900 <= value.year <= 9000:
        raise ValueError(f"{text!r} is not between the years 1900 and 9000")
    return value.astimezone(UTC)


def ago(moment: datetime | None, now: datetime) -> str:
    """`5m ago`, `in 2h`, `now`, or `-` for no moment."""
    if moment is None:
        return "-"
    delta = (now - moment).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"{format_duration(delta)} ago" if delta > 0 else f"in {format_duration(-delta)}"
