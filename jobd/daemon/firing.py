"""Firing: the leader turns due slots into runs, exactly once per slot.

What each due job fires is decided in the pure planner (jobd.core.planner.plan_fires);
this module reads what it needs from the store, tells the log what was late or
skipped, and writes the batch fenced by the leader's epoch. It keeps what spans
ticks: when the current round of firing began (a long backlog is not late), and
where a forward clock step began (the slots it skipped replay).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from jobd.core.durations import format_duration
from jobd.core.model import CATCHUP_CAP, MISFIRE_GRACE, Config
from jobd.core.planner import FireBatch, on_time_from, plan_fires
from jobd.core.policies import SlotDecision
from jobd.leader import Term
from jobd.observe.metrics import InstanceMetrics
from jobd.store import Store
from jobd.store.groups import active_by_group
from jobd.system.clock import Clock

log = logging.getLogger("jobd")

DUE_BATCH = 1000  # jobs planned per tick; more due ones are taken on an immediate next tick


class Firing:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: Callable[[], Config],
        metrics: InstanceMetrics,
    ) -> None:
        self.store = store
        self.clock = clock
        self.config = config  # the daemon's, as the last reload left it
        self.metrics = metrics
        self.applied_at: datetime | None = None  # when the caller applied the config
        self.first_term_since: datetime | None = None  # the term taken at start
        # A fire of this tick queued a run due now: the claim need not ask first.
        self.queued_due_now = False
        # When the current round of firing began (None between rounds): a round
        # goes on over the ticks of a long backlog, whose slots are not late.
        self.round_began: datetime | None = None
        self._first_round = True  # slots since the config was applied are on time
        self._replay_from: datetime | None = None  # a forward clock jump's start

    def clock_stepped(self, jump: float, now: datetime) -> None:
        """Say so when the wall clock was stepped: fires follow it (see jobd.core.planner)."""
        if jump > 0:
            # The slots the step skipped were not missed: they replay.
            start = now - timedelta(seconds=jump)
            self._replay_from = min(self._replay_from or start, start)
            log.warning(
                "wall clock jumped forward by %s: skipped slots are replayed, at most %d "
                "per job; beyond that only the latest fires",
                format_duration(jump),
                CATCHUP_CAP,
                extra={"action": "clock.jump"},
            )
        else:
            log.warning(
                "wall clock jumped back by %s: no slot fires twice; jobs wait for their "
                "next slot not yet fired",
                format_duration(-jump),
                extra={"action": "clock.jump"},
            )

    def fire_due(self, now: datetime, term: Term) -> bool:
        """Turn due slots into runs; True when more may be due (a backlog).

        The write is fenced by the epoch of `term`: LeaseLost when a newer leader exists."""
        round_began = self.round_began or now
        self.round_began = None  # unless this round goes on (a backlog, below)
        batch = self.store.due_for_firing(now, DUE_BATCH, self._active_within)
        due, store_now = batch.jobs, batch.store_now
        if not due:
            self._first_round, self._replay_from = False, None
            return False
        assert store_now is not None
        since = term.since
        if self.applied_at is not None and since == self.first_term_since:
            # Slots that fell due between applying the config and taking the guard at
            # start were this daemon's to fire, not fires missed while none led.
            since = min(since, self.applied_at)
        # Against our clock as the store answered, not as the tick began: a slow
        # round trip earlier in the tick (a stall) is no clock difference.
        if not self._clock_agrees(store_now):
            return False
        groups = self.config().groups
        limited = {r.spec.group for r in due if r.spec.group in groups}
        fires = plan_fires(
            [(r.spec, r.next_fire_at) for r in due],  # type: ignore[misc]
            batch.active,
            groups,
            active_by_group(self.store, [g for g in limited if groups[g].max_active]),
            now,
            store_now,
            since,
            on_time_from(round_began, self._replay_from, self._first_round, since),
        )
        self._tell(fires)
        runs = fires.runs
        inserted = self.store.record_fires(runs, fires.advances, fires.replace, epoch=term.epoch)
        if inserted and any(not r.status.final and r.not_before <= store_now for r in runs):
            self.queued_due_now = True
        log.debug(
            "fired %d slots of %d due jobs (%d new rows)",
            len(runs),
            len(due),
            inserted,
            extra={"action": "fire"},
        )
        if len(due) == DUE_BATCH:
            self.round_began = round_began  # a backlog: the next batch is not late
            return True
        self._first_round = False
        self._replay_from = None
        return False

    def _clock_agrees(self, store_now: datetime) -> bool:
        """Claims compare not_before with the store's clock, which may differ from
        ours (another host's database, or our clock was stepped). Beyond
        max_clock_skew, fire times from our clock would run jobs at the wrong time,
        and move their next fire with it: the lease notices at its next renewal;
        until then, no fires. A SQLite store's clock is this host's."""
        skew = (self.clock.now() - store_now).total_seconds()
        limit = self.config().settings.max_clock_skew
        if self.store.backend != "postgresql" or abs(skew) <= limit:
            return True
        log.error(
            "clock differs from the store's by %.1fs (limit %.0fs); not firing",
            skew,
            limit,
            extra={"action": "leader.clock_skew"},
        )
        return False

    def _tell(self, fires: FireBatch) -> None:
        """The log's account of a batch, and the quota refusals' metric."""
        if fires.late:
            log.warning(
                "%d job(s) had slots that fell due over %.0fs before this round of firing "
                "(jobd was stopped or starved, cut off from the store, or not woken): each job's "
                "catchup decides what runs of them (%s)",
                len(fires.late),
                MISFIRE_GRACE,
                ", ".join(fires.late[:5]) + (", ..." if len(fires.late) > 5 else ""),
                extra={"action": "fire.late"},
            )
        for job, warning in fires.warnings:
            log.warning("%s: %s", job, warning, extra={"action": "fire.catchup"})
        for job, group, decision in fires.skips:
            _log_skip(job, decision)
            if decision.cause == "quota" and group is not None:
                self.metrics.quota_refusals.labels(group).inc()

    @property
    def _active_within(self) -> float:
        """A run counts as active for overlap only while its instance is live: its
        lock held (SQLite), or a heartbeat within this. An instance writes one every
        lease_ttl / 3 while it runs something; one silent for half the ttl has
        missed its last one and is dead or cut off (a new leader takes over a
        lease_ttl after the last renewal), and will be marked abandoned. The
        reaper waits the whole ttl, being wrong there would rerun the run; being
        wrong here only queues a slot behind the run instead of skipping it."""
        return self.config().settings.lease_ttl / 2


def _log_skip(job: str, decision: SlotDecision) -> None:
    """A quota skip, or several slots skipped as one row, is worth a warning; a
    single slot skipped for overlap is routine (it is in the history)."""
    by_quota = decision.cause == "quota"
    log.log(
        logging.WARNING if by_quota or decision.slots > 1 else logging.INFO,
        "%s: fire skipped: %s",
        job,
        decision.reason,
        extra={"action": "quota.skipped" if by_quota else "fire.skipped", "job": job},
    )
