"""Durations as operators write them: 500ms, 30s, 5m, 2h, 1d, 1h30m."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# ASCII digits only: `\d` would also take other scripts' digits, which float() accepts.
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")


# Every duration ends up added to or taken from a date. Past some thousands of
# years that overflows (datetime stops at year 9999), deep in the daemon or a
# command; no schedule needs more than a century.
MAX_DURATION = 100 * 365 * 86400.0


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in `text`; a bare number is seconds. Raises DurationError."""
    if not isinstance(text, str):
        raise DurationError(f"expected a duration string like '30s', got {text!r}")
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise DurationError("empty duration")
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", cleaned):
        return _bounded(float(cleaned), text)
    pos = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(cleaned):
        raise DurationError(f"invalid duration {text!r} (use e.g. 500ms, 30s, 5m, 2h, 1d, 1h30m)")
    return _bounded(total, text)


def _bounded(seconds: float, text: str) -> float:
    if seconds > MAX_DURATION:
        raise DurationError(f"duration {text!r} is too long (at most 100 years)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable form: 0.42s, 12s, 5m03s, 2h05m, 3d04h."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    # Decide the form after rounding, so 9.996 shows as 10s and 59.6 as 1m00s.
    if round(seconds, 2) < 10:
        return f"{seconds:.2f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"
