"""Schedules: parsing, fire times, and DST written the cronsim way.

DST tests list the transition instants and assert exact ISO strings. The
whole-year sweep compares jobd with a reference written here from Debian cron's
main loop (cron.c), minute by minute, independently of cronsim.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobd.core.cron import (
    CronError,
    CronSchedule,
    IntervalSchedule,
    fires_between,
    next_fires,
    parse_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
ZONES = {"Europe/Berlin": BERLIN, "America/New_York": NEW_YORK, "UTC": ZoneInfo("UTC")}

# The 2026 transitions, as instants: Berlin 02:00 CET -> 03:00 CEST and
# 03:00 CEST -> 02:00 CET; New York 02:00 EST -> 03:00 EDT and 02:00 EDT -> 01:00 EST.
TRANSITIONS = [
    ("Europe/Berlin", "2026-03-29T01:00:00+00:00", 1, 2),
    ("Europe/Berlin", "2026-10-25T01:00:00+00:00", 2, 1),
    ("America/New_York", "2026-03-08T07:00:00+00:00", -5, -4),
    ("America/New_York", "2026-11-01T06:00:00+00:00", -4, -5),
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def fires(expr: str, zone: str, after: str, count: int) -> list[str]:
    return [f.isoformat() for f in next_fires(parse_schedule(expr), ZONES[zone], at(after), count)]


def local(instants: list[str], zone: str) -> list[str]:
    return [at(i).astimezone(ZONES[zone]).isoformat() for i in instants]


@pytest.mark.parametrize(("zone", "instant", "before", "after"), TRANSITIONS)
def test_transition_instants_are_where_the_tests_assume(
    zone: str, instant: str, before: int, after: int
) -> None:
    moment = at(instant)
    tz = ZONES[zone]
    just_before = (moment - timedelta(seconds=1)).astimezone(tz).utcoffset()
    assert just_before == timedelta(hours=before)
    assert moment.astimezone(tz).utcoffset() == timedelta(hours=after)


# -- parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/5 * * * *", "2026-01-01T00:02:30+00:00", "2026-01-01T00:05:00+00:00"),
        ("0 */4 * * *", "2026-01-01T00:00:00+00:00", "2026-01-01T04:00:00+00:00"),
        ("30 2 * * *", "2026-01-01T02:30:00+00:00", "2026-01-02T02:30:00+00:00"),
        ("0 9 * * MON-FRI", "2026-01-02T10:00:00+00:00", "2026-01-05T09:00:00+00:00"),
        ("0 0 1,15 * *", "2026-01-02T00:00:00+00:00", "2026-01-15T00:00:00+00:00"),
        ("0 12 * JAN,JUL *", "2026-02-01T00:00:00+00:00", "2026-07-01T12:00:00+00:00"),
        # 6 fields: seconds first
        ("*/10 * * * * *", "2026-01-01T00:00:05+00:00", "2026-01-01T00:00:10+00:00"),
        ("30 0 12 * * *", "2026-01-01T12:00:00+00:00", "2026-01-01T12:00:30+00:00"),
        ("0 0 0 * * *", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"),
        # extra blanks are not significant
        ("  0   2 * *  *  ", "2026-01-01T00:00:00+00:00", "2026-01-01T02:00:00+00:00"),
    ],
)
def test_cron_fields(expr: str, after: str, expected: str) -> None:
    schedule = parse_schedule(expr)
    assert isinstance(schedule, CronSchedule)
    assert schedule.next_after(at(after), ZONES["UTC"]).isoformat() == expected


def test_blanks_are_normalized_in_the_expression() -> None:
    assert parse_schedule("  0   2 * *  *  ").expr == "0 2 * * *"


# 2026-05-05 is a Tuesday.
NICKNAMES = [
    ("@hourly", "2026-05-05T11:00:00+00:00"),
    ("@daily", "2026-05-06T00:00:00+00:00"),
    ("@midnight", "2026-05-06T00:00:00+00:00"),
    ("@weekly", "2026-05-10T00:00:00+00:00"),
    ("@monthly", "2026-06-01T00:00:00+00:00"),
    ("@yearly", "2027-01-01T00:00:00+00:00"),
    ("@annually", "2027-01-01T00:00:00+00:00"),
]


@pytest.mark.parametrize(("expr", "expected"), NICKNAMES)
def test_nicknames(expr: str, expected: str) -> None:
    assert fires(expr, "UTC", "2026-05-05T10:15:00+00:00", 1) == [expected]
    assert fires(expr.upper(), "UTC", "2026-05-05T10:15:00+00:00", 1) == [expected]


def test_nickname_in_a_zone_is_local_midnight() -> None:
    assert fires("@daily", "Europe/Berlin", "2026-05-05T10:15:00+00:00", 2) == [
        "2026-05-05T22:00:00+00:00",
        "2026-05-06T22:00:00+00:00",
    ]


def test_every_is_anchored_on_the_epoch() -> None:
    schedule = parse_schedule("@every 10m")
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.seconds == 600
    got = next_fires(schedule, BERLIN, at("2026-01-01T00:03:17+00:00"), 3)
    assert [f.isoformat() for f in got] == [
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T00:20:00+00:00",
        "2026-01-01T00:30:00+00:00",
    ]


def test_every_from_a_slot_is_the_next_slot() -> None:
    schedule = parse_schedule("@every 10m")
    assert (
        schedule.next_after(at("2026-01-01T00:10:00+00:00"), BERLIN).isoformat()
        == "2026-01-01T00:20:00+00:00"
    )


@pytest.mark.parametrize("expr", ["@every 7m", "@every 1h30m", "@every 45s", "@every 1500ms"])
def test_every_slots_are_the_same_from_any_start_and_zone(expr: str) -> None:
    # Identical slots on every host and after every restart: that is what makes
    # the (job, scheduled_for) unique key catch a second leader.
    schedule = parse_schedule(expr)
    assert isinstance(schedule, IntervalSchedule)
    step = timedelta(seconds=schedule.seconds)
    first = next_fires(schedule, BERLIN, at("2026-03-29T00:59:59.5+00:00"), 20)
    restart = first[5] + step / 3
    assert next_fires(schedule, NEW_YORK, restart, 10) == first[6:16]
    assert all(b - a == step for a, b in itertools.pairwise(first))
    for fire in first:
        assert fire.tzinfo is UTC
        slots = fire.timestamp() / schedule.seconds
        assert slots == pytest.approx(round(slots))


def test_every_accepts_up_to_366_days() -> None:
    assert parse_schedule("@every 366d").seconds == 366 * 86400


def test_reboot_is_refused() -> None:
    with pytest.raises(CronError, match="@reboot"):
        parse_schedule("@reboot")


BAD_EXPRESSIONS = [
    "",
    "   ",
    "* * * *",
    "* * * * * * *",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 13 *",
    "* * * * 8",
    "*/0 * * * *",
    "5-1 * * * *",
    "a b c d e",
    "1,,2 * * * *",
    "0 0 30 2 *",  # February 30th never comes
    "0 0 * * MON#6",
    "60 * * * * *",
    "@often",
    "@daily extra",
    "@every",
    "@every 0s",
    "@every 500ms",
    "@every -5m",
    "@every 5x",
    "@every 367d",
    "@every " + "9" * 400 + "d",  # once overflowed datetime in next_after
    "@reboot",
]


@pytest.mark.parametrize("expr", BAD_EXPRESSIONS)
def test_bad_expressions(expr: str) -> None:
    with pytest.raises(CronError) as info:
        parse_schedule(expr)
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 5, ["* * * * *"], b"* * * * *"])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(CronError, match="expected a cron expression string"):
        parse_schedule(value)  # type: ignore[arg-type]


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError)


def test_results_are_utc_and_strictly_later() -> None:
    after = at("2026-06-01T12:00:00.250000+02:00")
    fire = parse_schedule("* * * * * *").next_after(after, BERLIN)
    assert fire.tzinfo is UTC
    assert fire.isoformat() == "2026-06-01T10:00:01+00:00"


def test_fires_between_is_bounded_by_until_and_limit() -> None:
    schedule = parse_schedule("0 * * * *")
    tz = ZONES["UTC"]
    start, until = at("2026-01-01T00:00:00+00:00"), at("2026-01-01T03:00:00+00:00")
    assert [f.hour for f in fires_between(schedule, tz, start, until, 10)] == [1, 2, 3]
    assert [f.hour for f in fires_between(schedule, tz, start, until, 2)] == [1, 2]
    assert list(fires_between(schedule, tz, start, start, 10)) == []


# -- DST ------------------------------------------------------------------------
# Each case: expression, zone, start instant, then the fires as UTC instants and
# as local times. Fixed-time jobs (minute and hour without '*') follow Debian
# cron: a gap fire runs once right after the gap, a fold fire once, on the first
# pass. Jobs with '*' in the minute or hour run on real elapsed time.

DST_CASES = [
    # Berlin, spring forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z)
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+00:00",
        ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"],
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+00:00",
        ["2026-03-29T01:00:00+00:00", "2026-03-30T00:00:00+00:00"],
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
    ),
    (
        # The gap's fires and the 03:00 fire collapse into one run.
        "0,30 2,3 * * *",
        "Europe/Berlin",
        "2026-03-29T00:00:00+00:00",
        ["2026-03-29T01:00:00+00:00", "2026-03-29T01:30:00+00:00", "2026-03-30T00:00:00+00:00"],
        ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:00:00+02:00"],
    ),
    (
        # Before the gap: unaffected; the next day's fire is 23 real hours later.
        "30 1 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+00:00",
        ["2026-03-29T00:30:00+00:00", "2026-03-29T23:30:00+00:00"],
        ["2026-03-29T01:30:00+01:00", "2026-03-30T01:30:00+02:00"],
    ),
    (
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-03-29T00:15:00+00:00",
        ["2026-03-29T00:30:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-29T01:30:00+00:00"],
        ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"],
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-03-29T00:30:00+00:00",
        ["2026-03-29T01:00:00+00:00", "2026-03-29T02:00:00+00:00"],
        ["2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"],
    ),
    (
        # 6 fields, fixed time: the same rule as 5 fields, not a skipped day.
        "0 30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00+00:00",
        ["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"],
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    # Berlin, fall back 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z); 02:00-02:59
    # is lived twice: 00:00-00:59Z (CEST), then 01:00-01:59Z (CET).
    (
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00+00:00",
        ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"],
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "0 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00+00:00",
        ["2026-10-25T00:00:00+00:00", "2026-10-26T01:00:00+00:00"],
        ["2026-10-25T02:00:00+02:00", "2026-10-26T02:00:00+01:00"],
    ),
    (
        "0 30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00+00:00",
        ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"],
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    (
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:45:00+00:00",
        [
            "2026-10-25T00:00:00+00:00",
            "2026-10-25T00:30:00+00:00",
            "2026-10-25T01:00:00+00:00",
            "2026-10-25T01:30:00+00:00",
            "2026-10-25T02:00:00+00:00",
        ],
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ],
    ),
    (
        "0 * * * *",
        "Europe/Berlin",
        "2026-10-24T23:30:00+00:00",
        ["2026-10-25T00:00:00+00:00", "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"],
        ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"],
    ),
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)
    (
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00+00:00",
        ["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"],
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
    ),
    (
        "0 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00+00:00",
        ["2026-03-08T07:00:00+00:00", "2026-03-09T06:00:00+00:00"],
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
    ),
    (
        "*/15 * * * *",
        "America/New_York",
        "2026-03-08T06:40:00+00:00",
        ["2026-03-08T06:45:00+00:00", "2026-03-08T07:00:00+00:00", "2026-03-08T07:15:00+00:00"],
        ["2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00"],
    ),
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z); 01:00-01:59
    # is lived twice: 05:00-05:59Z (EDT), then 06:00-06:59Z (EST).
    (
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00+00:00",
        ["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"],
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    ),
    (
        "0 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00+00:00",
        ["2026-11-01T05:00:00+00:00", "2026-11-02T06:00:00+00:00"],
        ["2026-11-01T01:00:00-04:00", "2026-11-02T01:00:00-05:00"],
    ),
    (
        "0 2 * * *",
        "America/New_York",
        "2026-10-31T12:00:00+00:00",
        ["2026-11-01T07:00:00+00:00", "2026-11-02T07:00:00+00:00"],
        ["2026-11-01T02:00:00-05:00", "2026-11-02T02:00:00-05:00"],
    ),
    (
        "*/30 * * * *",
        "America/New_York",
        "2026-11-01T04:45:00+00:00",
        [
            "2026-11-01T05:00:00+00:00",
            "2026-11-01T05:30:00+00:00",
            "2026-11-01T06:00:00+00:00",
            "2026-11-01T06:30:00+00:00",
            "2026-11-01T07:00:00+00:00",
        ],
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
    ),
    (
        "@daily",
        "America/New_York",
        "2026-10-31T12:00:00+00:00",
        ["2026-11-01T04:00:00+00:00", "2026-11-02T05:00:00+00:00"],
        ["2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"],
    ),
]


@pytest.mark.parametrize(
    ("expr", "zone", "after", "utc", "wall"),
    DST_CASES,
    ids=[f"{c[0]}|{c[1]}|{c[2][:10]}" for c in DST_CASES],
)
def test_dst(expr: str, zone: str, after: str, utc: list[str], wall: list[str]) -> None:
    got = fires(expr, zone, after, len(utc))
    assert got == utc
    assert local(got, zone) == wall


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # From the fold's second pass, the first pass (earlier in real time) has
        # fired already: the next fire is tomorrow's.
        ("30 2 * * *", "2026-10-25T01:15:00+00:00", "2026-10-26T01:30:00+00:00"),
        ("30 2 * * *", "2026-10-25T01:30:00+00:00", "2026-10-26T01:30:00+00:00"),
        ("30 2 * * *", "2026-10-25T00:45:00+00:00", "2026-10-26T01:30:00+00:00"),
        ("0 30 2 * * *", "2026-10-25T01:15:00+00:00", "2026-10-26T01:30:00+00:00"),
        # A later wall time in the second pass is still ahead.
        ("45 2 * * *", "2026-10-25T01:15:00+00:00", "2026-10-26T01:45:00+00:00"),
        ("0 3 * * *", "2026-10-25T01:15:00+00:00", "2026-10-25T02:00:00+00:00"),
        # Wildcard minute: the second pass fires on real time.
        ("*/15 * * * *", "2026-10-25T01:15:00+00:00", "2026-10-25T01:30:00+00:00"),
    ],
)
def test_next_after_from_inside_the_fold(expr: str, after: str, expected: str) -> None:
    assert parse_schedule(expr).next_after(at(after), BERLIN).isoformat() == expected


@pytest.mark.parametrize(
    "expr", ["30 2 * * *", "0 2 * * *", "0 3 * * *", "*/15 * * * *", "0 30 2 * * *", "@hourly"]
)
@pytest.mark.parametrize(
    ("zone", "start"),
    [
        ("Europe/Berlin", "2026-10-24T22:00:00+00:00"),
        ("Europe/Berlin", "2026-03-28T23:00:00+00:00"),
        ("America/New_York", "2026-11-01T03:00:00+00:00"),
        ("America/New_York", "2026-03-08T05:00:00+00:00"),
    ],
)
def test_next_after_never_goes_back_around_a_transition(expr: str, zone: str, start: str) -> None:
    # From every minute (and half-minute) of six hours around the change.
    schedule = parse_schedule(expr)
    tz = ZONES[zone]
    moment = at(start)
    for _ in range(6 * 120):
        assert schedule.next_after(moment, tz) > moment
        moment += timedelta(seconds=30)


# -- a whole year against Debian cron --------------------------------------------

Matcher = Callable[[int, int], bool]

# Expression -> (wildcard job?, does it match this wall-clock hour and minute?).
# Written out by hand so that the reference shares no code with cronsim.
SWEEP_JOBS: dict[str, tuple[bool, Matcher]] = {
    "0 2 * * *": (False, lambda hour, minute: hour == 2 and minute == 0),
    "30 2 * * *": (False, lambda hour, minute: hour == 2 and minute == 30),
    "*/15 * * * *": (True, lambda hour, minute: minute % 15 == 0),
}
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2027, 1, 1, tzinfo=UTC)


@functools.cache
def debian_reference(zone: str) -> dict[str, list[datetime]]:
    """Fires of SWEEP_JOBS in 2026, by Debian cron's main loop (cron.c).

    cron wakes each real minute and compares the wall clock with its "virtual
    time": one minute on, run every matching job; the clock jumped forward
    (spring), run wildcard jobs for now and fixed-time jobs for each skipped
    minute; the clock went back (fall), run only wildcard jobs and let virtual
    time wait. A job already queued in this wake-up is not queued again.

    Minutes are integers since the epoch, real and wall-clock alike; the zone's
    offset is looked up once per real hour (both zones change on the hour).
    """
    tz = ZONES[zone]
    result: dict[str, list[datetime]] = {expr: [] for expr in SWEEP_JOBS}

    def offset(real: int) -> int:
        moment = datetime.fromtimestamp(real * 60, UTC)
        return int(moment.astimezone(tz).utcoffset().total_seconds()) // 60  # type: ignore[union-attr]

    def due(matches: Matcher, wall: int) -> bool:
        return matches(wall // 60 % 24, wall % 60)

    first, end = int(YEAR_START.timestamp()) // 60, int(YEAR_END.timestamp()) // 60
    virtual = first - 1 + offset(first - 1)
    shift = offset(first)
    for real in range(first, end):
        if real % 60 == 0:
            shift = offset(real)
        wall = real + shift
        steps = wall - virtual
        for expr, (wildcard, matches) in SWEEP_JOBS.items():
            if steps == 1:
                fire = due(matches, wall)
            elif steps > 1:
                skipped = range(virtual + 1, wall + 1)
                fire = due(matches, wall) if wildcard else any(due(matches, w) for w in skipped)
            else:
                fire = wildcard and due(matches, wall)
            if fire:
                result[expr].append(datetime.fromtimestamp(real * 60, UTC))
        if steps >= 1:
            virtual = wall
    return result


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("expr", list(SWEEP_JOBS))
def test_whole_year_matches_debian_cron(zone: str, expr: str) -> None:
    expected = debian_reference(zone)[expr]
    schedule = parse_schedule(expr)
    got = []
    moment = YEAR_START - timedelta(seconds=1)
    while True:
        moment = schedule.next_after(moment, ZONES[zone])
        if moment >= YEAR_END:
            break
        got.append(moment)
    assert len(got) == len(set(got)), "a fire came twice"
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert (missing[:5], extra[:5]) == ([], [])
    assert got == expected
    per_day = {"0 2 * * *": 365, "30 2 * * *": 365, "*/15 * * * *": 365 * 96}
    assert len(got) == per_day[expr]


# -- robustness ------------------------------------------------------------------

FIELD = st.one_of(
    st.sampled_from(["*", "*/5", "0", "1-5", "MON", "JAN", "L", "LW", "5#2", "1,2", "?"]),
    st.text(alphabet="0123456789*/,-LW#?MONTUEJA", min_size=1, max_size=6),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=40),
        st.lists(FIELD, min_size=4, max_size=7).map(" ".join),
        st.sampled_from(["@every ", "@", "@daily", "@every 1"]).flatmap(
            lambda p: st.text(max_size=10).map(lambda t: p + t)
        ),
    ),
    st.sampled_from(list(ZONES)),
)
def test_random_expressions_give_a_schedule_or_cron_error(expr: str, zone: str) -> None:
    try:
        schedule = parse_schedule(expr)
    except CronError:
        return
    after = at("2026-10-25T00:30:00+00:00")
    try:
        fire = schedule.next_after(after, ZONES[zone])
    except CronError:
        return
    assert fire > after and fire.tzinfo is UTC


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 25 * * *", ("hour field '25'", "0-23")),
        ("61 * * * *", ("minute field '61'", "0-59")),
        ("* * 32 * *", ("day-of-month field '32'", "1-31")),
        ("* * * 13 *", ("month field '13'", "1-12")),
        ("* * * * 8", ("day-of-week field '8'", "0-7")),
        ("99 * * * * *", ("second field '99'", "0-59")),
        ("0 99 * * * *", ("minute field '99'", "0-59")),
    ],
)
def test_a_bad_field_is_named_with_its_value_and_range(expr: str, words: tuple[str, ...]) -> None:
    with pytest.raises(CronError) as caught:
        parse_schedule(expr)
    assert all(word in str(caught.value) for word in words), caught.value
    assert "Bad " not in str(caught.value)
