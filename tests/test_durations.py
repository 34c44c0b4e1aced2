"""Durations as operators write them (SPEC section 2): parse and format."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobd.core.durations import DurationError, format_duration, parse_duration

GOOD = [
    ("500ms", 0.5),
    ("30s", 30.0),
    ("5m", 300.0),
    ("2h", 7200.0),
    ("1d", 86400.0),
    ("1w", 604800.0),
    ("1h30m", 5400.0),
    ("1d2h3m4s", 93784.0),
    ("2m500ms", 120.5),
    ("1.5h", 5400.0),
    ("0.25s", 0.25),
    ("0", 0.0),
    ("0s", 0.0),
    ("90", 90.0),  # a bare number is seconds
    ("2.5", 2.5),
    (" 30s ", 30.0),
    ("1h 30m", 5400.0),
    ("1H30M", 5400.0),
    ("10MS", 0.01),
]

BAD = [
    "",
    "   ",
    "s",
    "ms",
    "5x",
    "30sec",
    "5mm",
    "-5s",
    "+5s",
    "1h30",  # a trailing number without a unit
    "h1",
    "1.s",
    ".5s",
    "1e3s",
    "inf",
    "nan",
    "1h-30m",
    "1h30m,",
    "5 minutes",
    "\u0661\u0662s",  # Arabic-Indic digits: only ASCII digits are a duration
]


@pytest.mark.parametrize(("text", "seconds"), GOOD)
def test_parse_good(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", BAD)
def test_parse_bad(text: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [5, 1.5, None, b"5s", ["5s"], True])
def test_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(DurationError, match="expected a duration string"):
        parse_duration(value)  # type: ignore[arg-type]


def test_duration_error_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    assert issubclass(DurationError, ValueError)


FORMATTED = [
    (0, "0.00s"),
    (0.42, "0.42s"),
    (9.5, "9.50s"),
    (9.996, "10s"),  # rounds into the next form, not "10.00s"
    (10, "10s"),
    (12, "12s"),
    (59.4, "59s"),
    (59.6, "1m00s"),  # not "60s"
    (60, "1m00s"),
    (303, "5m03s"),
    (3599, "59m59s"),
    (3600, "1h00m"),
    (7500, "2h05m"),
    (86399.7, "1d00h"),
    (86400, "1d00h"),
    (273600, "3d04h"),
    (-5, "-5.00s"),
    (-303, "-5m03s"),
]


@pytest.mark.parametrize(("seconds", "text"), FORMATTED)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(min_value=0, max_value=400 * 86400, allow_nan=False))
def test_format_reads_back_within_its_precision(seconds: float) -> None:
    # What `executions` shows parses back to nearly the same duration: the
    # shown form drops at most its last unit's rounding.
    shown = format_duration(seconds)
    if seconds < 10:
        tolerance = 0.005
    elif seconds < 3600:
        tolerance = 0.5
    elif seconds < 86400:
        tolerance = 60
    else:
        tolerance = 3600
    assert parse_duration(shown) == pytest.approx(seconds, abs=tolerance + 1e-9)
