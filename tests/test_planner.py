"""`plan_job(spec, next_fire_at, now, lead_since, on_time_from)`: which slots fire, and how.

Time is an argument: each case names the instants it plans at. DST cases list
the transition and assert exact ISO strings, as cronsim's own tests do.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.core.model import CATCHUP_CAP, MISFIRE_GRACE, Catchup, JobKind, JobSpec, Trigger
from jobd.core.planner import JobPlan, PlannedFire, plan_job

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
EVERY_SECOND = "* * * * * *"
HOUR = timedelta(hours=1)


def job(schedule: str | None = EVERY_SECOND, **changes: object) -> JobSpec:
    spec = JobSpec(name="sync", schedule=schedule, kind=JobKind.COMMAND, command=("true",))
    return replace(spec, **changes)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(plan: JobPlan) -> list[str]:
    return [f.slot.isoformat() for f in plan.fires]


def triggers(plan: JobPlan) -> list[Trigger]:
    return [f.trigger for f in plan.fires]


# -- live slots ------------------------------------------------------------------------


def test_live_slots_all_fire() -> None:
    # Without an on_time_from (a round of firing that is not late, or a clock jump
    # replayed) every slot since leading began fires as scheduled.
    plan = plan_job(job(), T0, T0 + s(3.5), lead_since=T0 - HOUR)
    assert [f.slot for f in plan.fires] == [T0, T0 + s(1), T0 + s(2), T0 + s(3)]
    assert set(triggers(plan)) == {Trigger.SCHEDULE}
    assert plan.next_fire_at == T0 + s(4)
    assert plan.warnings == []


def test_slot_due_exactly_now_fires_once() -> None:
    plan = plan_job(job(), T0, T0, lead_since=T0 - HOUR)
    assert [f.slot for f in plan.fires] == [T0]
    assert plan.next_fire_at == T0 + s(1)


def test_not_yet_due_fires_nothing() -> None:
    plan = plan_job(job(), T0, T0 - s(0.001), lead_since=T0 - HOUR)
    assert plan.fires == []
    assert plan.next_fire_at == T0


def test_backward_clock_jump_fires_nothing_and_keeps_the_next_slot() -> None:
    # The clock was set back an hour after T0 fired: the hour is not replayed, and
    # the next slot stays T0 + 1 s (recomputing from `now` would fire it all again).
    plan = plan_job(job(), T0 + s(1), T0 - HOUR, lead_since=T0 - 2 * HOUR)
    assert plan.fires == []
    assert plan.next_fire_at == T0 + s(1)
    assert plan.warnings == []


def test_forward_clock_jump_within_the_cap_replays_every_slot() -> None:
    plan = plan_job(job(), T0, T0 + s(CATCHUP_CAP - 1), lead_since=T0 - HOUR)
    assert len(plan.fires) == CATCHUP_CAP
    assert set(triggers(plan)) == {Trigger.SCHEDULE}
    assert plan.warnings == []


def test_forward_clock_jump_beyond_the_cap_fires_only_the_latest() -> None:
    now = T0 + s(500.25)
    plan = plan_job(job(), T0, now, lead_since=T0 - HOUR)
    assert [(f.slot, f.trigger) for f in plan.fires] == [(T0 + s(500), Trigger.SCHEDULE)]
    assert plan.next_fire_at == T0 + s(501)
    assert len(plan.warnings) == 1 and "clock jump" in plan.warnings[0]


def test_job_without_schedule_never_fires() -> None:
    plan = plan_job(job(None), T0, T0 + HOUR, lead_since=T0 - HOUR)
    assert plan == JobPlan([], None)


def test_every_interval_is_anchored_on_the_epoch() -> None:
    plan = plan_job(job("@every 10s"), T0, T0 + s(25), lead_since=T0 - HOUR)
    assert [f.slot for f in plan.fires] == [T0, T0 + s(10), T0 + s(20)]
    assert plan.next_fire_at == T0 + s(30)


# -- slots that fell due while leading but were fired late ---------------------------
# The daemon was stopped (SIGSTOP, a frozen VM), cut off from the store, or asleep
# past them because nobody woke it: it passes on_time_from, MISFIRE_GRACE before
# the round of firing began. Earlier unfired slots are missed fires.

STALL_END = T0 + s(6.3)  # stopped just before T0, continued 6.3 s later
ON_TIME_FROM = STALL_END - s(MISFIRE_GRACE)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Catchup.NONE, [(6, Trigger.SCHEDULE)]),
        (Catchup.LATEST, [(5, Trigger.CATCHUP), (6, Trigger.SCHEDULE)]),
        (Catchup.ALL, [*((i, Trigger.CATCHUP) for i in range(6)), (6, Trigger.SCHEDULE)]),
    ],
)
def test_slots_missed_while_stalled_follow_the_catchup_policy(
    policy: Catchup, expected: list[tuple[int, Trigger]]
) -> None:
    plan = plan_job(job(catchup=policy), T0, STALL_END, T0 - HOUR, ON_TIME_FROM)
    assert [(f.slot, f.trigger) for f in plan.fires] == [(T0 + s(i), t) for i, t in expected]
    assert plan.next_fire_at == T0 + s(7)
    assert plan.late


def test_a_resumed_job_the_daemon_slept_past_fires_none_of_it_under_catchup_none() -> None:
    # Resumed at 10:00:00 (next fire 10:00:05), nobody woke the daemon: it woke 4 min
    # later and must not write one row per missed slot.
    resumed_next = at("2026-01-05T10:00:05Z")
    woke = at("2026-01-05T10:04:02.5Z")
    spec = job("*/5 * * * * *", catchup=Catchup.NONE)
    plan = plan_job(spec, resumed_next, woke, T0 - 24 * HOUR, woke - s(MISFIRE_GRACE))
    assert plan.fires == []
    assert plan.next_fire_at == at("2026-01-05T10:04:05Z")
    assert plan.late and plan.warnings == []


def test_a_slot_within_the_grace_is_on_time() -> None:
    now = T0 + s(0.8)
    plan = plan_job(job(catchup=Catchup.NONE), T0, now, T0 - HOUR, now - s(MISFIRE_GRACE))
    assert [(f.slot, f.trigger) for f in plan.fires] == [(T0, Trigger.SCHEDULE)]
    assert not plan.late


def test_on_time_from_before_lead_since_changes_nothing() -> None:
    # A new leader's first round: missed is decided by lead_since, not called late.
    lead = at("2026-01-05T10:40:00Z")
    spec = job(TEN_MIN, catchup=Catchup.LATEST)
    plan = plan_job(spec, DOWN_NEXT, lead + s(0.1), lead, lead - s(5))
    assert [(f.slot.strftime("%H:%M"), f.trigger) for f in plan.fires] == [
        ("10:30", Trigger.CATCHUP),
        ("10:40", Trigger.SCHEDULE),
    ]
    assert not plan.late


def test_late_slots_are_capped_like_missed_ones() -> None:
    now = T0 + s(300.5)
    plan = plan_job(job(catchup=Catchup.ALL), T0, now, T0 - HOUR, now - s(MISFIRE_GRACE))
    assert len(plan.fires) == CATCHUP_CAP + 1  # the cap of missed ones, and the on-time one
    assert plan.fires[-1] == PlannedFire(T0 + s(300), Trigger.SCHEDULE)
    assert "missed slots" in plan.warnings[0]


# -- missed slots: the catchup policy ------------------------------------------------
# Down from before 10:00 until 10:45:30; the job fires every 10 minutes.

TEN_MIN = "*/10 * * * *"
DOWN_NEXT = at("2026-01-05T10:00:00Z")
BACK = at("2026-01-05T10:45:30Z")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Catchup.NONE, []),
        (Catchup.LATEST, ["10:40"]),
        (Catchup.ALL, ["10:00", "10:10", "10:20", "10:30", "10:40"]),
    ],
)
def test_missed_slots_follow_the_catchup_policy(policy: Catchup, expected: list[str]) -> None:
    plan = plan_job(job(TEN_MIN, catchup=policy), DOWN_NEXT, BACK + s(0.2), lead_since=BACK)
    assert [f.slot.strftime("%H:%M") for f in plan.fires] == expected
    assert set(triggers(plan)) <= {Trigger.CATCHUP}
    assert plan.next_fire_at == at("2026-01-05T10:50:00Z")
    assert plan.warnings == []


@pytest.mark.parametrize("policy", list(Catchup))
def test_live_slots_after_lead_since_fire_whatever_the_policy(policy: Catchup) -> None:
    # The first tick ran late: 10:50 fell due after leading began, so it is live.
    plan = plan_job(job(TEN_MIN, catchup=policy), DOWN_NEXT, at("2026-01-05T10:50:01Z"), BACK)
    assert plan.fires[-1].slot == at("2026-01-05T10:50:00Z")
    assert plan.fires[-1].trigger is Trigger.SCHEDULE
    assert [f.trigger for f in plan.fires[:-1]] == [Trigger.CATCHUP] * (len(plan.fires) - 1)


def test_a_slot_exactly_at_lead_since_is_live_not_missed() -> None:
    lead = at("2026-01-05T10:40:00Z")
    plan = plan_job(job(TEN_MIN, catchup=Catchup.LATEST), DOWN_NEXT, lead + s(0.1), lead)
    assert [(f.slot.strftime("%H:%M"), f.trigger) for f in plan.fires] == [
        ("10:30", Trigger.CATCHUP),
        ("10:40", Trigger.SCHEDULE),
    ]


def test_catchup_window_limits_all() -> None:
    spec = job(TEN_MIN, catchup=Catchup.ALL, catchup_window=25 * 60.0)
    plan = plan_job(spec, DOWN_NEXT, BACK, lead_since=BACK)
    # The window reaches back to 10:20:30: 10:30 and 10:40.
    assert [f.slot.strftime("%H:%M") for f in plan.fires] == ["10:30", "10:40"]


def test_catchup_window_limits_latest() -> None:
    spec = job(TEN_MIN, catchup=Catchup.LATEST, catchup_window=3 * 60.0)
    plan = plan_job(spec, DOWN_NEXT, BACK, lead_since=BACK)
    assert plan.fires == []  # 10:40 is older than 3 minutes
    assert plan.next_fire_at == at("2026-01-05T10:50:00Z")


def test_catchup_latest_never_reaches_before_next_fire_at() -> None:
    # Nothing was missed: the only slot before lead_since had fired already.
    spec = job(TEN_MIN, catchup=Catchup.LATEST)
    plan = plan_job(spec, at("2026-01-05T10:50:00Z"), BACK + s(1), lead_since=BACK)
    assert plan.fires == []


def test_catchup_all_is_capped_with_a_warning() -> None:
    plan = plan_job(job(catchup=Catchup.ALL), T0, T0 + s(150.5), lead_since=T0 + s(150.5))
    assert len(plan.fires) == CATCHUP_CAP
    # The latest 100, oldest first.
    assert plan.fires[0].slot == T0 + s(51)
    assert plan.fires[-1].slot == T0 + s(150)
    assert set(triggers(plan)) == {Trigger.CATCHUP}
    assert len(plan.warnings) == 1
    assert "151 missed slots" in plan.warnings[0] and f"latest {CATCHUP_CAP}" in plan.warnings[0]


def test_catchup_all_exactly_at_the_cap_has_no_warning() -> None:
    plan = plan_job(job(catchup=Catchup.ALL), T0, T0 + s(99.5), lead_since=T0 + s(99.5))
    assert len(plan.fires) == CATCHUP_CAP
    assert plan.warnings == []


def test_catchup_after_a_long_outage_of_an_every_second_job() -> None:
    # A day down: the planner walks at most a day of slots and keeps the last 100.
    back = T0 + timedelta(days=2)
    plan = plan_job(job(catchup=Catchup.ALL), T0, back + s(0.5), lead_since=back + s(0.5))
    assert [f.slot for f in plan.fires] == [back - s(99 - i) for i in range(CATCHUP_CAP)]
    assert plan.warnings and "missed slots" in plan.warnings[0]


# -- DST ---------------------------------------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST →
# 02:00 CET (01:00Z), so 02:00–02:59 local happens twice (00:00–00:59Z, 01:00–01:59Z).
BERLIN = "Europe/Berlin"


def test_dst_spring_forward_gap_fires_once_right_after_the_gap() -> None:
    spec = job("30 2 * * *", timezone=BERLIN)
    plan = plan_job(spec, at("2026-03-29T01:00:00Z"), at("2026-03-29T01:00:00.5Z"), T0)
    assert iso(plan) == ["2026-03-29T01:00:00+00:00"]
    assert plan.next_fire_at is not None
    assert plan.next_fire_at.isoformat() == "2026-03-30T00:30:00+00:00"


def test_dst_fall_back_fold_fires_once_on_the_first_pass() -> None:
    spec = job("30 2 * * *", timezone=BERLIN)
    # Planning late, during the second pass of 02:xx, fires the first-pass slot once.
    plan = plan_job(spec, at("2026-10-25T00:30:00Z"), at("2026-10-25T01:45:00Z"), T0)
    assert iso(plan) == ["2026-10-25T00:30:00+00:00"]
    assert plan.next_fire_at is not None
    assert plan.next_fire_at.isoformat() == "2026-10-26T01:30:00+00:00"


def test_dst_fall_back_catchup_latest_during_the_second_pass() -> None:
    # Down over 02:30 CEST (00:30Z), back at 02:10 CET (01:10Z): the missed fire is
    # 40 minutes old, not yesterday's, so catchup = latest must run it.
    spec = job("30 2 * * *", timezone=BERLIN, catchup=Catchup.LATEST)
    back = at("2026-10-25T01:10:00Z")
    plan = plan_job(spec, at("2026-10-25T00:30:00Z"), back, lead_since=back)
    assert [(f.slot.isoformat(), f.trigger) for f in plan.fires] == [
        ("2026-10-25T00:30:00+00:00", Trigger.CATCHUP)
    ]


def test_dst_wildcard_hour_fires_on_real_elapsed_time_through_the_fold() -> None:
    spec = job("*/30 * * * *", timezone=BERLIN)
    plan = plan_job(spec, at("2026-10-24T23:30:00Z"), at("2026-10-25T02:10:00Z"), T0)
    assert iso(plan) == [
        "2026-10-24T23:30:00+00:00",
        "2026-10-25T00:00:00+00:00",  # 02:00 CEST
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST
        "2026-10-25T01:00:00+00:00",  # 02:00 CET
        "2026-10-25T01:30:00+00:00",  # 02:30 CET
        "2026-10-25T02:00:00+00:00",
    ]


def test_dst_catchup_all_over_the_25_hour_day() -> None:
    spec = job("0 * * * *", timezone=BERLIN, catchup=Catchup.ALL, catchup_window=7 * 86400.0)
    back = at("2026-10-25T22:30:00Z")  # 23:30 CET
    plan = plan_job(spec, at("2026-10-24T22:00:00Z"), back, lead_since=back)
    slots = [f.slot for f in plan.fires]
    assert len(slots) == 25  # midnight to 23:00 local, 02:00 twice
    assert all(b - a == HOUR for a, b in pairwise(slots))


def test_dst_new_york_spring_forward() -> None:
    spec = job(
        "30 2 * * *", timezone="America/New_York", catchup=Catchup.ALL, catchup_window=7 * 86400.0
    )
    back = at("2026-03-09T12:00:00Z")
    plan = plan_job(spec, at("2026-03-07T07:30:00Z"), back, lead_since=back)
    assert iso(plan) == [
        "2026-03-07T07:30:00+00:00",  # 02:30 EST
        "2026-03-08T07:00:00+00:00",  # 02:30 does not exist: 03:00 EDT
        "2026-03-09T06:30:00+00:00",  # 02:30 EDT
    ]


# -- properties ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(min_value=0, max_value=4_000), min_size=1, max_size=40),
    expr=st.sampled_from([EVERY_SECOND, "*/2 * * * * *", "*/7 * * * * *", "@every 3s"]),
)
def test_ticking_at_any_pace_fires_every_slot_exactly_once(steps: list[int], expr: str) -> None:
    """However late or early the ticks come (ms apart), a leader fires each slot once."""
    spec = job(expr)
    plan = plan_job(spec, T0, T0 - s(1), T0 - HOUR)
    next_fire = T0
    now = T0 - s(0.5)
    fired: list[datetime] = []
    for step in steps:
        now += timedelta(milliseconds=step)
        plan = plan_job(spec, next_fire, now, lead_since=T0 - HOUR)
        assert all(f.trigger is Trigger.SCHEDULE for f in plan.fires)
        fired += [f.slot for f in plan.fires]
        assert plan.next_fire_at is not None and plan.next_fire_at > now
        next_fire = plan.next_fire_at
    assert len(fired) == len(set(fired))
    assert fired == sorted(fired)
    # Every slot up to the last tick, none missing.
    expected, slot = [], T0
    while slot <= now:
        expected.append(slot)
        slot = plan_job(spec, slot, slot, T0 - HOUR).next_fire_at  # type: ignore[assignment]
    assert fired == expected


@settings(max_examples=60, deadline=None)
@given(
    down=st.integers(min_value=0, max_value=600_000),
    late=st.integers(min_value=0, max_value=5_000),
    policy=st.sampled_from(list(Catchup)),
)
def test_restart_plans_are_bounded_and_ordered(down: int, late: int, policy: Catchup) -> None:
    spec = job("*/3 * * * * *", catchup=policy)
    lead = T0 + timedelta(milliseconds=down)
    now = lead + timedelta(milliseconds=late)
    plan = plan_job(spec, T0, now, lead_since=lead)
    slots = [f.slot for f in plan.fires]
    assert slots == sorted(set(slots))
    assert all(T0 <= slot <= now for slot in slots)
    missed = [f for f in plan.fires if f.trigger is Trigger.CATCHUP]
    assert all(f.slot < lead for f in missed)
    assert all(f.slot >= lead for f in plan.fires if f.trigger is Trigger.SCHEDULE)
    if policy is Catchup.NONE:
        assert missed == []
    elif policy is Catchup.LATEST:
        assert len(missed) <= 1
    else:
        assert len(missed) <= CATCHUP_CAP
    assert plan.next_fire_at is not None and plan.next_fire_at > now
