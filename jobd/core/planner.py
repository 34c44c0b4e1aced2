"""Which slots fire now: `plan_job(spec, next_fire_at, now, lead_since, on_time_from)`.

A slot is fired on time when it fell due while this instance was leading and
firing: at or after both `lead_since` and `on_time_from`. Every other unfired
slot is a missed fire, and the job's `catchup` policy decides: none, the
latest, or all within `catchup_window`, at most CATCHUP_CAP. Slots are missed
when they fell due before this instance began to lead (the daemon was down, or
another leader died), or while it led but could not fire (it was stopped or
frozen, cut off from the store, or nobody woke it): the daemon says which by
`on_time_from`, normally MISFIRE_GRACE before the round of firing began (see
jobd.core.model). A forward wall-clock jump while leading is not a miss: the daemon
moves `on_time_from` back over it, and the skipped slots replay when there are
at most CATCHUP_CAP of them (Debian cron replays short jumps); beyond that only
the latest fires, with a warning.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from jobd.core.cron import Schedule, parse_schedule
from jobd.core.model import CATCHUP_CAP, Catchup, JobSpec, Trigger

# Enumerating missed slots of an every-second job down for a day is 86,400
# steps; past this many the oldest are not worth the time.
MAX_STEPS = 200_000


@dataclass(frozen=True)
class PlannedFire:
    slot: datetime
    trigger: Trigger


@dataclass(frozen=True)
class JobPlan:
    fires: list[PlannedFire]
    next_fire_at: datetime | None
    warnings: list[str] = field(default_factory=list)
    # Some slots fell due while leading but were not fired on time (see on_time_from).
    late: bool = False


@lru_cache(maxsize=16384)
def schedule_of(expr: str) -> Schedule:
    return parse_schedule(expr)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def plan_jobs(
    items: list[tuple[JobSpec, datetime]],
    now: datetime,
    lead_since: datetime,
    on_time_from: datetime | None = None,
) -> list[JobPlan]:
    """plan_job for many (spec, next_fire_at) at one `now`.

    A plan depends on the spec only through its schedule, time zone and catchup
    policy, so jobs that share those and their next fire (the hundreds of jobs
    due at the top of an hour, say) share one plan instead of each walking the
    same cron expression again.
    """
    plans: dict[tuple, JobPlan] = {}
    result = []
    for spec, next_fire_at in items:
        key = (spec.schedule, spec.timezone, spec.catchup, spec.catchup_window, next_fire_at)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = plan_job(spec, next_fire_at, now, lead_since, on_time_from)
        result.append(plan)
    return result


def plan_job(
    spec: JobSpec,
    next_fire_at: datetime,
    now: datetime,
    lead_since: datetime,
    on_time_from: datetime | None = None,
) -> JobPlan:
    """The fires of one job at `now`. Slots before `lead_since` or `on_time_from`
    (None: no other bound than `lead_since`) are missed fires."""
    if spec.schedule is None:
        return JobPlan([], None)
    schedule, tz = schedule_of(spec.schedule), zone(spec.timezone)
    following = schedule.next_after(now, tz)
    if next_fire_at > now:
        return JobPlan([], next_fire_at)
    fires: list[PlannedFire] = []
    warnings: list[str] = []
    missed_before = lead_since if on_time_from is None else max(lead_since, on_time_from)
    if next_fire_at < missed_before:
        missed_fires, missed_warnings = _missed(
            spec, schedule, tz, next_fire_at, now, missed_before
        )
        fires += missed_fires
        warnings += missed_warnings
    late = False
    if next_fire_at < missed_before and lead_since < missed_before:
        start = max(next_fire_at, lead_since)
        first = start if _is_slot(schedule, tz, start) else schedule.next_after(start, tz)
        late = first < missed_before
    live_from = max(next_fire_at, missed_before)
    live, more = _slots(schedule, tz, live_from, now, CATCHUP_CAP)
    if more:
        last = schedule.latest_at_or_before(now, tz)
        warnings.append(
            f"more than {CATCHUP_CAP} slots fell due at once (clock jump?); firing only the latest"
        )
        live = [last] if last is not None and last >= live_from else []
    fires += [PlannedFire(slot, Trigger.SCHEDULE) for slot in live]
    return JobPlan(fires, following, warnings, late)


def _missed(
    spec: JobSpec,
    schedule: Schedule,
    tz: ZoneInfo,
    next_fire_at: datetime,
    now: datetime,
    missed_before: datetime,
) -> tuple[list[PlannedFire], list[str]]:
    """Fires for the slots in [next_fire_at, missed_before) under the catchup policy."""
    if spec.catchup is Catchup.NONE:
        return [], []
    window_start = max(next_fire_at, now - timedelta(seconds=spec.catchup_window))
    end = min(missed_before, now)
    if spec.catchup is Catchup.LATEST:
        latest = schedule.latest_at_or_before(end - timedelta(microseconds=1), tz)
        if latest is None or latest < window_start:
            return [], []
        return [PlannedFire(latest, Trigger.CATCHUP)], []
    recent: deque[datetime] = deque(maxlen=CATCHUP_CAP)
    total = 0
    slot = (
        window_start
        if _is_slot(schedule, tz, window_start)
        else schedule.next_after(window_start, tz)
    )
    while slot < end and total < MAX_STEPS:
        recent.append(slot)
        total += 1
        slot = schedule.next_after(slot, tz)
    warnings = []
    if total > CATCHUP_CAP:
        warnings.append(f"{total} missed slots; catching up only the latest {CATCHUP_CAP}")
    return [PlannedFire(s, Trigger.CATCHUP) for s in recent], warnings


def _slots(
    schedule: Schedule, tz: ZoneInfo, start: datetime, until: datetime, cap: int
) -> tuple[list[datetime], bool]:
    """Slots in [start, until], at most `cap`; the flag says whether more exist."""
    slots: list[datetime] = []
    slot = start if _is_slot(schedule, tz, start) else schedule.next_after(start, tz)
    while slot <= until:
        if len(slots) == cap:
            return slots, True
        slots.append(slot)
        slot = schedule.next_after(slot, tz)
    return slots, False


def _is_slot(schedule: Schedule, tz: ZoneInfo, moment: datetime) -> bool:
    return schedule.latest_at_or_before(moment, tz) == moment


def first_fire_after(spec: JobSpec, now: datetime) -> datetime | None:
    """A job's first slot after `now`: where a new, rescheduled or resumed job starts."""
    if spec.schedule is None:
        return None
    return schedule_of(spec.schedule).next_after(now, zone(spec.timezone))
