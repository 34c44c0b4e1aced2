"""Fire times of a schedule: cron expressions (via cronsim) and `@every` intervals.

Pure: the caller passes the instant to compute from; nothing here reads the clock.
Every instant going in and out is an aware datetime; results are in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from jobd.core.durations import DurationError, parse_duration

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MAX_INTERVAL = 366 * 86400.0

# A probe instant for validation; any fixed aware instant works.
_PROBE = datetime(2026, 1, 1, tzinfo=UTC)


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class CronSchedule:
    """A 5-field (minute first) or 6-field (seconds first) cron expression.

    DST follows Debian cron, as cronsim implements it for 5 fields (and this class
    for 6): a fixed-time job whose wall time falls in a spring-forward gap fires
    once, right after the gap; one whose wall time occurs twice in a fall-back
    fold fires once, on the first occurrence. Jobs with a wildcard minute or hour
    fire on real elapsed time.
    """

    expr: str
    fields: str

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        local = after.astimezone(tz)
        if self._fixed_time_with_seconds:
            candidates = (_wall_to_instant(c, tz) for c in CronSim(self.fields, _naive(local)))
        else:
            candidates = iter(CronSim(self.fields, local))
        for candidate in candidates:
            fire = candidate.astimezone(UTC)
            # cronsim walks fixed-time jobs in naive wall time, so starting from
            # the second pass of a fold it can return the first pass, which is
            # earlier in real time; that slot has fired already.
            if fire > after:
                return fire
        raise CronError(f"cron expression {self.expr!r} never fires")  # pragma: no cover

    def latest_at_or_before(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """The last fire at or before `at`, or None when there is none in 50 years."""
        # cronsim in reverse strips microseconds as its first step, so starting at
        # floor(at) + 1µs yields fires at or before floor(at).
        start = at.astimezone(tz).replace(microsecond=1)
        for candidate in CronSim(self.fields, start, reverse=True):
            latest = candidate.astimezone(UTC)
            # In the second pass of a fall-back fold, reverse iteration compares
            # naive wall times and skips a fire that happened earlier in real time
            # (02:30 CEST seen from 02:10 CET); forward iteration is authoritative.
            while (following := self.next_after(latest, tz)) <= at:
                latest = following
            return latest
        return None

    @property
    def _fixed_time_with_seconds(self) -> bool:
        # cronsim applies Debian cron's DST rule to 5-field expressions only; a
        # 6-field one walked in real time skips the spring-forward day entirely
        # and fires twice in the fall-back fold. The rule is the same with a
        # seconds field: fixed minute and hour (neither starts with '*').
        parts = self.fields.split()
        return len(parts) == 6 and not parts[1].startswith("*") and not parts[2].startswith("*")


def _naive(local: datetime) -> datetime:
    return local.replace(tzinfo=None, fold=0)


def _wall_to_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """A wall time in `tz` as an instant, the way Debian cron (and cronsim) treat
    fixed-time jobs: a time in a spring-forward gap moves to just after the gap
    (minute by minute, keeping the seconds); a time in a fold is its first pass."""
    moment = wall.replace(tzinfo=tz, fold=0)
    while moment.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != moment.replace(tzinfo=None):
        wall += timedelta(minutes=1)
        moment = wall.replace(tzinfo=tz, fold=0)
    return moment


@dataclass(frozen=True)
class IntervalSchedule:
    """`@every 10m`: fires at every multiple of the interval since the Unix epoch.

    Anchoring on the epoch (not on the daemon's start) keeps fire slots identical
    across restarts and hosts, which the (job, scheduled_for) unique key needs.
    """

    expr: str
    seconds: float

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        stamp = after.timestamp()
        slot = (stamp // self.seconds + 1) * self.seconds
        return datetime.fromtimestamp(slot, UTC)

    def latest_at_or_before(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        return datetime.fromtimestamp(at.timestamp() // self.seconds * self.seconds, UTC)


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(expr: str) -> Schedule:
    """Validate `expr` and return its schedule. Raises CronError with a one-line reason."""
    if not isinstance(expr, str):
        raise CronError(f"expected a cron expression string, got {type(expr).__name__}")
    text = " ".join(expr.split())
    if not text:
        raise CronError("empty schedule")
    lowered = text.lower()
    if lowered.startswith("@every"):
        rest = text[len("@every") :].strip()
        try:
            seconds = parse_duration(rest)
        except DurationError as exc:
            raise CronError(f"bad interval in {expr!r}: {exc}") from None
        if seconds < 1:
            raise CronError(f"interval in {expr!r} must be at least 1s")
        if seconds > MAX_INTERVAL:
            # Fire times must stay representable (an absurd interval overflowed
            # datetime in next_after); longer periods are cron's job.
            raise CronError(f"interval in {expr!r} must be at most 366d; use a cron expression")
        return IntervalSchedule(text, seconds)
    if lowered == "@reboot":
        raise CronError("@reboot is not supported: jobd fires on time, not on start")
    if text.startswith("@"):
        if lowered not in NICKNAMES:
            names = ", ".join([*NICKNAMES, "@every <duration>"])
            raise CronError(f"unknown nickname {text!r} (use one of {names})")
        return CronSchedule(text, NICKNAMES[lowered])
    parts = text.split(" ")
    if len(parts) not in (5, 6):
        raise CronError(
            f"cron expression {expr!r} has {len(parts)} fields; "
            "use 5 (minute hour day month weekday) or 6 (seconds first)"
        )
    try:
        next(iter(CronSim(text, _PROBE)))
    except CronSimError as exc:
        raise CronError(f"bad cron expression {expr!r}: {_field_problem(parts, exc)}") from None
    except StopIteration:
        raise CronError(f"cron expression {expr!r} never fires") from None
    except Exception as exc:  # cronsim rejects some odd input with other types
        raise CronError(f"bad cron expression {expr!r}: {exc}") from None
    return CronSchedule(text, text)


# Each field's name as cronsim names it in "Bad <field>", and what it allows.
FIELD_RANGES = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, and a day the month has",
    "month": "1-12 or jan-dec",
    "day-of-week": "0-7 or sun-sat (0 and 7 are Sunday)",
}
FIELD_ORDER = ("minute", "hour", "day-of-month", "month", "day-of-week")


def _field_problem(parts: list[str], exc: CronSimError) -> str:
    """cronsim's "Bad hour" as the field, its value and what the field allows."""
    field = str(exc).removeprefix("Bad ").strip()
    order = ("second", *FIELD_ORDER) if len(parts) == 6 else FIELD_ORDER
    if field not in order:
        return str(exc)
    value = parts[order.index(field)]
    allowed = FIELD_RANGES[field]
    return f"{field} field {value!r} is not valid (allowed: {allowed}; with * , - /)"


def fires_between(
    schedule: Schedule, tz: ZoneInfo, after: datetime, until: datetime, limit: int
) -> Iterator[datetime]:
    """Fire times in (after, until], at most `limit` of them, oldest first."""
    current = after
    for _ in range(limit):
        current = schedule.next_after(current, tz)
        if current > until:
            return
        yield current


def next_fires(schedule: Schedule, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    return list(fires_between(schedule, tz, after, after + timedelta(days=366 * 50), count))
