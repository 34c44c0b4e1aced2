"""The daemon: the only module that wires store, leader guard, executor, signals.

`run()` loops over `tick(now)`, which does one round of work and returns how long
to sleep: until the next due fire, the next queued run, the next housekeeping
timer or the leader's next renewal, whichever comes first. Signals, finished
runs and `jobd trigger` wake the sleep early. Nothing spins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import peewee as pw
import schedule

from jobd import __version__
from jobd.core.durations import format_duration
from jobd.core.model import (
    CATCHUP_CAP,
    MISFIRE_GRACE,
    Config,
    JobSpec,
    LeaderMode,
    NewRun,
    Outcome,
    Run,
    Status,
)
from jobd.core.planner import plan_jobs
from jobd.core.policies import (
    FireAction,
    SlotDecision,
    batch_decisions,
    follow_ups,
    jitter_offset,
)
from jobd.errors import ConfigError, StoreValueRefused, first_line, store_failure
from jobd.leader import LeaderGuard, Term
from jobd.leader.filelock import FileLeader
from jobd.leader.lease import TableLeader
from jobd.observe.dispatcher import Notifications
from jobd.observe.metrics import MetricsServer, instance_metrics
from jobd.observe.observer import RunObserver
from jobd.runs.containment import containment
from jobd.runs.executor import Executor
from jobd.runs.fence import Beat, Fence, Keeper
from jobd.runs.process import kill_leftovers
from jobd.store import STORE_ERRORS, Store, mask_url
from jobd.store.connect import sqlite_path
from jobd.store.files import StoreIdentity, StoreVanished, leader_lock_path
from jobd.store.groups import active_by_group
from jobd.store.lease import LeaseLost
from jobd.system.clock import Clock, JumpDetector
from jobd.system.hooks import HOST
from jobd.system.liveness import DeathWatch, InstanceLock, LockState, lock_state, pid_alive
from jobd.system.log import mask_secrets
from jobd.system.sdnotify import Notifier
from jobd.system.signals import SignalFlags
from jobd.system.storewait import PROBE_EVERY, OutageLog, StartupWait
from jobd.system.waker import Waker

log = logging.getLogger("jobd")

DUE_BATCH = 1000  # jobs planned per tick; more due ones are taken on an immediate next tick
PRUNE_EVERY = 3600.0  # history retention, as the SPEC's `history` setting promises
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


class Backoff:
    """Exponential back-off: 1 s, 2 s, 4 s ... capped."""

    def __init__(self, cap: float, first: float = 1.0) -> None:
        self.cap, self.first, self.current = cap, first, 0.0

    def next(self) -> float:
        self.current = self.first if self.current == 0 else min(self.cap, self.current * 2)
        return self.current

    def reset(self) -> bool:
        was_failing = self.current > 0
        self.current = 0.0
        return was_failing


class Daemon:
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
        self._check_users(config)
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
        self.waker = Waker()
        # `jobd run` hands over the flags it waited for the store with: a stop asked
        # for meanwhile is not lost.
        self.flags = flags or SignalFlags()
        self.flags.on_signal = self.waker.wake
        self.executor = Executor(store, self.instance, config.settings, self.waker.wake)
        # Armed in start(), once it is known whether others judge us by heartbeat.
        self.fence = Fence(config.settings.lease_ttl, config.settings.kill_grace, armed=False)
        self.executor.fence = self.fence
        self._fence_logged = False
        self._beat: Beat | None = None
        self.leader = self._make_leader()
        self.housekeeping = schedule.Scheduler()
        # A store outage is probed every PROBE_EVERY and told with back-off.
        self.outage = OutageLog(config.settings.max_backoff)
        self.store_ok = True
        self._listen_backoff = Backoff(config.settings.max_backoff)
        self._listen_retry_at = 0.0
        self._listened = False
        self._stop_deadline: float | None = None
        self.notifier = Notifier.from_env()
        self.metrics = instance_metrics()
        self.notifications = Notifications(
            store, config, self.host, mask=mask_secrets, count=self.metrics.count_notification
        )
        self.observer = RunObserver(self.metrics, self.notifications)
        self.executor.observer = self.observer
        self._metrics_server: MetricsServer | None = None
        self._status_text = ""
        self._pruner: threading.Thread | None = None
        self._jumps = JumpDetector()
        self.applied_at: datetime | None = None  # when the caller applied the config
        self._first_term_since: datetime | None = None
        self._reap_from = 0.0  # monotonic; see _safe_tick
        # SQLite: liveness by lock (jobd.system.liveness), so an idle daemon neither writes
        # heartbeats nor polls for others' deaths; see _lock_housekeeping.
        self._lock: InstanceLock | None = None
        self._deaths: DeathWatch | None = None
        self._death_seen = threading.Event()
        self._heartbeat_state: tuple[str, bool, float | None] | None = None
        self._next_heartbeat = 0.0
        self._next_reap = 0.0
        self._quiet = False  # see QUIET_IDLE_CAP
        # A fire of this tick queued a run due now: the claim need not ask first.
        self._queued_due_now = False
        # When the current round of firing began (None between rounds): a round
        # goes on over the ticks of a long backlog, whose slots are not late.
        self._round_began: datetime | None = None
        self._first_round = True  # slots since the config was applied are on time
        self._replay_from: datetime | None = None  # a forward clock jump's start
        # SQLite: the file opened, so that one deleted or replaced under us is noticed.
        self._store_file = (
            StoreIdentity(sqlite_path(store.url)) if store.backend == "sqlite" else None
        )

    # -- wiring -----------------------------------------------------------------

    def _make_leader(self) -> LeaderGuard:
        mode = self.config.settings.leader
        if mode is LeaderMode.AUTO:
            mode = LeaderMode.FILE if self.store.backend == "sqlite" else LeaderMode.TABLE
        if mode is LeaderMode.FILE:
            if self.store.backend != "sqlite":
                raise ConfigError(
                    "leader = 'file' needs a SQLite store; use 'table'", key="jobd.leader"
                )
            return FileLeader(leader_lock_path(sqlite_path(self.store.url)), self.waker.wake)
        s = self.config.settings
        return TableLeader(
            self.store, self.instance, self.host, s.lease_ttl, s.max_clock_skew, self.clock
        )

    def _setup_housekeeping(self) -> None:
        self.housekeeping.clear()
        if self._lock is None:
            # An instance is lost after lease_ttl of silence; looking often keeps the
            # abandoned marking close to that, at one cheap query per look.
            self.housekeeping.every(self._heartbeat_every).seconds.do(self._heartbeat)
            self.housekeeping.every(self._reap_every).seconds.do(self._reap)
        self.housekeeping.every(PRUNE_EVERY).seconds.do(self._prune_in_background)

    @property
    def _store_wait(self) -> float:
        """The longest wait for one answer of the store: a stalled store (a frozen
        network, a hung server) is noticed within it, well within lease_ttl."""
        return max(1.0, min(10.0, self.config.settings.lease_ttl / 3))

    @property
    def _heartbeat_every(self) -> float:
        return max(0.2, self.config.settings.lease_ttl / 3)

    @property
    def _reap_every(self) -> float:
        # Half the heartbeat period, so every other reap shares a heartbeat's wake.
        return max(0.5, self.config.settings.lease_ttl / 6)

    @property
    def _housekeeping_slack(self) -> float:
        """Housekeeping (and the leader's renewal) due within this is done early by a
        tick that is awake anyway: a few seconds early is harmless to a heartbeat, a
        reap or a renewal, and it folds timers that drift apart into one wake-up."""
        return self._heartbeat_every / 4

    def _run_housekeeping(self) -> None:
        soon = datetime.now() + timedelta(seconds=self._housekeeping_slack)  # schedule's clock
        for job in sorted(j for j in self.housekeeping.jobs if j.next_run and j.next_run <= soon):
            job.run()

    def _hold_liveness_lock(self) -> None:
        directory = self.store.instance_lock_dir()
        if directory is None:
            return
        lock = InstanceLock(directory, self.instance)
        try:
            lock.acquire()
        except OSError as exc:
            log.warning(
                "cannot hold a liveness lock in %s (%s): heartbeats instead",
                directory,
                exc.strerror or exc,
                extra={"action": "daemon.liveness"},
            )
            return
        self._lock = lock
        self._deaths = DeathWatch(directory, self._on_death)

    def _on_death(self, instance: str) -> None:
        """From a DeathWatch thread: another instance's process is gone."""
        self._death_seen.set()
        self.waker.wake()

    def _lock_housekeeping(self) -> None:
        """Heartbeats and reaping while liveness is a lock: a heartbeat only says
        what `jobd status` shows (role, running), so it is written when that
        changes, and while runs go on; others' deaths come from DeathWatch, and
        while we are busy (awake anyway) we also look for heartbeat-judged ones."""
        assert self._deaths is not None
        self._deaths.watch_directory(self.instance)
        now = time.monotonic()
        busy = self.executor.busy > 0
        state = self._liveness_state()
        if state != self._heartbeat_state or (busy and now >= self._next_heartbeat):
            self._heartbeat()
        if self._death_seen.is_set() or (busy and now >= self._next_reap):
            self._death_seen.clear()
            self._next_reap = now + self._reap_every
            if not self._reap():
                self._death_seen.set()  # not now (store trouble): at the next tick

    def _liveness_state(self) -> tuple[str, bool, float | None]:
        role = "leader" if self.leader.leading else "standby"
        return role, self.executor.busy > 0, getattr(self.leader, "clock_skew", None)

    def _heartbeat(self) -> None:
        state = self._liveness_state()
        sent = time.monotonic()
        self.store.heartbeat(self.instance, state[0], self.executor.busy, state[2])
        self.fence.renewed(sent)
        self._heartbeat_state = state
        self._next_heartbeat = time.monotonic() + self._heartbeat_every

    def _reap(self) -> bool:
        """Mark the runs of vanished instances abandoned; False when it could not look."""
        if not self.store_ok or time.monotonic() < self._reap_from:
            return False
        # Our own runs are judged by our heartbeat too, and a store outage may have kept
        # it from being written while they went on: write it first if it is overdue.
        if time.monotonic() >= self._next_heartbeat:
            self._heartbeat()
        lost = self.store.reap_lost_runs(self.config.settings.lease_ttl, self._follow_ups)
        for run in lost:
            if run.host == self.host and self._gone(run.instance):
                kill_leftovers(run.id, run.job, run.instance)
            self.observer.run_abandoned(run)
            log.warning(
                "run %s of %s abandoned: instance %s vanished",
                run.id,
                run.job,
                run.instance,
                extra={"action": "run.abandoned", "job": run.job, "execution_id": run.id},
            )
        return True

    def _gone(self, instance: str | None) -> bool:
        """Whether another jobd of this host is really gone, not just silent: one
        paused or cut off from the store still runs its jobs, and stops them itself
        (self-fencing); killing them from here would kill a live daemon's work."""
        if instance is None:
            return True
        directory = self.store.instance_lock_dir()
        if directory is not None:
            state = lock_state(directory, instance)
            if state is not LockState.MISSING:
                return state is LockState.FREE
        pid = _pid_of(instance)
        return pid is None or not pid_alive(pid)

    def _prune_in_background(self) -> None:
        """Enforce `history` retention hourly, on the leader only, off the loop's thread:
        a first prune of a large store may take minutes and fires must not wait."""
        if not self.leader.leading or (self._pruner and self._pruner.is_alive()):
            return
        settings = self.config.settings
        keep = settings.history_keep or None
        max_age = settings.history_max_age or None
        quotas = [q for q in self.config.groups.values() if q.max_retained]

        def prune() -> None:
            from jobd.store.admin import prune as prune_history
            from jobd.store.groups import prune_retained

            try:
                counts = prune_history(self.store, keep, max_age, self.clock.now())
                for quota in quotas:  # [groups.NAME] max_retained, across the group
                    for job, n in prune_retained(self.store, quota).items():
                        counts[job] = counts.get(job, 0) + n
                if counts:
                    total = sum(counts.values())
                    self.store.audit("prune", f"jobd@{self.host}", None, {"deleted": counts})
                    log.info("pruned %d old runs", total, extra={"action": "history.prune"})
            except STORE_FAILURES as exc:
                log.warning("prune failed: %s", first_line(exc), extra={"action": "history.prune"})
            finally:
                self.store.db.close()  # this thread's own connection

        self._pruner = threading.Thread(target=prune, name="prune", daemon=True)
        self._pruner.start()

    def _follow_ups(self, run: Run, outcome: Outcome, spec: JobSpec | None) -> list[NewRun]:
        if spec is None:
            return []
        return follow_ups(spec, run, outcome, self.clock.now(), random.random())

    def _recover_this_host(self) -> None:
        """Runs left `running` by an earlier jobd on this host whose process is gone."""
        dead = [
            inst["id"]
            for inst in self.store.instances()
            if inst["host"] == self.host
            and inst["id"] != self.instance
            and inst["stopped_at"] is None
            and not pid_alive(inst["pid"])
        ]
        if dead:
            lost = self.store.reap_lost_runs(
                self.config.settings.lease_ttl, self._follow_ups, dead_instances=dead
            )
            for instance in dead:
                containment.kill_owner(instance)
            for run in lost:
                leftovers = kill_leftovers(run.id, run.job, run.instance)
                self.observer.run_abandoned(run)
                log.warning(
                    "run %s of %s abandoned: its jobd (%s) is gone%s",
                    run.id,
                    run.job,
                    run.instance,
                    f"; killed {leftovers} leftover process(es)" if leftovers else "",
                    extra={"action": "run.abandoned", "job": run.job, "execution_id": run.id},
                )

    # -- the loop -----------------------------------------------------------------

    def start(self) -> None:
        """Everything before the first tick: instance, recovery, leader guard, wake-ups."""
        self._hold_liveness_lock()
        sent = time.monotonic()
        self.store.register_instance(self.instance, self.host, os.getpid(), __version__)
        self._start_keeper(sent)
        if self._deaths is not None:
            self._deaths.watch_directory(self.instance)
            self.store.wake_daemons()  # the others start watching this instance
        self._recover_this_host()
        self._setup_housekeeping()
        wake_dir = self.store.wake_dir()
        if wake_dir:
            try:
                self.waker.bind_socket(wake_dir)
            except OSError as exc:
                log.warning(
                    "cannot open the wake-up socket in %s (%s): triggers start within %.0fs",
                    wake_dir,
                    exc.strerror or exc,
                    IDLE_CAP,
                    extra={"action": "daemon.wake"},
                )
        self._quiet = self._lock is not None and self.waker.socket_bound
        self._quiet = self.waker.watch_clock_steps() and self._quiet
        if self._store_file is not None:
            self._quiet = self.waker.watch_file(self._store_file.database) and self._quiet
        self._listen()
        self._serve_metrics()
        self.leader.poll()
        first_term = self.leader.term()
        self._first_term_since = first_term.since if first_term else None
        self._heartbeat()  # record the role at once, for `jobd status`
        self._prune_in_background()
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

    def _start_keeper(self, registered: float) -> None:
        """The keeper ends our runs if we die, and fences them if we go silent."""
        self.fence.armed = self._lock is None  # a lock says we live, however silent
        self.fence.renewed(registered)  # register_instance wrote our first heartbeat
        if self.fence.armed:
            self._beat = Beat(self.store, self.instance, self.fence, lambda: self.executor.busy > 0)
            self._beat.start()
        if not containment.ready:
            return
        log.info(
            "every process a run starts ends with it: %s",
            f"a cgroup per run under {containment.cgroup_dir}"
            if containment.cgroup_dir
            else "runs' orphans come back to jobd (child subreaper; no writable cgroup)",
            extra={"action": "daemon.containment"},
        )
        keeper = Keeper(self.instance, containment.cgroup_dir)
        try:
            containment.helper(keeper.start())
        except OSError as exc:
            log.error(
                "cannot start the keeper process (%s): runs of a jobd that dies "
                "or is paused are not stopped until a jobd starts again",
                exc.strerror or exc,
                extra={"action": "daemon.keeper"},
            )
            return
        self.fence.keeper = keeper
        if self.fence.armed:
            keeper.send(f"fence {self.fence.term_at:.6f} {self.fence.kill_at:.6f}")

    def _check_fence(self) -> bool:
        """True while fenced: our heartbeat is too old for our runs to go on."""
        if not self.fence.fired():
            self._fence_logged = False
            return False
        if self.executor.busy and not self._fence_logged:
            self._fence_logged = True
            log.error(
                "no heartbeat reached the store for %.1fs (lease_ttl %gs): stopping %d "
                "run(s) and claiming none, so that their retries elsewhere are the only "
                "copies",
                self.fence.age(),
                self.config.settings.lease_ttl,
                self.executor.busy,
                extra={"action": "daemon.fenced"},
            )
        self.executor.fence_all()
        return True

    def _serve_metrics(self) -> None:
        """`[metrics] listen`; a port that cannot be had is said, and jobd runs on
        without it (its scheduling matters more than its metrics)."""
        listen = self.config.metrics_listen
        if listen is None or self._metrics_server is not None:
            return
        try:
            self._metrics_server = MetricsServer(listen, self.store)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s (%s); running without",
                listen,
                exc.strerror or exc,
                extra={"action": "metrics.listen"},
            )
            return
        self._metrics_server.start()
        log.info(
            "serving metrics on http://%s/metrics",
            self._metrics_server.address,
            extra={"action": "metrics.listen"},
        )

    @staticmethod
    def _check_users(config: Config) -> None:
        """Say at once what each run of such a job would say: only root switches users."""
        uid = os.geteuid()
        if uid == 0:
            return
        for spec in config.jobs.values():
            if spec.user:
                log.error(
                    "job %s has user = %r, but jobd runs as uid %d, not root: its runs will fail",
                    spec.name,
                    spec.user,
                    uid,
                    extra={"action": "config.user", "job": spec.name},
                )

    def _listen(self) -> bool:
        """(Re)open the LISTEN connection when it is gone; True when it was just opened.

        The store's own connection reconnects transparently, so a terminated LISTEN
        connection must be noticed here, not only after a failed tick."""
        if self.store.backend != "postgresql" or self.waker.listening:
            return False
        if time.monotonic() < self._listen_retry_at:
            return False
        try:
            self.waker.listen_postgres(self.store.url)
        except Exception as exc:
            if self._listen_backoff.current == 0:
                log.warning(
                    "cannot LISTEN for wake-ups (%s); retrying with back-off",
                    first_line(exc),
                    extra={"action": "store.listen"},
                )
            # Logged once; tried again as often as the store itself.
            self._listen_retry_at = time.monotonic() + min(PROBE_EVERY, self._listen_backoff.next())
            return False
        if self._listen_backoff.reset() or self._listened:
            log.info("listening for wake-ups again", extra={"action": "store.listen"})
        self._listened = True
        return True

    def run(self) -> int:
        self.flags.install()
        self.waker.install_signal_wakeup()
        self.store.limit_waits(self._store_wait, lambda: self.flags.stop_requests > 0)
        try:
            if not self._start_when_store_answers():
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
                woken = self._sleep(timeout if watchdog is None else min(timeout, watchdog))
                if woken and self.executor.busy:
                    # Runs that end in quick succession are recorded, and their slots
                    # refilled, a batch per tick: a tick for each would cost more
                    # than the runs. Fires are timed wake-ups, never delayed by this.
                    _nap(COALESCE)
            self._shutdown()
        except StoreVanished as exc:
            log.error("%s", exc, extra={"action": "store.vanished"})
            self._end_runs_unrecorded("cancelled: jobd's store vanished")
            raise
        finally:
            self.flags.restore()
            self.waker.close()
        return 0

    def _start_when_store_answers(self) -> bool:
        """start(), again while the store does not answer (it went away between
        `jobd run`'s wait and here); False when a stop was asked for meanwhile."""
        wait: StartupWait | None = None
        while self.flags.stop_requests == 0:
            try:
                self.start()
                return True
            except STORE_ERRORS as exc:
                self.store.reset_connection()
                if wait is None:
                    wait = StartupWait(
                        self.store.url,
                        self.config.settings.max_backoff,
                        self.notifier,
                        lambda: self.flags.stop_requests > 0,
                    )
                wait.failed(first_line(exc))
                if not wait.pause(PROBE_EVERY):
                    return False
        return False

    def _abandon_start(self) -> None:
        """Stopped before the daemon started: undo what start() got done."""
        if self._lock is not None:
            self._lock.release()
        self.leader.release()
        log.info("jobd stopped while waiting for the store", extra={"action": "daemon.stop"})

    def _sleep(self, timeout: float) -> bool:
        """Sleep until woken or `timeout` is over, to the tenth of a millisecond: the
        selector counts whole milliseconds, rounded up, and wakes up to a millisecond
        past even that, which would start every scheduled run that late. The last two
        milliseconds are slept by a timer of finer grain instead."""
        deadline = time.monotonic() + timeout
        woken = self.waker.sleep(max(0.0, timeout - 0.002))
        if not woken:
            rest = deadline - time.monotonic()
            if rest > 0.0001:
                _nap(rest)
        return woken

    def _check_clock(self, now: datetime) -> None:
        """Say so when the wall clock was stepped: fires follow it (see jobd.core.planner)."""
        jump = self._jumps.check(now, self.clock.monotonic())
        if jump is None:
            return
        # The housekeeping timers (schedule) keep naive wall-clock next times: stepped
        # back an hour, heartbeats and reaping would wait that hour, and other
        # instances would take this one for dead. Their next times start again here.
        self._setup_housekeeping()
        if jump > 0:
            # The slots the step skipped were not missed: they replay (see jobd.core.planner).
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
            self._round_began = None  # slots due until the store is back are missed
            self.metrics.store_errors.inc()
            # Tried again soon, however long it has been away: a back-off that kept
            # doubling made a 30 s outage a minute without fires. Only the log backs off.
            delay = PROBE_EVERY
            if self.executor.busy:
                # Runs going on here need our heartbeat back within lease_ttl of the
                # store's return, or other instances will take them for lost.
                delay = min(delay, self.config.settings.lease_ttl / 6)
                self._check_fence()
            first = not self.outage.down
            trouble, still = _store_trouble(exc)
            if self.outage.failed():
                if first:
                    log.error(
                        "%s (%s); trying again every %.0fs",
                        trouble,
                        first_line(exc),
                        PROBE_EVERY,
                        extra={"action": "store.down"},
                    )
                else:
                    log.warning(
                        "%s after %.0fs (%d attempts): %s",
                        still,
                        self.outage.seconds,
                        self.outage.attempts,
                        first_line(exc),
                        extra={"action": "store.down"},
                    )
            self.store_ok = False
            self.store.reset_connection()
            return delay
        lasted = self.outage.recovered()
        if lasted is not None:
            log.info("store available again after %.0fs", lasted, extra={"action": "store.up"})
            self.store_ok = True
            # The other instances lost the store too and their heartbeats are as stale
            # as ours was: give them a lease_ttl to write one before judging them dead.
            self._reap_from = time.monotonic() + self.config.settings.lease_ttl
            # A LISTEN connection that lived through it may be stalled, not closed
            # (a frozen network): listen on a new one.
            self.waker.unlisten()
        if self._listen():
            return 0.0  # a trigger may have come while nobody listened: look again now
        return timeout

    def tick(self, now: datetime) -> float:
        """One round: record progress, housekeeping, fire due slots, claim and start runs.
        Returns the seconds to sleep."""
        if self._store_file is not None:
            self._store_file.check()  # before anything is written into a lost file
        self.executor.flush()
        if self.leader.next_poll_in() <= self._housekeeping_slack:
            self.leader.poll()
        stopping = self.flags.stop_requests > 0
        more_due = False
        term = None if stopping else self.leader.term()
        if term is not None:
            try:
                more_due = self.fire_due(now, term)
                # Queue every due slot before starting any run, so that thousands of
                # jobs due in one second are all queued within it rather than behind
                # the spawning of the first batch; the budget keeps a long catch-up
                # from holding up claims for good.
                budget_end = time.monotonic() + FIRE_BUDGET
                while more_due and time.monotonic() < budget_end:
                    more_due = self.fire_due(self.clock.now(), term)
            except LeaseLost as exc:
                # Paused or cut off past the lease, and someone else leads now:
                # nothing was written, and the new leader fires these slots.
                self.leader.step_down(f"a newer leader took over ({exc})")
        self.executor.check_cancels()
        # A run is claimed only with a fresh heartbeat: it may be fenced as soon as
        # it starts. (While runs go on, the Beat thread renews it every lease_ttl/6.)
        due = self.config.settings.lease_ttl / 2
        if self.fence.armed and not stopping and self.fence.age() >= due:
            self._heartbeat()
        fenced = self._check_fence()
        if not stopping and not fenced:
            self._claim()
        # After the fire and the claim, which a slot's time is for: folded into
        # that tick, the timers' round trips would delay its runs.
        self._run_housekeeping()
        if self._lock is not None:
            self._lock_housekeeping()
        return 0.0 if more_due else self._sleep_for(stopping)

    def fire_due(self, now: datetime, term: Term | None = None) -> bool:
        """Turn due slots into runs, exactly once per slot. True when more may be due.

        The write is fenced by the epoch of `term` (by default the current one, read
        once): LeaseLost when a newer leader exists."""
        term = term or self.leader.term()
        if term is None:
            return False
        round_began = self._round_began or now
        self._round_began = None  # unless this round goes on (a backlog, below)
        batch = self.store.due_for_firing(now, DUE_BATCH, self._active_within)
        due, active, store_now = batch.jobs, batch.active, batch.store_now
        if not due:
            self._first_round, self._replay_from = False, None
            return False
        assert store_now is not None
        since = term.since
        if self.applied_at is not None and since == self._first_term_since:
            # Slots that fell due between applying the config and taking the guard at
            # start were this daemon's to fire, not fires missed while none led.
            since = min(since, self.applied_at)
        on_time_from = self._on_time_from(round_began, since)
        # Claims compare not_before with the store's clock, which may differ from
        # ours (another host's database, or our clock was stepped): a run is due
        # `delay` after now on our clock, so it is due `delay` after now on theirs.
        # Against our clock as the store answered, not as the tick began: a slow
        # round trip earlier in the tick (a stall) is no clock difference.
        skew = (self.clock.now() - store_now).total_seconds()
        if self.store.backend == "postgresql" and abs(skew) > self.config.settings.max_clock_skew:
            # The lease notices at its next renewal; until then fire times from a
            # clock this far off would run jobs at the wrong time, and move their
            # next fire with it.
            log.error(
                "clock differs from the store's by %.1fs (limit %.0fs); not firing",
                skew,
                self.config.settings.max_clock_skew,
                extra={"action": "leader.clock_skew"},
            )
            return False
        groups = self.config.groups
        limited = {r.spec.group for r in due if r.spec.group in groups}
        group_active = active_by_group(self.store, [g for g in limited if groups[g].max_active])
        runs: list[NewRun] = []
        advances: dict[str, tuple[datetime | None, datetime]] = {}
        replace: list[str] = []
        plans = plan_jobs(
            [(r.spec, r.next_fire_at) for r in due],  # type: ignore[misc]
            now,
            since,
            on_time_from,
        )
        late = [record.name for record, plan in zip(due, plans, strict=True) if plan.late]
        if late:
            log.warning(
                "%d job(s) had slots that fell due over %.0fs before this round of firing "
                "(jobd was stopped or starved, cut off from the store, or not woken): each job's "
                "catchup decides what runs of them (%s)",
                len(late),
                MISFIRE_GRACE,
                ", ".join(late[:5]) + (", ..." if len(late) > 5 else ""),
                extra={"action": "fire.late"},
            )
        for record, plan in zip(due, plans, strict=True):
            assert record.next_fire_at is not None
            for warning in plan.warnings:
                log.warning("%s: %s", record.name, warning, extra={"action": "fire.catchup"})
            quota = groups.get(record.spec.group or "")
            decisions, active_after = batch_decisions(
                record.spec,
                [(fire.slot, fire.trigger) for fire in plan.fires],
                record.name in active,
                quota,
                group_active.get(quota.name, 0) if quota else 0,
            )
            if quota is not None:
                group_active[quota.name] = active_after
            for decision in decisions:
                if decision.action is FireAction.SKIP:
                    _log_skip(record.name, decision)
                    if decision.cause == "quota" and quota is not None:
                        self.metrics.quota_refusals.labels(quota.name).inc()
                due_at = decision.slot + timedelta(
                    seconds=jitter_offset(record.spec, decision.slot)
                )
                delay = max(timedelta(0), due_at - now)
                runs.append(
                    NewRun(
                        job=record.name,
                        trigger=decision.trigger,
                        scheduled_for=decision.slot,
                        not_before=store_now + delay,
                        **(
                            {"status": Status.SKIPPED, "error": decision.reason}
                            if decision.action is FireAction.SKIP
                            else {}
                        ),
                    )
                )
                if decision.action is FireAction.REPLACE:
                    replace.append(record.name)
            last = plan.fires[-1].slot if plan.fires else record.next_fire_at
            advances[record.name] = (plan.next_fire_at, last)
        inserted = self.store.record_fires(runs, advances, replace, epoch=term.epoch)
        if inserted and any(not r.status.final and r.not_before <= store_now for r in runs):
            self._queued_due_now = True
        log.debug(
            "fired %d slots of %d due jobs (%d new rows)",
            len(runs),
            len(due),
            inserted,
            extra={"action": "fire"},
        )
        if len(due) == DUE_BATCH:
            self._round_began = round_began  # a backlog: the next batch is not late
            return True
        self._first_round = False
        self._replay_from = None
        return False

    @property
    def _active_within(self) -> float:
        """A run counts as active for overlap only while its instance is live: its
        lock held (SQLite), or a heartbeat within this. An instance writes one every
        lease_ttl / 3 while it runs something; one silent for half the ttl has
        missed its last one and is dead or cut off (a new leader takes over a
        lease_ttl after the last renewal), and will be marked abandoned. The
        reaper waits the whole ttl, being wrong there would rerun the run; being
        wrong here only queues a slot behind the run instead of skipping it."""
        return self.config.settings.lease_ttl / 2

    def _on_time_from(self, round_began: datetime, since: datetime) -> datetime:
        """Slots before this that fell due while leading were missed (the daemon
        was stopped, cut off from the store, or not woken): their catchup decides."""
        # A clock step moved the round's start: the slots it skipped replay, and
        # the one the daemon was waking for when the clock was stepped is on time.
        began = min(round_began, self._replay_from or round_began)
        on_time_from = began - timedelta(seconds=MISFIRE_GRACE)
        if self._first_round:
            on_time_from = min(on_time_from, since)  # starting up is not being late
        return on_time_from

    def _claim(self) -> None:
        probe, self._queued_due_now = not self._queued_due_now, False
        room = self.config.settings.max_concurrent - self.executor.busy
        if room <= 0:
            return
        claimed = self.store.claim(self.instance, self.host, room, probe=probe)
        if claimed:
            self.executor.start_all(self.executor.admit(claimed, self.file_digests))

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
        idle = self.housekeeping.idle_seconds
        if idle is not None:
            waits.append(idle)
        if next_fire is not None:
            waits.append((next_fire - now).total_seconds())
        if next_queued is not None:
            waits.append(next_queued)
        if self.executor.busy:
            waits.append(ACTIVE_POLL)
        if self._stop_deadline is not None:
            waits.append(max(0.0, self._stop_deadline - time.monotonic()))
        if self.store.backend == "postgresql" and not self.waker.listening:
            # Without LISTEN no trigger wakes us: retry it when its back-off ends,
            # not at the next heartbeat, up to lease_ttl / 3 away.
            waits.append(max(0.0, self._listen_retry_at - time.monotonic()))
        return max(0.0, min(waits))

    # -- reload and stop --------------------------------------------------------------

    def reload(self) -> None:
        if self.reload_config is None:
            return
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.ready(self._status())

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
        self._check_users(config)
        if report.restored:
            log.warning(
                "config jobs changed in the store outside jobd, restored from the file: %s",
                ", ".join(report.restored),
                extra={"action": "config.restored"},
            )
        log.info(
            "config reloaded: %d added, %d updated, %d removed%s",
            len(report.added),
            len(report.updated),
            len(report.removed),
            "".join(
                f"; {k}: {', '.join(v)}"
                for k, v in (
                    ("added", report.added),
                    ("updated", report.updated),
                    ("removed", report.removed),
                )
                if v
            ),
            extra={"action": "config.reload"},
        )

    def _finished(self) -> bool:
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

    def _end_runs_unrecorded(self, reason: str) -> None:
        """Stop this daemon's runs and wait for them to end (their kill_grace, and a
        little more), with nowhere to record it: no job outlives a daemon that quits."""
        self.executor.stop_all(reason)
        deadline = time.monotonic() + self.config.settings.kill_grace + 5
        for process in list(self.executor.running.values()):
            process.join(max(0.0, deadline - time.monotonic()))

    def _shutdown(self) -> None:
        # Outcomes the store just failed are retried for a while. A store known to be
        # away gets one try (each waits at most STOPPING_WAIT_S): a store that never
        # answers must not keep a stopped daemon past its grace.
        reachable = self.store_ok
        deadline = time.monotonic() + (10 if reachable else 0)
        while self.executor.pending_writes:
            try:
                self.executor.flush()
            except STORE_FAILURES:
                self.store.reset_connection()
                if time.monotonic() >= deadline:
                    reachable = False
                    break
                _nap(0.5)
        containment.end_all()  # orphans no run is left to own
        if self._beat is not None:
            self._beat.stop()
        if self.fence.keeper is not None:
            self.fence.keeper.close()
        if reachable:
            with contextlib.suppress(STORE_FAILURES):
                self.store.stop_instance(self.instance)
        self.notifications.close(NOTIFY_DRAIN)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self._lock is not None:
            self._lock.release()
        self.leader.release()
        log.info("jobd stopped", extra={"action": "daemon.stop"})


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


def _settings_only(config: Config) -> Config:
    """The daemon reads jobs from the store; holding every parsed job as well would
    keep megabytes (10,000 jobs) in memory for nothing."""
    return dataclasses.replace(config, jobs={})


def _pid_of(instance: str) -> int | None:
    """The pid in an instance id (host-pid-suffix), as Daemon makes them."""
    parts = instance.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _store_trouble(exc: BaseException) -> tuple[str, str]:
    """How the log names a store error, first and then while it lasts: an outage, or
    a value the store would not take, which is no outage (though tried again too)."""
    if isinstance(store_failure(exc), StoreValueRefused):
        return "the store refused a value", "the store still refuses a value"
    return "store unavailable", "store still unavailable"


def _nap(seconds: float) -> None:
    """A short sleep that a stepped wall clock cannot break: some clock shims (and
    kernels, around a clock step) answer nanosleep with EINVAL, and a failed nap
    only means the loop looks again sooner."""
    with contextlib.suppress(OSError):
        time.sleep(seconds)


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
    daemon.applied_at = applied_at
    return daemon.run()
