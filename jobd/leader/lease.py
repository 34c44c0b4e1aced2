"""`leader = table`: a lease row with a fencing epoch, timed by the database's clock.

The holder renews every ttl/3. A holder that cannot renew stops leading at
ttl − margin after the start of its last successful renewal, measured on its own
monotonic clock, so it has stepped down before any standby can take the
expired lease (which the database dates from a moment after that start). Every
enqueue carries the term's epoch, and the store rejects a stale one: that covers
a holder paused between its check and its write.

A standby asks again when the holder's lease runs out by the database's clock
(at most every second), so failover takes about lease_ttl after the last renewal.

Each poll also compares this host's clock with the database's. Beyond 2 s it
warns; beyond `max_clock_skew` it refuses to lead, and never even takes a free
lease, because its schedules would fire at the wrong time. A comparison is only
as good as its round trip is short: one taken across a stall is discarded.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from jobd.core.model import MAX_CLOCK_SKEW_WARN
from jobd.leader import Term
from jobd.store import STORE_ERRORS, Store
from jobd.store.lease import LeaseState
from jobd.system.clock import Clock

log = logging.getLogger("jobd")

STANDBY_POLL = 1.0  # a standby asks at least this often (a released lease is free at once)
EXPIRY_SLACK = 0.02  # ask just after the expiry, not just before it
# A clock comparison is off by up to half its round trip: one that took longer
# than this (a stalled store) would report a stall as a clock difference.
SKEW_SAMPLE_MAX_RTT = 1.0


class TableLeader:
    name = "table"

    def __init__(
        self,
        store: Store,
        instance: str,
        host: str,
        ttl: float,
        max_skew: float,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.instance = instance
        self.host = host
        self.ttl = ttl
        self.max_skew = max_skew
        self.margin = max(0.2, ttl / 5)
        self.clock = clock or Clock()
        self.clock_skew: float | None = None  # seconds this host is ahead of the database
        self._skew_level = "unknown"  # unknown | ok | warn | refuse
        self._term: Term | None = None
        self._valid_until = 0.0  # monotonic
        self._next_poll = 0.0  # monotonic
        self._held_once = False

    # -- the term ---------------------------------------------------------------

    def term(self) -> Term | None:
        if self._term is not None and self.clock.monotonic() >= self._valid_until:
            self._lose("lease not renewed in time; stepping down")
        return self._term

    @property
    def leading(self) -> bool:
        return self.term() is not None

    @property
    def epoch(self) -> int | None:
        """The current term's fencing epoch (exported as jobd_lease_epoch)."""
        term = self.term()
        return term.epoch if term else None

    def step_down(self, reason: str) -> None:
        if self._term is not None:
            self._lose(f"{reason}; stepping down")
        self._next_poll = self.clock.monotonic()

    def _lose(self, message: str) -> None:
        log.warning(message, extra={"action": "leader.lost"})
        self._term = None

    # -- polling ------------------------------------------------------------------

    def poll(self) -> bool:
        try:
            if self._skew_level in ("unknown", "refuse"):
                # Measure before competing: a host with a wrong clock must not even
                # take a free lease, or it would churn the epoch every second.
                before, sent = self.clock.now(), self.clock.monotonic()
                state = self.store.lease_state(self.instance)
                if self._measure(before, sent, state) == "refuse":
                    self._standby(sent, state)
                    return False
            before, sent = self.clock.now(), self.clock.monotonic()
            state = self.store.acquire_lease(self.instance, self.host, self.ttl)
        except STORE_ERRORS:
            # Keep leading only until the lease runs out on our clock; ask again soon.
            self._next_poll = self.clock.monotonic() + min(STANDBY_POLL, self.ttl / 3)
            return self.leading
        if self._measure(before, sent, state) == "refuse":
            if state.held:
                with contextlib.suppress(*STORE_ERRORS):
                    self.store.release_lease(self.instance)
            if self._term is not None:
                self._lose("clock skew beyond max_clock_skew; stepping down")
            self._standby(sent, state)
            return False
        if not state.held:
            if self._term is not None:
                self._lose(f"lease taken by {state.holder} (epoch {state.epoch}); stepping down")
            self._standby(sent, state)
            return False
        self._held_once = True
        if self._term is None or self._term.epoch != state.epoch:
            self._term = Term(since=state.db_now, epoch=state.epoch)
            log.info(
                "leading now (lease epoch %d, ttl %.3gs)",
                state.epoch,
                self.ttl,
                extra={"action": "leader.acquired"},
            )
        self._valid_until = sent + self.ttl - self.margin
        self._next_poll = sent + self.ttl / 3
        return True

    def _standby(self, sent: float, state: LeaseState) -> None:
        wait = min(STANDBY_POLL, self.ttl / 3)
        if state.holder is not None and state.holder != self.instance:
            wait = min(wait, state.seconds_left + EXPIRY_SLACK)
        self._next_poll = sent + wait

    def _measure(self, before: datetime, sent: float, state: LeaseState) -> str:
        """Record how far this host's clock is from the database's; return the verdict
        (the last one, when this sample is discarded for a slow round trip)."""
        after = self.clock.now()
        round_trip = self.clock.monotonic() - sent
        if round_trip > SKEW_SAMPLE_MAX_RTT:
            log.debug(
                "clock comparison discarded: the store took %.1fs to answer",
                round_trip,
                extra={"action": "leader.clock_skew"},
            )
            return self._skew_level
        host_now = before + (after - before) / 2
        skew = (host_now - state.db_now).total_seconds()
        self.clock_skew = round(skew, 3)
        level = "ok"
        if abs(skew) > self.max_skew:
            level = "refuse"
        elif abs(skew) > MAX_CLOCK_SKEW_WARN:
            level = "warn"
        if level != self._skew_level:
            self._report_skew(level, skew)
        self._skew_level = level
        return level

    def _report_skew(self, level: str, skew: float) -> None:
        extra = {"action": "leader.clock_skew"}
        if level == "refuse":
            log.error(
                "this host's clock differs from the store's by %+.1fs (limit %.0fs, "
                "max_clock_skew); refusing to lead until it is fixed",
                skew,
                self.max_skew,
                extra=extra,
            )
        elif level == "warn":
            log.warning(
                "this host's clock differs from the store's by %+.1fs; fix NTP "
                "(jobd refuses to lead beyond %.0fs)",
                skew,
                self.max_skew,
                extra=extra,
            )
        elif self._skew_level != "unknown":
            log.info("this host's clock agrees with the store's again", extra=extra)

    def next_poll_in(self) -> float:
        return max(0.0, self._next_poll - self.clock.monotonic())

    def release(self) -> None:
        # Also after stepping down on our own clock: the row may still name us for up
        # to `margin`, and a standby should not have to wait that out.
        if self._held_once:
            with contextlib.suppress(*STORE_ERRORS):
                self.store.release_lease(self.instance)
        self._term = None
