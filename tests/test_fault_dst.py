"""Fault: daylight saving time. A year of fires, through the daemon's planner, in
four zones: an hour-long change each way (Europe/Berlin, America/New_York), a
30-minute one (Australia/Lord_Howe) and none at all (Asia/Kolkata, +05:30).

The reference is Debian cron's main loop (cron.c), written again here from its
rules, minute by minute over real time, sharing no code with jobd or cronsim
(tests/test_cron.py has an older sweep for two zones). The planner is driven as
the daemon drives it: ticking exactly at each fire, and ticking at an odd pace
so that several slots fall due in one tick, across every transition.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.planner import first_fire_after, plan_job
from tests.faults import duplicates
from tests.reliability import Recorder, full_size

pytestmark = [pytest.mark.fault]

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))

Matcher = Callable[[int, int], bool]
# expression -> (Debian's "wildcard job": minute or hour starts with '*', matcher)
JOBS: dict[str, tuple[bool, Matcher]] = {
    "30 2 * * *": (False, lambda hour, minute: (hour, minute) == (2, 30)),
    "0 * * * *": (True, lambda hour, minute: minute == 0),
    "*/10 * * * *": (True, lambda hour, minute: minute % 10 == 0),
}
# Fires per year without any DST effect: what a zone without DST must give.
PER_YEAR = {"30 2 * * *": 365, "0 * * * *": 365 * 24, "*/10 * * * *": 365 * 24 * 6}


@functools.cache
def reference(zone: str) -> dict[str, list[datetime]]:
    """Debian cron over 2026 in `zone`: each real minute, compare the wall clock with
    cron's virtual time. One minute on: run what matches. Jumped forward (spring):
    wildcard jobs for the new time, fixed-time jobs for every skipped minute, once.
    Went back (autumn): wildcard jobs only, and virtual time waits for the wall
    clock. Offsets are looked up every 15 real minutes: every zone here changes on
    a whole or half hour of UTC."""
    tz = ZoneInfo(zone)
    fires: dict[str, list[datetime]] = {expr: [] for expr in JOBS}
    first, end = (int(t.timestamp()) // 60 for t in YEAR)

    def offset(real: int) -> int:
        moment = datetime.fromtimestamp(real * 60, UTC).astimezone(tz)
        return int(moment.utcoffset().total_seconds()) // 60  # type: ignore[union-attr]

    def matches(matcher: Matcher, wall: int) -> bool:
        return matcher(wall // 60 % 24, wall % 60)

    virtual = first - 1 + offset(first - 1)
    shift = offset(first)
    for real in range(first, end):
        if real % 15 == 0:
            shift = offset(real)
        wall = real + shift
        steps = wall - virtual
        for expr, (wildcard, matcher) in JOBS.items():
            if steps == 1:
                due = matches(matcher, wall)
            elif steps > 1:
                skipped = range(virtual + 1, wall + 1)
                due = (
                    matches(matcher, wall)
                    if wildcard
                    else any(matches(matcher, w) for w in skipped)
                )
            else:
                due = wildcard and matches(matcher, wall)
            if due:
                fires[expr].append(datetime.fromtimestamp(real * 60, UTC))
        if steps >= 1:
            virtual = wall
    return fires


def windows(zone: str) -> list[tuple[datetime, datetime]]:
    """The stretches of 2026 to plan: the whole year for the report, else 36 hours
    either side of each DST change (a week in July where there is none)."""
    if full_size():
        return [YEAR]
    tz = ZoneInfo(zone)
    found = []
    moment, step = YEAR[0], timedelta(minutes=15)
    offset = moment.astimezone(tz).utcoffset()
    while moment < YEAR[1]:
        moment += step
        if (now := moment.astimezone(tz).utcoffset()) != offset:
            found.append((moment - timedelta(hours=36), moment + timedelta(hours=36)))
            offset = now
    return found or [(datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 8, tzinfo=UTC))]


def planned(expr: str, zone: str, pace: timedelta | None, start: datetime, end: datetime) -> list:
    """The fires in [start, end) as the daemon plans them: a tick at each next fire
    (pace None), or a tick every `pace`, firing whatever fell due since the last."""
    spec = parse_config(
        f'[jobs.j]\nschedule = "{expr}"\ntimezone = "{zone}"\ncommand = ["true"]\n'
    ).jobs["j"]
    lead_since = start - timedelta(days=1)
    next_fire = first_fire_after(spec, start - timedelta(microseconds=1))
    assert next_fire is not None
    fires: list[datetime] = []
    now = start
    while next_fire < end:
        now = next_fire if pace is None else now + pace
        plan = plan_job(spec, next_fire, now, lead_since)
        assert not plan.warnings, plan.warnings
        fires += [fire.slot for fire in plan.fires]
        assert plan.next_fire_at is not None and plan.next_fire_at > now
        next_fire = plan.next_fire_at
    return [fire for fire in fires if fire < end]


@pytest.mark.parametrize("zone", ZONES)
def test_a_year_of_fires_matches_debian_cron(zone: str, reliability: Recorder) -> None:
    expected = reference(zone)
    observed, dupes, lost, extra = 0, 0, 0, 0
    spans = windows(zone)
    for expr, (start, end) in itertools.product(JOBS, spans):
        want = [fire for fire in expected[expr] if start <= fire < end]
        for pace in (None, timedelta(minutes=37)):
            got = planned(expr, zone, pace, start, end)
            observed += len(got)
            dupes += duplicates(got)
            lost += len(set(want) - set(got))
            extra += len(set(got) - set(want))
            assert got == want, (expr, zone, pace, first_difference(got, want))
    reliability.observe(
        "dst",
        f"planner, {zone}",
        runs=observed,
        duplicates=dupes + extra,
        lost=lost,
        detail="30 2 * * *, 0 * * * * and */10 * * * * "
        + ("over 2026" if spans == [YEAR] else "36 h around each 2026 DST change")
        + ", ticking at each fire and every 37 minutes: equal to Debian cron's loop",
    )


def test_the_zones_change_as_the_reference_assumes() -> None:
    """The reference differs from a plain count exactly where DST bites."""
    counts = {zone: {e: len(f) for e, f in reference(zone).items()} for zone in ZONES}
    assert counts["Asia/Kolkata"] == PER_YEAR  # no DST at all
    # An hour skipped in spring and repeated in autumn: wildcard jobs lose their
    # spring fires and gain as many in autumn; the fixed-time job runs every day.
    assert counts["Europe/Berlin"] == PER_YEAR
    assert counts["America/New_York"] == PER_YEAR
    # Lord Howe moves 30 minutes: in spring 02:00-02:29 is skipped (the hourly
    # job loses its 02:00), in autumn 01:30-01:59 repeats (no :00 in it to gain).
    assert counts["Australia/Lord_Howe"] == {**PER_YEAR, "0 * * * *": PER_YEAR["0 * * * *"] - 1}


def first_difference(got: list[datetime], want: list[datetime]) -> str:
    for index, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"at {index}: got {a.isoformat()}, want {b.isoformat()}"
    return f"lengths {len(got)} and {len(want)}"
