"""Liveness: how this daemon shows it is alive, and how it finds others that are not.

Two ways, chosen at start. Where the store keeps liveness locks (SQLite), the
lock says we live: a heartbeat only says what `jobd status` shows (role,
running), so it is written when that changes and while runs go on, and others'
deaths come from a DeathWatch thread. Elsewhere (PostgreSQL, or a lock that could
not be had) a heartbeat every lease_ttl / 3 says we live, the look for lost runs
comes every lease_ttl / 6, and the fence (jobd.runs.fence) stops our runs when
our heartbeat could not be written for too long.

Lost runs are marked abandoned (and retried by their policy); their leftover
processes on this host are killed only when their daemon is really gone.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from jobd.core.model import Config, JobSpec, NewRun, Outcome, Run
from jobd.core.policies import follow_ups
from jobd.leader import LeaderGuard
from jobd.observe.observer import RunObserver
from jobd.runs.containment import containment
from jobd.runs.executor import Executor
from jobd.runs.fence import Beat, Fence, Keeper
from jobd.runs.process import kill_leftovers
from jobd.store import Store
from jobd.system.clock import Clock
from jobd.system.liveness import DeathWatch, InstanceLock, LockState, lock_state, pid_alive

log = logging.getLogger("jobd")


class Heartbeats:
    def __init__(
        self,
        store: Store,
        instance: str,
        host: str,
        config: Callable[[], Config],
        clock: Clock,
        executor: Executor,
        leader: LeaderGuard,
        observer: RunObserver,
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.instance = instance
        self.host = host
        self.config = config  # the daemon's, as the last reload left it
        self.clock = clock
        self.executor = executor
        self.leader = leader
        self.observer = observer
        self.wake = wake
        s = config().settings
        # Armed in start(), once it is known whether others judge us by heartbeat.
        self.fence = Fence(s.lease_ttl, s.kill_grace, armed=False)
        executor.fence = self.fence
        self._fence_logged = False
        self._beat: Beat | None = None
        self.lock: InstanceLock | None = None
        self._deaths: DeathWatch | None = None
        self._death_seen = threading.Event()
        self._state: tuple[str, bool, float | None] | None = None
        self.next_heartbeat = 0.0  # monotonic
        self._next_reap = 0.0
        self.reap_from = 0.0  # monotonic: no reaping before (see after_outage)

    @property
    def heartbeat_every(self) -> float:
        return max(0.2, self.config().settings.lease_ttl / 3)

    @property
    def reap_every(self) -> float:
        # Half the heartbeat period, so every other reap shares a heartbeat's wake.
        return max(0.5, self.config().settings.lease_ttl / 6)

    @property
    def by_lock(self) -> bool:
        """Whether a liveness lock says we live (else: our heartbeat)."""
        return self.lock is not None

    # -- start and stop ---------------------------------------------------------------

    def hold_lock(self) -> None:
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
        self.lock = lock
        self._deaths = DeathWatch(directory, self._on_death)

    def registered(self, sent: float) -> None:
        """Our instance row was written at `sent` (monotonic), with a first heartbeat:
        start the keeper, and watch the others' locks."""
        self._start_keeper(sent)
        if self._deaths is not None:
            self._deaths.watch_directory(self.instance)
            self.store.wake_daemons()  # the others start watching this instance

    def _on_death(self, instance: str) -> None:
        """From a DeathWatch thread: another instance's process is gone."""
        self._death_seen.set()
        self.wake()

    def _start_keeper(self, registered: float) -> None:
        """The keeper ends our runs if we die, and fences them if we go silent."""
        self.fence.armed = self.lock is None  # a lock says we live, however silent
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

    def stop(self) -> None:
        """The beat thread and the keeper end; the lock is released by release_lock."""
        if self._beat is not None:
            self._beat.stop()
        if self.fence.keeper is not None:
            self.fence.keeper.close()

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # -- each tick ----------------------------------------------------------------------

    def before_claim(self, stopping: bool) -> bool:
        """A run is claimed only with a fresh heartbeat: it may be fenced as soon as it
        starts. (While runs go on, the Beat thread renews it every lease_ttl/6.)
        True while fenced: no claims then."""
        due = self.config().settings.lease_ttl / 2
        if self.fence.armed and not stopping and self.fence.age() >= due:
            self.heartbeat()
        return self.check_fence()

    def check_fence(self) -> bool:
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
                self.config().settings.lease_ttl,
                self.executor.busy,
                extra={"action": "daemon.fenced"},
            )
        self.executor.fence_all()
        return True

    def by_lock_round(self, store_ok: bool) -> None:
        """Heartbeats and reaping while liveness is a lock: a heartbeat is written
        when what `jobd status` shows changes, and while runs go on; others' deaths
        come from DeathWatch, and while we are busy (awake anyway) we also look for
        heartbeat-judged ones."""
        assert self._deaths is not None
        self._deaths.watch_directory(self.instance)
        now = time.monotonic()
        busy = self.executor.busy > 0
        if self._liveness_state() != self._state or (busy and now >= self.next_heartbeat):
            self.heartbeat()
        if self._death_seen.is_set() or (busy and now >= self._next_reap):
            self._death_seen.clear()
            self._next_reap = now + self.reap_every
            if not self.reap(store_ok):
                self._death_seen.set()  # not now (store trouble): at the next tick

    def after_outage(self) -> None:
        """The other instances lost the store too and their heartbeats are as stale as
        ours was: give them a lease_ttl to write one before judging them dead."""
        self.reap_from = time.monotonic() + self.config().settings.lease_ttl

    # -- heartbeat and reaping --------------------------------------------------------

    def _liveness_state(self) -> tuple[str, bool, float | None]:
        role = "leader" if self.leader.leading else "standby"
        return role, self.executor.busy > 0, getattr(self.leader, "clock_skew", None)

    def heartbeat(self) -> None:
        state = self._liveness_state()
        sent = time.monotonic()
        self.store.heartbeat(self.instance, state[0], self.executor.busy, state[2])
        self.fence.renewed(sent)
        self._state = state
        self.next_heartbeat = time.monotonic() + self.heartbeat_every

    def reap(self, store_ok: bool = True) -> bool:
        """Mark the runs of vanished instances abandoned; False when it could not look."""
        if not store_ok or time.monotonic() < self.reap_from:
            return False
        # Our own runs are judged by our heartbeat too, and a store outage may have kept
        # it from being written while they went on: write it first if it is overdue.
        if time.monotonic() >= self.next_heartbeat:
            self.heartbeat()
        lost = self.store.reap_lost_runs(self.config().settings.lease_ttl, self.follow_ups)
        for run in lost:
            if run.host == self.host and self.gone(run.instance):
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

    def gone(self, instance: str | None) -> bool:
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
        pid = pid_of(instance)
        return pid is None or not pid_alive(pid)

    def follow_ups(self, run: Run, outcome: Outcome, spec: JobSpec | None) -> list[NewRun]:
        if spec is None:
            return []
        return follow_ups(spec, run, outcome, self.clock.now(), random.random())

    def recover_this_host(self) -> None:
        """Runs left `running` by an earlier jobd on this host whose process is gone."""
        dead = [
            inst["id"]
            for inst in self.store.instances()
            if inst["host"] == self.host
            and inst["id"] != self.instance
            and inst["stopped_at"] is None
            and not pid_alive(inst["pid"])
        ]
        if not dead:
            return
        lost = self.store.reap_lost_runs(
            self.config().settings.lease_ttl, self.follow_ups, dead_instances=dead
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


def pid_of(instance: str) -> int | None:
    """The pid in an instance id (host-pid-suffix), as the daemon makes them."""
    parts = instance.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
