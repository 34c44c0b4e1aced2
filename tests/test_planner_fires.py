"""`plan_fires(...)` and `on_time_from(...)`: what one round of firing records, planned
without a store. Time and the store's clock are arguments; each case names them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from jobd.core.model import (
    MISFIRE_GRACE,
    Catchup,
    GroupQuota,
    JobKind,
    JobSpec,
    NewRun,
    Overlap,
    Status,
    Trigger,
)
from jobd.core.planner import on_time_from, plan_fires
from jobd.core.policies import jitter_offset

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
EVERY_SECOND = "* * * * * *"


def job(name: str = "sync", **changes: object) -> JobSpec:
    spec = JobSpec(name=name, schedule=EVERY_SECOND, kind=JobKind.COMMAND, command=("true",))
    return replace(spec, **changes)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def test_an_on_time_slot_is_queued_due_now_on_the_stores_clock() -> None:
    now = T0 + s(0.2)
    store_now = T0 + s(30)  # the database's clock is 30 s ahead of ours
    batch = plan_fires([(job(), T0)], set(), {}, {}, now, store_now, T0 - s(60), T0 - s(1))
    assert batch.runs == [NewRun("sync", Trigger.SCHEDULE, not_before=store_now, scheduled_for=T0)]
    assert batch.advances == {"sync": (T0 + s(1), T0)}
    assert (batch.replace, batch.late, batch.warnings, batch.skips) == ([], [], [], [])


def test_jitter_delays_a_run_by_the_same_amount_on_the_stores_clock() -> None:
    spec = job(jitter=10.0)
    delay = jitter_offset(spec, T0)
    assert delay > 0.2
    store_now = T0 - s(5)
    batch = plan_fires([(spec, T0)], set(), {}, {}, T0 + s(0.2), store_now, T0 - s(60), T0)
    [run] = batch.runs
    assert run.not_before == store_now + s(delay) - s(0.2)


def test_a_job_not_yet_due_fires_nothing_and_keeps_its_next_fire() -> None:
    later = T0 + s(5)
    batch = plan_fires([(job(), later)], set(), {}, {}, T0, T0, T0 - s(60), T0)
    assert batch.runs == [] and batch.advances == {"sync": (later, later)}


def test_an_active_run_makes_a_skip_job_record_its_fire_as_skipped() -> None:
    batch = plan_fires([(job(), T0)], {"sync"}, {}, {}, T0, T0, T0 - s(60), T0 - s(1))
    [run] = batch.runs
    assert (run.status, run.scheduled_for) == (Status.SKIPPED, T0) and run.error
    [(name, group, decision)] = batch.skips
    assert (name, group, decision.cause) == ("sync", None, "overlap")


def test_a_replace_job_names_the_run_it_replaces() -> None:
    spec = job(overlap=Overlap.REPLACE)
    batch = plan_fires([(spec, T0)], {"sync"}, {}, {}, T0, T0, T0 - s(60), T0 - s(1))
    assert [r.status for r in batch.runs] == [Status.QUEUED]
    assert batch.replace == ["sync"]


def test_a_groups_quota_is_counted_across_the_jobs_of_one_batch() -> None:
    quota = GroupQuota("tenant", max_active=2)
    specs = [job(name, group="tenant") for name in ("a", "b", "c")]
    batch = plan_fires(
        [(spec, T0) for spec in specs], set(), {"tenant": quota}, {"tenant": 1},
        T0, T0, T0 - s(60), T0 - s(1),
    )  # fmt: skip
    assert [(r.job, r.status) for r in batch.runs] == [
        ("a", Status.QUEUED),
        ("b", Status.SKIPPED),
        ("c", Status.SKIPPED),
    ]
    assert [(name, group, d.cause) for name, group, d in batch.skips] == [
        ("b", "tenant", "quota"),
        ("c", "tenant", "quota"),
    ]


def test_slots_missed_while_leading_are_late_and_their_catchup_decides() -> None:
    spec = job(catchup=Catchup.LATEST)
    now = T0 + s(10)
    # Leading for a minute, but this round began only now: slots T0 .. T0+8 are late.
    batch = plan_fires([(spec, T0)], set(), {}, {}, now, now, T0 - s(60), now - s(1))
    assert batch.late == ["sync"]
    assert [(r.trigger, r.scheduled_for) for r in batch.runs] == [
        (Trigger.CATCHUP, T0 + s(8)),
        (Trigger.SCHEDULE, T0 + s(9)),
        (Trigger.SCHEDULE, T0 + s(10)),
    ]
    assert batch.advances == {"sync": (now + s(1), now)}


def test_on_time_from_allows_the_misfire_grace_before_the_round() -> None:
    assert on_time_from(T0, None, False, T0 - s(60)) == T0 - s(MISFIRE_GRACE)


def test_on_time_from_never_makes_the_first_round_late() -> None:
    assert on_time_from(T0, None, True, T0 - s(60)) == T0 - s(60)
    assert on_time_from(T0, None, True, T0 + s(60)) == T0 - s(MISFIRE_GRACE)


def test_on_time_from_moves_back_over_a_forward_clock_step() -> None:
    stepped_from = T0 - s(3600)
    assert on_time_from(T0, stepped_from, False, T0 - s(7200)) == stepped_from - s(MISFIRE_GRACE)
    assert on_time_from(T0, T0 + s(5), False, T0 - s(60)) == T0 - s(MISFIRE_GRACE)
