"""Decisions as pure functions: overlap, retry, chains, jitter.

The daemon applies these decisions; it does not contain them. Nothing here reads
the clock or does I/O: the caller passes `now` and any randomness.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from jobd.core.model import (
    DEFAULT_RETRY_DELAY_MAX,
    GroupQuota,
    JobSpec,
    NewRun,
    Outcome,
    Overlap,
    Run,
    Status,
    Trigger,
)

RETRYABLE = (Status.FAILED, Status.TIMED_OUT, Status.ABANDONED)
RETRY_JITTER = 0.2  # ±20 % around the doubled delay, so retries of many jobs spread out


class FireAction(StrEnum):
    ENQUEUE = "enqueue"
    SKIP = "skip"  # record the slot as skipped
    REPLACE = "replace"  # enqueue, and cancel the active run


@dataclass(frozen=True)
class FireDecision:
    action: FireAction
    reason: str | None = None


def overlap_decision(spec: JobSpec, active: bool) -> FireDecision:
    """What a scheduled fire does when the job may already have a run in flight."""
    if not active or spec.overlap is Overlap.ALLOW or spec.overlap is Overlap.QUEUE:
        return FireDecision(FireAction.ENQUEUE)
    if spec.overlap is Overlap.SKIP:
        return FireDecision(FireAction.SKIP, "overlap = skip: the previous run is still active")
    return FireDecision(FireAction.REPLACE, "overlap = replace: cancelling the active run")


@dataclass(frozen=True)
class SlotDecision:
    """What one planned fire does; a skip may stand for several slots (`slots`)."""

    slot: datetime
    trigger: Trigger
    action: FireAction
    reason: str | None = None
    slots: int = 1
    cause: str = "overlap"  # what made it skip: "overlap" or "quota"


def batch_decisions(
    spec: JobSpec,
    fires: Iterable[tuple[datetime, Trigger]],
    active: bool,
    quota: GroupQuota | None = None,
    group_active: int = 0,
) -> tuple[list[SlotDecision], int]:
    """What each of one job's fires planned together does, oldest first.

    `active`: whether the job had a run queued, or running on a live instance,
    before these fires. Only such a run is "the previous run still active":
    the fires of one batch (missed slots caught up, or replayed after a clock
    jump) queue behind each other, and claims run them one at a time when the
    overlap is skip, queue or replace. So catchup = "all" with overlap = "skip"
    runs every missed slot, one after another, unless a run was already going,
    in which case they are all skipped, as they would have been on time.

    Skips never flood the history: every skipped slot of the batch with the same
    reason becomes one `skipped` row, at the latest of them, its reason saying
    how many slots it stands for. Returns the decisions and the group's count of
    active runs after them.
    """
    decisions: list[SlotDecision] = []
    skipped: dict[tuple[str, str], list[tuple[datetime, Trigger]]] = {}
    replacing = True  # only the first enqueued fire cancels the active run
    for slot, trigger in fires:
        decision, cause = overlap_decision(spec, active), "overlap"
        if decision.action is not FireAction.SKIP and quota is not None:
            admitted = quota_decision(quota, group_active)
            if admitted.action is FireAction.SKIP:
                decision, cause = admitted, "quota"
            else:
                group_active += 1
        if decision.action is FireAction.SKIP:
            skipped.setdefault((cause, decision.reason or ""), []).append((slot, trigger))
            continue
        if decision.action is FireAction.REPLACE and not replacing:
            decision = FireDecision(FireAction.ENQUEUE)
        replacing = False
        decisions.append(SlotDecision(slot, trigger, decision.action, decision.reason))
    for (cause, reason), slots in skipped.items():
        (first, _), (last, trigger) = slots[0], slots[-1]
        if len(slots) > 1:
            reason = f"{reason} ({len(slots)} slots, {_utc(first)} to {_utc(last)})"
        decisions.append(SlotDecision(last, trigger, FireAction.SKIP, reason, len(slots), cause))
    decisions.sort(key=lambda d: d.slot)
    return decisions, group_active


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def quota_decision(quota: GroupQuota | None, active: int) -> FireDecision:
    """Whether a group with `active` queued or running runs admits one more: a scheduled
    fire beyond max_active is recorded as skipped, a manual trigger is refused."""
    if quota is None or not quota.max_active or active < quota.max_active:
        return FireDecision(FireAction.ENQUEUE)
    return FireDecision(
        FireAction.SKIP,
        f"group {quota.name!r} is at its quota: {active} of max_active = {quota.max_active} "
        "runs queued or running",
    )


def retry_delay(spec: JobSpec, attempt: int, rand: float) -> float:
    """Seconds before retry number `attempt` (1 = the first retry): doubling, jittered, capped."""
    cap = max(DEFAULT_RETRY_DELAY_MAX, spec.retry_delay)
    doublings = max(0, attempt - 1)
    if spec.retry_delay <= 0:
        capped = 0.0
    elif doublings >= math.log2(cap / spec.retry_delay):
        capped = cap  # without computing 2**doublings, which overflows a float past 1023
    else:
        capped = spec.retry_delay * 2**doublings
    return max(0.0, capped * (1 - RETRY_JITTER + 2 * RETRY_JITTER * rand))


def follow_ups(
    spec: JobSpec, run: Run, outcome: Outcome, now: datetime, rand: float
) -> list[NewRun]:
    """Runs to queue after `run` ended with `outcome`: a retry, or the chained jobs.

    A failure with retries left is retried (attempt + 1); `on_failure` fires only
    once the last attempt failed, `on_success` when a run succeeded.
    """
    if outcome.status in RETRYABLE and run.attempt <= spec.retries:
        delay = retry_delay(spec, run.attempt, rand)
        return [
            NewRun(
                job=run.job,
                trigger=Trigger.RETRY,
                not_before=now + timedelta(seconds=delay),
                attempt=run.attempt + 1,
                retry_of=run.id,
                triggered_by=run.triggered_by,
            )
        ]
    if outcome.status is Status.SUCCEEDED:
        targets: Sequence[str] = spec.on_success
    elif outcome.status in RETRYABLE:
        targets = spec.on_failure
    else:
        targets = ()
    return [
        NewRun(job=name, trigger=Trigger.CHAIN, not_before=now, triggered_by=f"{run.job}#{run.id}")
        for name in targets
    ]


def jitter_offset(spec: JobSpec, slot: datetime) -> float:
    """A delay in [0, jitter) derived from (job, slot): the same on every host and restart."""
    if spec.jitter <= 0:
        return 0.0
    # The instant, not its wall-clock spelling: a slot given in another zone is the same slot.
    instant = slot.astimezone(UTC).isoformat()
    digest = hashlib.sha256(f"{spec.name}@{instant}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * spec.jitter
