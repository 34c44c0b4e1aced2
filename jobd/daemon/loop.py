"""The daemon: the only module that wires store, leader guard, executor, signals.

`run()` loops over `tick(now)`, which does one round of work and returns how long
to sleep: until the next due fire, the next queued run, the next housekeeping
timer or the leader's next renewal, whichever comes first. Signals, finished
runs and `jobd trigger` wake the sleep early. Nothing spins.

Beside it: firing (due slots into runs, planned in jobd.core.planner),
heartbeats (liveness, the fence, lost runs) and housekeeping (the timers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

import peewee as pw

from jobd import __version__
from jobd.core.model import Config, Settings
from jobd.daemon.firing import Firing
from jobd.daemon.heartbeats import Heartbeats
from jobd.daemon.housekeeping import Housekeeping
from jobd.daemon.startup import check_users, open_wakeups, serve_metrics, start_when_store_answers
from jobd.errors import ConfigError, first_line
from jobd.leader import Term
from jobd.leader.choose import choose_leader
from jobd.observe.dispatcher import Notifications
from jobd.observe.metrics import MetricsServer, instance_metrics
from jobd.observe.observer import RunObserver
from jobd.runs.containment import containment
from jobd.runs.executor import Executor
from jobd.store import STORE_ERRORS, ApplyReport, Store, mask_url
from jobd.store.files import StoreVanished
from jobd.store.lease import LeaseLost
from jobd.system.clock import Clock, JumpDetector, nap
from jobd.system.hooks import HOST
from jobd.system.log import mask_secrets
from jobd.system.sdnotify import Notifier
from jobd.system.signals import SignalFlags
from jobd.system.storewait import PROBE_EVERY, OutageLog
from jobd.system.waker import Waker

log = logging.getLogger("jobd")

IDLE_CAP = 60.0  # wake at least this often, so a missed wake-up costs at most a minute
# ... unless nothing can be missed: liveness is a lock, triggers poke the wake
# socket and the kernel reports clock steps. Then an idle daemon sleeps until its
# next fire (or this), as APScheduler and systemd timers do.
QUIET_IDLE_CAP = 3600.0
FIRE_BUDGET = 2.0  # seconds of firing batches per tick before claiming runs
COALESCE = 0.005  # seconds to gather more run events after a wake-up while runs go on
ACTIVE_POLL = 0.5  # while runs go on: how often to look for cancel requests
STORE_FAILURES = (*STORE_ERRORS, pw.DatabaseError)
NOTIFY_DRAIN = 5.0  # seconds a stopping daemon gives pending notifications


class Daemon:
    """One jobd instance: `run()` until stopped; `tick(now)` is one round of it."""

    def __init__(
        self,
        config: Config,
        store: Store,
        reload_config: Callable[[], Config] | None = None,
        clock: Clock | None = None,
        contain: bool = False,
        file_digests: Mapping[str, str] | None = None,
        flags: SignalFlags | None = None,
    ) -> None:
        # Said once here, while the parsed jobs are at hand; the daemon keeps only
        # the settings (the store holds the jobs) and what each config job must be
        # (`file_digests`, name → JobSpec.digest, when the jobs were parsed elsewhere).
        check_users(config)
        self.file_digests = dict(file_digests) if file_digests is not None else config.digests()
        self.config = _settings_only(config)
        self.store = store
        store.hooks = HOST  # it runs here: it pokes this host's daemons and asks its locks
        self.reload_config = reload_config
        self.clock = clock or Clock.from_env()
        self.host = socket.gethostname()
        self.instance = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if contain:
            # Process-wide (a child subreaper, cgroups): `jobd run` only, not a
            # Daemon built inside another program, such as a test.
            containment.setup(self.instance)
        s = config.settings
        self.waker = Waker.for_store(store, s.max_backoff)
        # `jobd run` hands over the flags it waited for the store with: a stop asked
        # for meanwhile is not lost.
        self.flags = flags or SignalFlags()
        self.flags.on_signal = self.waker.wake
        self.executor = Executor(store, self.instance, s, self.waker.wake)
        self.leader = choose_leader(store, s, self.instance, self.host, self.clock, self.waker.wake)
        self.notifier = Notifier.from_env()
        self.metrics = instance_metrics()
        self.notifications = Notifications(
            store, config, self.host, mask=mask_secrets, count=self.metrics.count_notification
        )
        self.executor.observer = self.observer = RunObserver(self.metrics, self.notifications)
        self.heartbeats = Heartbeats(
            store, self.instance, self.host, lambda: self.config, self.clock,
            self.executor, self.leader, self.observer, self.waker.wake,
        )  # fmt: skip
        self.housekeeping = Housekeeping(
            self.heartbeats, lambda: self.config, lambda: self.store_ok, STORE_FAILURES
        )
        self.firing = Firing(store, self.clock, lambda: self.config, self.metrics)
        # A store outage is probed every PROBE_EVERY and told with back-off.
        self.outage = OutageLog(s.max_backoff)
        self.store_ok = True
        self._stop_deadline: float | None = None
        self._metrics_server: MetricsServer | None = None
        self._status_text = ""
        self._jumps = JumpDetector()
        self._quiet = False  # see QUIET_IDLE_CAP

    def _stopping(self) -> bool:
        return self.flags.stop_requests > 0

    # -- the loop -----------------------------------------------------------------

    def run(self) -> int:
        self.flags.install()
        self.waker.install_signal_wakeup()
        settings, stopping = self.config.settings, self._stopping
        self.store.limit_waits(store_wait(settings), stopping)
        try:
            if not start_when_store_answers(
                self.start, self.store, settings.max_backoff, self.notifier, stopping
            ):
                self._abandon_start()
                return 0
            while True:
                if self.flags.reload_requested:
                    self.flags.reload_requested = False
                    self.reload()
                now = self.clock.now()
                self._check_clock(now)
                timeout = self._safe_tick(now)
                if self._finished():
                    break
                self._notify_tick()
                watchdog = self.notifier.seconds_until_watchdog(time.monotonic())
                woken = self.waker.sleep_precisely(
                    timeout if watchdog is None else min(timeout, watchdog)
                )
                if woken and self.executor.busy:
                    # Runs that end in quick succession are recorded, and their slots
                    # refilled, a batch per tick: a tick for each would cost more
                    # than the runs. Fires are timed wake-ups, never delayed by this.
                    nap(COALESCE)
            self._shutdown()
        except StoreVanished as exc:
            log.error("%s", exc, extra={"action": "store.vanished"})
            _end_runs_unrecorded(self.executor, self.config.settings.kill_grace)
            raise
        finally:
            self.flags.restore()
            self.waker.close()
        return 0

    def tick(self, now: datetime) -> float:
        """One round: record progress, housekeeping, fire due slots, claim and start runs.
        Returns the seconds to sleep."""
        if self.waker.store_file is not None:
            self.waker.store_file.check()  # before anything is written into a lost file
        self.executor.flush()
        if self.leader.next_poll_in() <= self.housekeeping.slack:
            self.leader.poll()
        stopping = self._stopping()
        term = None if stopping else self.leader.term()
        more_due = term is not None and self._fire(now, term)
        self.executor.check_cancels()
        fenced = self.heartbeats.before_claim(stopping)
        if not stopping and not fenced:
            self._claim()
        # After the fire and the claim, which a slot's time is for: folded into
        # that tick, the timers' round trips would delay its runs.
        self.housekeeping.run_due()
        if self.heartbeats.by_lock:
            self.heartbeats.by_lock_round(self.store_ok)
        return 0.0 if more_due else self._sleep_for(stopping)

    def _sleep_for(self, stopping: bool) -> float:
        next_fire = next_queued = None
        if self.leader.leading and not stopping:
            next_fire = self.store.next_fire_at()
        if not stopping and self.executor.busy < self.config.settings.max_concurrent:
            # By the store's clock, the one claims compare not_before with.
            next_queued = self.store.next_queued_in()
        # The clock is read after the queries, so their time does not make us late.
        now = self.clock.now()
        waits = [QUIET_IDLE_CAP if self._quiet else IDLE_CAP, self.leader.next_poll_in()]
        if next_fire is not None:
            waits.append((next_fire - now).total_seconds())
        if self.executor.busy:
            waits.append(ACTIVE_POLL)
        if self._stop_deadline is not None:
            waits.append(max(0.0, self._stop_deadline - time.monotonic()))
        # The next timer, the next queued run, and the next LISTEN retry: without
        # LISTEN no trigger wakes us, so not at the next heartbeat, lease_ttl / 3 away.
        for wait in (self.housekeeping.idle_seconds, next_queued, self.waker.listen_retry_in()):
            if wait is not None:
                waits.append(wait)
        return max(0.0, min(waits))

    def reload(self) -> None:
        if self.reload_config is None:
            return
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready(self._status())

    def _finished(self) -> bool:
        """Whether a stop asked for is done: runs ended (forced after the grace) and
        their outcomes recorded, or the store away (see _shutdown)."""
        if self.flags.stop_requests == 0:
            return False
        if self._stop_deadline is None:
            self.notifier.stopping()
            grace = self.config.settings.shutdown_grace
            self._stop_deadline = time.monotonic() + grace
            log.info(
                "stopping: waiting up to %.0fs for %d running run(s)",
                grace,
                self.executor.busy,
                extra={"action": "daemon.stopping"},
            )
        if self.flags.stop_requests > 1 or time.monotonic() >= self._stop_deadline:
            self.executor.stop_all("cancelled: jobd was stopped")
        if self.executor.busy:
            return False
        # Outcomes the store cannot take yet are retried for a while in _shutdown.
        return not self.executor.pending_writes or not self.store_ok

    # -- a tick's parts -----------------------------------------------------------------

    def _safe_tick(self, now: datetime) -> float:
        if self.flags.stop_requests and not self.store_ok:
            # Stopping while the store is away: every try would wait for it, out of
            # the runs' grace. Outcomes get one more try in _shutdown.
            self.executor.collect()
            return ACTIVE_POLL
        try:
            timeout = self.tick(now)
            self.store.specs.forget()  # only a tick's worth is worth keeping
        except STORE_FAILURES as exc:
            return self._store_failed(exc)
        if not self.store_ok:
            self.store_ok = True
            self.heartbeats.after_outage()
            # A LISTEN connection that lived through it may be stalled, not closed
            # (a frozen network): listen on a new one.
            self.waker.unlisten()
        # Told at once, or, after a store that came and went, once it has held.
        lasted = self.outage.recovered()
        if lasted is not None:
            log.info("store available again after %.0fs", lasted, extra={"action": "store.up"})
        if self.waker.keep_listening():
            return 0.0  # a trigger may have come while nobody listened: look again now
        return timeout

    def _store_failed(self, exc: BaseException) -> float:
        """A tick the store failed: tried again soon, however long it has been away (a
        back-off that kept doubling made a 30 s outage a minute without fires); only
        the log backs off. Returns the seconds until the next try."""
        self.firing.round_began = None  # slots due until the store is back are missed
        self.metrics.store_errors.inc()
        delay = PROBE_EVERY
        if self.executor.busy:
            # Runs going on here need our heartbeat back within lease_ttl of the
            # store's return, or other instances will take them for lost.
            delay = min(delay, self.config.settings.lease_ttl / 6)
            self.heartbeats.check_fence()
        self.outage.tell(exc)
        self.store_ok = False
        self.store.reset_connection()
        return delay

    def fire_due(self, now: datetime, term: Term | None = None) -> bool:
        """Turn due slots into runs, exactly once per slot. True when more may be due.

        The write is fenced by the epoch of `term` (by default the current one, read
        once): LeaseLost when a newer leader exists."""
        term = term or self.leader.term()
        return term is not None and self.firing.fire_due(now, term)

    def _fire(self, now: datetime, term: Term) -> bool:
        """Queue every due slot before starting any run, so that thousands of jobs due
        in one second are all queued within it rather than behind the spawning of the
        first batch; the budget keeps a long catch-up from holding up claims for good.
        True when more are due."""
        try:
            more_due = self.firing.fire_due(now, term)
            budget_end = time.monotonic() + FIRE_BUDGET
            while more_due and time.monotonic() < budget_end:
                more_due = self.firing.fire_due(self.clock.now(), term)
        except LeaseLost as exc:
            # Paused or cut off past the lease, and someone else leads now:
            # nothing was written, and the new leader fires these slots.
            self.leader.step_down(f"a newer leader took over ({exc})")
            return False
        return more_due

    def _claim(self) -> None:
        probe, self.firing.queued_due_now = not self.firing.queued_due_now, False
        room = self.config.settings.max_concurrent - self.executor.busy
        if room <= 0:
            return
        claimed = self.store.claim(self.instance, self.host, room, probe=probe)
        if claimed:
            self.executor.start_all(self.executor.admit(claimed, self.file_digests))

    def _check_clock(self, now: datetime) -> None:
        """A wall-clock step restarts the housekeeping timers (see
        jobd.daemon.housekeeping) and moves what fires (see jobd.core.planner)."""
        jump = self._jumps.check(now, self.clock.monotonic())
        if jump is not None:
            self.housekeeping.rebuild()
            self.firing.clock_stepped(jump, now)

    def _status(self) -> str:
        role = "leader" if self.leader.leading else "standby"
        store = "store ok" if self.store_ok else "store unavailable"
        return f"{role}, {self.executor.busy} running, {store}"

    def _notify_tick(self) -> None:
        """Watchdog pings come from the loop itself, so a hung loop stops pinging."""
        self.notifier.maybe_watchdog(time.monotonic())
        epoch = getattr(self.leader, "epoch", None)
        self.metrics.loop_state(self.leader.leading, epoch, self.executor.busy)
        text = self._status()
        if text != self._status_text:
            self._status_text = text
            self.notifier.status(text)

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Everything before the first tick: instance, recovery, leader guard, wake-ups."""
        self.heartbeats.hold_lock()
        sent = time.monotonic()
        self.store.register_instance(self.instance, self.host, os.getpid(), __version__)
        self.heartbeats.registered(sent)
        self.heartbeats.recover_this_host()
        self.housekeeping.rebuild()
        # Nothing can be missed with a lock for liveness and every wake-up watched.
        self._quiet = open_wakeups(self.waker, self.store, IDLE_CAP) and self.heartbeats.by_lock
        if self._metrics_server is None:
            self._metrics_server = serve_metrics(self.config.metrics_listen, self.store)
        self.leader.poll()
        first_term = self.leader.term()
        self.firing.first_term_since = first_term.since if first_term else None
        self.heartbeats.heartbeat()  # record the role at once, for `jobd status`
        self.housekeeping.prune_in_background()
        # What exists now (modules, the store's models) lives as long as the daemon:
        # out of the collector's sight, a collection triggered by a thousand runs
        # fired at once scans only what those runs created.
        gc.freeze()
        self.notifier.ready(self._status())
        log.info(
            "jobd %s started: instance %s, store %s, %s leader guard, %s",
            __version__,
            self.instance,
            mask_url(self.store.url),
            self.leader.name,
            "leading" if self.leader.leading else "standby",
            extra={"action": "daemon.start"},
        )

    def _abandon_start(self) -> None:
        """Stopped before the daemon started: undo what start() got done."""
        self.heartbeats.release_lock()
        self.leader.release()
        log.info("jobd stopped while waiting for the store", extra={"action": "daemon.stop"})

    # -- reload and stop --------------------------------------------------------------

    def _reload(self) -> None:
        assert self.reload_config is not None
        try:
            config = self.reload_config()
        except ConfigError as exc:
            log.error(
                "reload rejected, keeping the running config: %s",
                exc,
                extra={"action": "config.rejected"},
            )
            return
        if config.settings.store and config.settings.store != self.config.settings.store:
            log.warning(
                "the store cannot change on reload; restart jobd to switch stores",
                extra={"action": "config.reload"},
            )
        try:
            report = self.store.apply_config(config, self.clock.now())
        except STORE_FAILURES as exc:
            log.error(
                "reload could not reach the store (%s); will apply on next reload",
                first_line(exc),
                extra={"action": "config.rejected"},
            )
            return
        self.config = _settings_only(config)
        self.file_digests = config.digests()
        self.executor.settings = config.settings
        self.notifications.configure(config)
        check_users(config)
        if report.restored:
            log.warning(
                "config jobs changed in the store outside jobd, restored from the file: %s",
                ", ".join(report.restored),
                extra={"action": "config.restored"},
            )
        changes = (
            ("added", report.added),
            ("updated", report.updated),
            ("removed", report.removed),
        )
        log.info(
            "config reloaded: %d added, %d updated, %d removed%s",
            *(len(names) for _, names in changes),
            "".join(f"; {k}: {', '.join(v)}" for k, v in changes if v),
            extra={"action": "config.reload"},
        )

    def _shutdown(self) -> None:
        # Outcomes the store just failed are retried for a while. A store known to be
        # away gets one try (each waits at most STOPPING_WAIT_S): a store that never
        # answers must not keep a stopped daemon past its grace.
        reachable = self.store_ok
        reachable = (
            _record_outcomes(self.executor, self.store, 10 if reachable else 0) and reachable
        )
        containment.end_all()  # orphans no run is left to own
        self.heartbeats.stop()
        if reachable:
            with contextlib.suppress(STORE_FAILURES):
                self.store.stop_instance(self.instance)
        self.notifications.close(NOTIFY_DRAIN)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self.heartbeats.release_lock()
        self.leader.release()
        log.info("jobd stopped", extra={"action": "daemon.stop"})


def store_wait(settings: Settings) -> float:
    """The longest wait for one answer of the store: a stalled store (a frozen
    network, a hung server) is noticed within it, well within lease_ttl."""
    return max(1.0, min(10.0, settings.lease_ttl / 3))


def _end_runs_unrecorded(executor: Executor, kill_grace: float) -> None:
    """Stop this daemon's runs and wait for them to end (their kill_grace, and a
    little more), with nowhere to record it: no job outlives a daemon that quits."""
    executor.stop_all("cancelled: jobd's store vanished")
    deadline = time.monotonic() + kill_grace + 5
    for process in list(executor.running.values()):
        process.join(max(0.0, deadline - time.monotonic()))


def _record_outcomes(executor: Executor, store: Store, seconds: float) -> bool:
    """Record the outcomes still pending, trying again for `seconds` while the store
    fails; False when some could not be recorded."""
    deadline = time.monotonic() + seconds
    while executor.pending_writes:
        try:
            executor.flush()
        except STORE_FAILURES:
            store.reset_connection()
            if time.monotonic() >= deadline:
                return False
            nap(0.5)
    return True


def _log_reload(report: ApplyReport) -> None:
    changes = (("added", report.added), ("updated", report.updated), ("removed", report.removed))
    log.info(
        "config reloaded: %d added, %d updated, %d removed%s",
        *(len(names) for _, names in changes),
        "".join(f"; {k}: {', '.join(v)}" for k, v in changes if v),
        extra={"action": "config.reload"},
    )


def _settings_only(config: Config) -> Config:
    """The daemon reads jobs from the store; holding every parsed job as well would
    keep megabytes (10,000 jobs) in memory for nothing."""
    return dataclasses.replace(config, jobs={})


def serve(
    config: Config,
    store: Store,
    reload_config: Callable[[], Config] | None = None,
    applied_at: datetime | None = None,
    file_digests: Mapping[str, str] | None = None,
    flags: SignalFlags | None = None,
) -> int:
    daemon = Daemon(
        config, store, reload_config, file_digests=file_digests, flags=flags, contain=True
    )
    daemon.firing.applied_at = applied_at
    return daemon.run()
