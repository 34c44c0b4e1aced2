"""The daemon's periodic chores: heartbeats and the look for lost runs (where
liveness is judged by heartbeat), and pruning the history, hourly, on the leader.

They are `schedule` timers, whose next times are naive wall-clock instants
(`datetime.now()`). A wall clock stepped back an hour would silence them for that
hour, and other instances would take this live one for dead; so the loop calls
`rebuild()` whenever it detects a clock step (jobd.system.clock.JumpDetector),
which starts every timer's period again from now.

The loop runs them after a tick's fires and claims, and early when they are due
within `slack`: a few seconds early is harmless to a heartbeat, a reap, a prune
or the leader's renewal, and it folds timers that drift apart into one wake-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import schedule

from jobd.core.model import Config
from jobd.daemon.heartbeats import Heartbeats
from jobd.errors import first_line
from jobd.leader import LeaderGuard
from jobd.store import Store
from jobd.store.admin import prune as prune_history
from jobd.store.groups import prune_retained
from jobd.system.clock import Clock

log = logging.getLogger("jobd")

PRUNE_EVERY = 3600.0  # history retention, as the SPEC's `history` setting promises


class Housekeeping:
    """The timers of one daemon, whose store, host, clock and leader guard its
    `heartbeats` name."""

    def __init__(
        self,
        heartbeats: Heartbeats,
        config: Callable[[], Config],
        store_ok: Callable[[], bool],
        failures: tuple[type[BaseException], ...],
    ) -> None:
        self.heartbeats = heartbeats
        self.store: Store = heartbeats.store
        self.host = heartbeats.host
        self.clock: Clock = heartbeats.clock
        self.leader: LeaderGuard = heartbeats.leader
        self.config = config  # the daemon's, as the last reload left it
        self.store_ok = store_ok
        self.failures = failures  # what a failed prune raises: said, then tried next hour
        self.timers = schedule.Scheduler()
        self._pruner: threading.Thread | None = None

    def rebuild(self) -> None:
        """Every timer's period starts again now: at start, and after a clock step."""
        self.timers.clear()
        beats = self.heartbeats
        if not beats.by_lock:
            # An instance is lost after lease_ttl of silence; looking often keeps the
            # abandoned marking close to that, at one cheap query per look.
            self.timers.every(beats.heartbeat_every).seconds.do(beats.heartbeat)
            self.timers.every(beats.reap_every).seconds.do(lambda: beats.reap(self.store_ok()))
        self.timers.every(PRUNE_EVERY).seconds.do(self.prune_in_background)

    @property
    def slack(self) -> float:
        """Housekeeping (and the leader's renewal) due within this is done early by a
        tick that is awake anyway (see the module's docstring)."""
        return self.heartbeats.heartbeat_every / 4

    def run_due(self) -> None:
        """Run the timers due within `slack` seconds."""
        soon = datetime.now() + timedelta(seconds=self.slack)  # schedule's clock
        for job in sorted(j for j in self.timers.jobs if j.next_run and j.next_run <= soon):
            job.run()

    @property
    def idle_seconds(self) -> float | None:
        """Seconds until the next timer is due; None without timers."""
        return self.timers.idle_seconds

    def prune_in_background(self) -> None:
        """Enforce `history` retention hourly, on the leader only, off the loop's thread:
        a first prune of a large store may take minutes and fires must not wait."""
        if not self.leader.leading or (self._pruner and self._pruner.is_alive()):
            return
        config = self.config()
        keep = config.settings.history_keep or None
        max_age = config.settings.history_max_age or None
        quotas = [q for q in config.groups.values() if q.max_retained]

        def prune() -> None:
            try:
                counts = prune_history(self.store, keep, max_age, self.clock.now())
                for quota in quotas:  # [groups.NAME] max_retained, across the group
                    for job, n in prune_retained(self.store, quota).items():
                        counts[job] = counts.get(job, 0) + n
                if counts:
                    total = sum(counts.values())
                    self.store.audit("prune", f"jobd@{self.host}", None, {"deleted": counts})
                    log.info("pruned %d old runs", total, extra={"action": "history.prune"})
            except self.failures as exc:
                log.warning("prune failed: %s", first_line(exc), extra={"action": "history.prune"})
            finally:
                self.store.db.close()  # this thread's own connection

        self._pruner = threading.Thread(target=prune, name="prune", daemon=True)
        self._pruner.start()
