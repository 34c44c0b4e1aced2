"""Policies are pure decisions: overlap, retry back-off, follow-up runs, jitter.

Every function takes `now` and its randomness as arguments, so nothing here
freezes or patches the clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobd.core.model import (
    DEFAULT_RETRY_DELAY_MAX,
    GroupQuota,
    JobKind,
    JobSpec,
    Outcome,
    Overlap,
    Run,
    Status,
    Trigger,
)
from jobd.core.policies import (
    RETRY_JITTER,
    FireAction,
    SlotDecision,
    batch_decisions,
    follow_ups,
    jitter_offset,
    overlap_decision,
    retry_delay,
)

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
# rand = 0.5 puts the ±20 % jitter exactly in the middle: the plain doubled delay.
MIDDLE = 0.5


def job(**changes: object) -> JobSpec:
    spec = JobSpec(name="sync", schedule="*/5 * * * *", kind=JobKind.COMMAND, command=("true",))
    return replace(spec, **changes)


def run(attempt: int = 1, **changes: object) -> Run:
    record = Run(
        id=41,
        job="sync",
        trigger=Trigger.SCHEDULE,
        status=Status.RUNNING,
        queued_at=NOW,
        not_before=NOW,
        scheduled_for=NOW,
        attempt=attempt,
        triggered_by="alice@host",
    )
    return replace(record, **changes)


# -- overlap ------------------------------------------------------------------------

OVERLAP_TABLE = [
    (Overlap.SKIP, False, FireAction.ENQUEUE),
    (Overlap.SKIP, True, FireAction.SKIP),
    (Overlap.QUEUE, False, FireAction.ENQUEUE),
    (Overlap.QUEUE, True, FireAction.ENQUEUE),  # the claim waits for the active run
    (Overlap.ALLOW, False, FireAction.ENQUEUE),
    (Overlap.ALLOW, True, FireAction.ENQUEUE),
    (Overlap.REPLACE, False, FireAction.ENQUEUE),
    (Overlap.REPLACE, True, FireAction.REPLACE),
]


@pytest.mark.parametrize(("overlap", "active", "action"), OVERLAP_TABLE)
def test_overlap_decision(overlap: Overlap, active: bool, action: FireAction) -> None:
    decision = overlap_decision(job(overlap=overlap), active)
    assert decision.action is action
    if action is FireAction.ENQUEUE:
        assert decision.reason is None
    else:
        # The reason is recorded on the skipped row and logged: it names the policy.
        assert decision.reason and f"overlap = {overlap.value}" in decision.reason


def test_overlap_table_covers_every_policy() -> None:
    assert {(o, a) for o, a, _ in OVERLAP_TABLE} == {(o, a) for o in Overlap for a in (False, True)}


# -- a batch of fires of one job ---------------------------------------------------------
# Missed slots caught up, or slots replayed after a clock jump, are planned together.

BATCH = [(NOW + timedelta(seconds=i), Trigger.CATCHUP) for i in range(5)]


def actions(decisions: list[SlotDecision]) -> list[FireAction]:
    return [d.action for d in decisions]


@pytest.mark.parametrize("overlap", list(Overlap))
def test_fires_of_one_batch_never_skip_each_other(overlap: Overlap) -> None:
    # Nothing ran before: each missed slot is queued (claims run them one at a time).
    decisions, _ = batch_decisions(job(overlap=overlap), BATCH, active=False)
    assert actions(decisions) == [FireAction.ENQUEUE] * 5
    assert [d.slot for d in decisions] == [slot for slot, _ in BATCH]


def test_a_batch_behind_an_active_run_under_skip_is_one_skipped_row() -> None:
    decisions, _ = batch_decisions(job(overlap=Overlap.SKIP), BATCH, active=True)
    assert len(decisions) == 1
    (skip,) = decisions
    assert (skip.action, skip.slot, skip.slots, skip.cause) == (
        FireAction.SKIP,
        BATCH[-1][0],
        5,
        "overlap",
    )
    assert skip.reason == (
        "overlap = skip: the previous run is still active "
        "(5 slots, 2026-01-05T12:00:00Z to 2026-01-05T12:00:04Z)"
    )


def test_one_skipped_slot_says_nothing_of_counts() -> None:
    decisions, _ = batch_decisions(job(overlap=Overlap.SKIP), BATCH[:1], active=True)
    assert [(d.action, d.reason) for d in decisions] == [
        (FireAction.SKIP, "overlap = skip: the previous run is still active")
    ]


def test_a_batch_behind_an_active_run_under_replace_cancels_it_once() -> None:
    decisions, _ = batch_decisions(job(overlap=Overlap.REPLACE), BATCH, active=True)
    assert actions(decisions) == [FireAction.REPLACE] + [FireAction.ENQUEUE] * 4


@pytest.mark.parametrize("overlap", [Overlap.QUEUE, Overlap.ALLOW])
def test_a_batch_behind_an_active_run_queues_when_the_overlap_says_so(overlap: Overlap) -> None:
    decisions, _ = batch_decisions(job(overlap=overlap), BATCH, active=True)
    assert actions(decisions) == [FireAction.ENQUEUE] * 5


def test_a_group_quota_admits_what_it_has_room_for_and_skips_the_rest_as_one_row() -> None:
    quota = GroupQuota(name="tenant", max_active=3)
    decisions, active = batch_decisions(job(), BATCH, False, quota, group_active=1)
    assert actions(decisions) == [FireAction.ENQUEUE, FireAction.ENQUEUE, FireAction.SKIP]
    assert active == 3
    skip = decisions[-1]
    assert (skip.slot, skip.slots, skip.cause) == (BATCH[-1][0], 3, "quota")
    assert skip.reason is not None and "max_active = 3" in skip.reason and "3 slots" in skip.reason


# -- retry back-off -------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "expected"), [(1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0)])
def test_retry_delay_doubles_each_attempt(attempt: int, expected: float) -> None:
    assert retry_delay(job(retry_delay=30.0), attempt, MIDDLE) == pytest.approx(expected)


def test_retry_delay_attempt_zero_is_the_first_delay() -> None:
    assert retry_delay(job(retry_delay=30.0), 0, MIDDLE) == pytest.approx(30.0)


def test_retry_delay_jitter_bounds() -> None:
    spec = job(retry_delay=10.0)
    assert retry_delay(spec, 1, 0.0) == pytest.approx(10.0 * (1 - RETRY_JITTER))
    assert retry_delay(spec, 1, 0.999999) == pytest.approx(10.0 * (1 + RETRY_JITTER), rel=1e-5)


def test_retry_delay_is_capped() -> None:
    spec = job(retry_delay=30.0)
    assert retry_delay(spec, 30, MIDDLE) == pytest.approx(DEFAULT_RETRY_DELAY_MAX)
    assert retry_delay(spec, 30, 0.0) == pytest.approx(DEFAULT_RETRY_DELAY_MAX * 0.8)


def test_retry_delay_longer_than_the_cap_is_kept() -> None:
    # An operator who asks for a 2 h delay gets 2 h, not the 1 h default cap.
    spec = job(retry_delay=7200.0)
    assert retry_delay(spec, 1, MIDDLE) == pytest.approx(7200.0)
    assert retry_delay(spec, 5, MIDDLE) == pytest.approx(7200.0)


def test_retry_delay_zero_retries_at_once() -> None:
    assert retry_delay(job(retry_delay=0.0), 3, 0.9) == 0.0


@given(
    delay=st.floats(min_value=0.0, max_value=10_000.0),
    attempt=st.integers(min_value=1, max_value=60),
    rand=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_retry_delay_stays_within_jitter_of_the_capped_doubling(
    delay: float, attempt: int, rand: float
) -> None:
    spec = job(retry_delay=delay)
    cap = max(DEFAULT_RETRY_DELAY_MAX, delay)
    plain = min(delay * 2 ** (attempt - 1), cap)
    got = retry_delay(spec, attempt, rand)
    assert plain * (1 - RETRY_JITTER) - 1e-9 <= got <= plain * (1 + RETRY_JITTER) + 1e-9


# -- follow-up runs -------------------------------------------------------------------

FAILED = Outcome(Status.FAILED, exit_code=1, error="exit code 1")


def test_failure_with_retries_left_is_retried() -> None:
    spec = job(retries=2, retry_delay=10.0, on_failure=("page",))
    (retry,) = follow_ups(spec, run(attempt=1), FAILED, NOW, MIDDLE)
    assert retry.job == "sync"
    assert retry.trigger is Trigger.RETRY
    assert retry.attempt == 2
    assert retry.retry_of == 41
    assert retry.triggered_by == "alice@host"
    assert retry.scheduled_for is None  # only a scheduled fire owns its slot
    assert retry.not_before == NOW + timedelta(seconds=10.0)


def test_second_retry_waits_twice_as_long() -> None:
    spec = job(retries=2, retry_delay=10.0)
    (retry,) = follow_ups(spec, run(attempt=2), FAILED, NOW, MIDDLE)
    assert retry.attempt == 3
    assert retry.not_before == NOW + timedelta(seconds=20.0)


def test_on_failure_fires_only_after_the_last_attempt() -> None:
    spec = job(retries=2, on_failure=("page", "log_incident"), on_success=("report",))
    for attempt in (1, 2):
        follows = follow_ups(spec, run(attempt=attempt), FAILED, NOW, MIDDLE)
        assert [f.trigger for f in follows] == [Trigger.RETRY]
    follows = follow_ups(spec, run(attempt=3), FAILED, NOW, MIDDLE)
    assert [(f.job, f.trigger) for f in follows] == [
        ("page", Trigger.CHAIN),
        ("log_incident", Trigger.CHAIN),
    ]
    assert all(f.not_before == NOW and f.attempt == 1 for f in follows)
    assert all(f.triggered_by == "sync#41" for f in follows)


def test_no_retries_means_on_failure_at_once() -> None:
    follows = follow_ups(job(on_failure=("page",)), run(), FAILED, NOW, MIDDLE)
    assert [(f.job, f.trigger) for f in follows] == [("page", Trigger.CHAIN)]


def test_success_chains_on_success() -> None:
    spec = job(retries=2, on_success=("report",), on_failure=("page",))
    follows = follow_ups(spec, run(attempt=2), Outcome(Status.SUCCEEDED, 0), NOW, MIDDLE)
    assert [(f.job, f.trigger, f.triggered_by) for f in follows] == [
        ("report", Trigger.CHAIN, "sync#41")
    ]


def test_success_without_chains_queues_nothing() -> None:
    assert follow_ups(job(retries=3), run(), Outcome(Status.SUCCEEDED, 0), NOW, MIDDLE) == []


@pytest.mark.parametrize("status", [Status.CANCELLED, Status.SKIPPED])
def test_cancelled_or_skipped_queue_nothing(status: Status) -> None:
    # Someone stopped it on purpose (or it never ran): no retry, no alarm chain.
    spec = job(retries=3, on_success=("report",), on_failure=("page",))
    assert follow_ups(spec, run(), Outcome(status, error="x"), NOW, MIDDLE) == []


@pytest.mark.parametrize("status", [Status.TIMED_OUT, Status.ABANDONED])
def test_timed_out_and_abandoned_are_retried_like_failures(status: Status) -> None:
    spec = job(retries=1, retry_delay=5.0, on_failure=("page",))
    (retry,) = follow_ups(spec, run(attempt=1), Outcome(status), NOW, MIDDLE)
    assert (retry.trigger, retry.attempt, retry.retry_of) == (Trigger.RETRY, 2, 41)
    last = follow_ups(spec, run(attempt=2), Outcome(status), NOW, MIDDLE)
    assert [(f.job, f.trigger) for f in last] == [("page", Trigger.CHAIN)]


def test_a_chained_run_of_a_manual_trigger_keeps_the_actor_in_retries() -> None:
    spec = job(retries=1)
    manual = run(trigger=Trigger.MANUAL, scheduled_for=None, triggered_by="bob@laptop")
    (retry,) = follow_ups(spec, manual, FAILED, NOW, MIDDLE)
    assert retry.triggered_by == "bob@laptop"


# -- jitter ----------------------------------------------------------------------------


def test_jitter_zero_is_no_delay() -> None:
    assert jitter_offset(job(jitter=0.0), NOW) == 0.0


def test_jitter_is_deterministic_per_job_and_slot() -> None:
    spec = job(jitter=60.0)
    assert jitter_offset(spec, NOW) == jitter_offset(spec, NOW)
    # The same on another host: it depends on nothing but (job, slot).
    assert jitter_offset(replace(spec, env={"X": "1"}), NOW) == jitter_offset(spec, NOW)
    offsets = {jitter_offset(spec, NOW + timedelta(minutes=5 * i)) for i in range(50)}
    assert len(offsets) > 40  # slots spread out
    assert jitter_offset(replace(spec, name="other"), NOW) != jitter_offset(spec, NOW)


def test_jitter_does_not_depend_on_the_slot_time_zone() -> None:
    from zoneinfo import ZoneInfo

    spec = job(jitter=60.0)
    berlin = NOW.astimezone(ZoneInfo("Europe/Berlin"))
    assert jitter_offset(spec, berlin) == jitter_offset(spec, NOW)


@given(
    jitter=st.floats(min_value=0.001, max_value=86_400.0),
    seconds=st.integers(min_value=0, max_value=10 * 365 * 86_400),
    name=st.text("abcdefghijklmnopqrstuvwxyz_.-0123456789", min_size=1, max_size=30),
)
def test_jitter_within_bounds(jitter: float, seconds: int, name: str) -> None:
    slot = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    offset = jitter_offset(job(name=name, jitter=jitter), slot)
    assert 0.0 <= offset < jitter
