"""Which slots fire now: `plan_job(spec, next_fire_at, now, lead_since, on_time_from)`,
and for a batch of due jobs, what the store records: `plan_fires(...)`.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from jobd.core.cron import Schedule, parse_schedule
from jobd.core.model import (
    CATCHUP_CAP,
    MISFIRE_GRACE,
    Catchup,
    GroupQuota,
    JobSpec,
    NewRun,
    Status,
    Trigger,
)
from jobd.core.policies import FireAction, SlotDecision, batch_decisions, jitter_offset

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


@dataclass
class FireBatch:
    """What one round of firing writes, and what the daemon says about it."""

    runs: list[NewRun] = field(default_factory=list)  # queued fires and skipped rows
    # job → (its next fire, the last slot fired): where each job's schedule moves on to
    advances: dict[str, tuple[datetime | None, datetime]] = field(default_factory=dict)
    replace: list[str] = field(default_factory=list)  # jobs whose active run a fire replaces
    late: list[str] = field(default_factory=list)  # jobs with slots not fired on time
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (job, catchup warning)
    # (job, its quota group if it has one, a skip decision): for the log and metrics
    skips: list[tuple[str, str | None, SlotDecision]] = field(default_factory=list)


def on_time_from(
    round_began: datetime,
    replay_from: datetime | None,
    first_round: bool,
    lead_since: datetime,
) -> datetime:
    """Slots before this that fell due while leading were missed (the daemon was
    stopped, cut off from the store, or not woken): their catchup decides.

    A clock step moved the round's start (`replay_from`, where a forward step began):
    the slots it skipped replay, and the one the daemon was waking for when the clock
    was stepped is on time. The first round after starting to lead is never late."""
    began = min(round_began, replay_from or round_began)
    start = began - timedelta(seconds=MISFIRE_GRACE)
    return min(start, lead_since) if first_round else start


def plan_fires(
    due: Sequence[tuple[JobSpec, datetime]],
    active: set[str],
    groups: Mapping[str, GroupQuota],
    group_active: Mapping[str, int],
    now: datetime,
    store_now: datetime,
    lead_since: datetime,
    on_time_from: datetime,
) -> FireBatch:
    """The runs, schedule advances and replacements for `due` (spec, next_fire_at)
    at `now`: each job's slots (plan_jobs), decided by its overlap policy and its
    group's quota (batch_decisions, `active` naming the jobs with an active run,
    `group_active` counting each limited group's), delayed by its jitter.

    `not_before` is on the store's clock, which claims compare it with: a run due
    `delay` after `now` on ours is due `delay` after `store_now` on the store's."""
    batch = FireBatch()
    counts = dict(group_active)
    plans = plan_jobs(list(due), now, lead_since, on_time_from)
    for (spec, next_fire_at), plan in zip(due, plans, strict=True):
        if plan.late:
            batch.late.append(spec.name)
        batch.warnings += [(spec.name, warning) for warning in plan.warnings]
        quota = groups.get(spec.group or "")
        decisions, active_after = batch_decisions(
            spec,
            [(fire.slot, fire.trigger) for fire in plan.fires],
            spec.name in active,
            quota,
            counts.get(quota.name, 0) if quota else 0,
        )
        if quota is not None:
            counts[quota.name] = active_after
        for decision in decisions:
            batch.runs.append(_new_run(spec, decision, now, store_now))
            if decision.action is FireAction.SKIP:
                batch.skips.append((spec.name, quota.name if quota else None, decision))
            elif decision.action is FireAction.REPLACE:
                batch.replace.append(spec.name)
        last = plan.fires[-1].slot if plan.fires else next_fire_at
        batch.advances[spec.name] = (plan.next_fire_at, last)
    return batch


def _new_run(spec: JobSpec, decision: SlotDecision, now: datetime, store_now: datetime) -> NewRun:
    due_at = decision.slot + timedelta(seconds=jitter_offset(spec, decision.slot))
    delay = max(timedelta(0), due_at - now)
    skipped = decision.action is FireAction.SKIP
    return NewRun(
        job=spec.name,
        trigger=decision.trigger,
        scheduled_for=decision.slot,
        not_before=store_now + delay,
        status=Status.SKIPPED if skipped else Status.QUEUED,
        error=decision.reason if skipped else None,
    )


def first_fire_after(spec: JobSpec, now: datetime) -> datetime | None:
    """A job's first slot after `now`: where a new, rescheduled or resumed job starts."""
    if spec.schedule is None:
        return None
    return schedule_of(spec.schedule).next_after(now, zone(spec.timezone))
