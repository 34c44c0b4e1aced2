"""The instances table: jobd processes, their heartbeats, and the runs they lose.

Whether an instance that has not stopped is still there is not the store's to
find out: on SQLite it is a lock the process holds (jobd.system.liveness). The
store asks through the hooks whoever opened it gave (HostHooks), and records
what follows: a lost run abandoned, its retries queued, a dead instance stopped.
Part of Store (jobd.store.store).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobd.core.model import (
    JobSpec,
    NewRun,
    Outcome,
    Presence,
    Run,
    Status,
    presence_by_heartbeat,
)
from jobd.core.timeutil import from_db, to_db
from jobd.store import queries as q
from jobd.store.part import Part
from jobd.store.runs import end_of, run_from_row


def _no_wake(directories: Sequence[str]) -> None:
    """Without hooks, nobody is poked: daemons find the work at their next wake."""


def _by_heartbeat(
    lock_dir: str | None, instance: str, heartbeat_at: datetime | None, ttl: float, now: datetime
) -> Presence:
    return presence_by_heartbeat(heartbeat_at, ttl, now)


def _keep(lock_dir: str, instance: str) -> None:
    pass


@dataclass(frozen=True)
class HostHooks:
    """What the store needs done on its host and does not do itself (it opens no
    socket and takes no lock): given by whoever opens it. jobd.system.hooks has
    the real ones; these defaults wake nobody and judge instances by heartbeat
    alone, as on PostgreSQL."""

    # Poke the daemons' wake sockets in these directories (after a commit).
    wake: Callable[[Sequence[str]], None] = _no_wake
    # Whether an instance is there: by its lock in `lock_dir` where it has one.
    presence: Callable[[str | None, str, datetime | None, float, datetime], Presence] = (
        _by_heartbeat
    )
    # Remove a dead instance's lock file.
    forget: Callable[[str, str], None] = _keep


class InstancesPart(Part):
    """Instances and lost runs; mixed into Store."""

    hooks: HostHooks

    def register_instance(self, instance: str, host: str, pid: int, version: str) -> None:
        now = to_db(self.now())
        self.dialect.run(q.INSTANCE_REGISTER, (instance, host, pid, version, now, now))

    def heartbeat(
        self, instance: str, role: str, running: int, clock_skew: float | None = None
    ) -> None:
        self.dialect.run(q.HEARTBEAT, (role, running, clock_skew, instance))

    def touch_instance(self, instance: str) -> None:
        """Renew only an instance's heartbeat (jobd.runs.fence, from a thread of its own)."""
        self.dialect.run(q.TOUCH, (instance,))

    def stop_instance(self, instance: str) -> None:
        self.dialect.run(q.INSTANCE_STOP, (to_db(self.now()), instance))

    def remove_instance(self, instance: str) -> None:
        """Forget a one-shot instance (`trigger --local`) that ended cleanly; its
        runs keep its name."""
        self.dialect.run(q.INSTANCE_REMOVE, (instance,))

    def instances(self) -> list[dict[str, Any]]:
        result = []
        for row in self.dialect.all(q.INSTANCES):
            values = dict(zip(q.INSTANCE_COLUMNS, row, strict=True))
            for key in ("started_at", "heartbeat_at", "stopped_at"):
                values[key] = from_db(values[key])
            result.append(values)
        return result

    def instance_lock_dir(self) -> str | None:
        """SQLite: the directory of the instances' liveness locks (jobd.system.liveness)."""
        return self.dialect.lock_dir()

    def presence(
        self, instance: str, heartbeat_at: datetime | None, ttl: float, now: datetime
    ) -> Presence:
        """Whether an instance that has not stopped is still there (see HostHooks)."""
        return self.hooks.presence(self.instance_lock_dir(), instance, heartbeat_at, ttl, now)

    def _active_jobs(
        self, jobs: Sequence[Any], now: datetime, active_within: float | None
    ) -> set[str]:
        """Those of `jobs` with a run queued, or running on an instance still there."""
        rows = self.dialect.run_in(
            q.ACTIVE_RUNS_OF,
            [job.name for job in jobs],
            before=(Status.QUEUED.value, Status.RUNNING.value),
        )
        active: set[str] = set()
        presence: dict[str | None, bool] = {}
        for job, status, instance, heartbeat_at, stopped_at in rows:
            if job in active:
                continue
            if status == Status.QUEUED.value or active_within is None:
                active.add(job)
                continue
            if instance not in presence:
                presence[instance] = stopped_at is None and (
                    instance is None  # not this store's to judge: count it
                    or self.presence(instance, from_db(heartbeat_at), active_within, now)
                    is Presence.LIVE
                )
            if presence[instance]:
                active.add(job)
        return active

    def reap_lost_runs(
        self,
        ttl: float,
        follow_ups: Callable[[Run, Outcome, JobSpec | None], Sequence[NewRun]],
        dead_instances: Sequence[str] = (),
    ) -> list[Run]:
        """Mark running runs whose instance is gone (see presence, or known dead)
        abandoned, and queue their retries, atomically. A late finish by that
        instance then finds the run no longer running and changes nothing."""
        d = self.dialect
        dead = list(dead_instances)
        running = Status.RUNNING.value
        if not dead and d.lock_dir() is None and not d.one(q.ANY_RUNNING, (running,)):
            # Nothing runs anywhere, and without liveness locks nothing else is
            # decided here: one indexed look instead of a transaction of them.
            return []
        with self.db.atomic():
            now = self.now()
            live = set()
            for instance, heartbeat_at in d.all(q.NOT_STOPPED):
                if instance in dead:
                    continue
                state = self.presence(instance, from_db(heartbeat_at), ttl, now)
                if state is Presence.LIVE:
                    live.add(instance)
                elif state is Presence.DEAD:
                    dead.append(instance)
            lost: list[Run] = []
            follow_rows = []
            for row in d.all(q.RUNNING, (running,)):
                run = run_from_row(dict(zip(q.EXECUTION_COLUMNS, row, strict=True)))
                if run.instance is None or run.instance in live:
                    continue
                found = d.one(q.INSTANCE_WHERE, (run.instance,))
                where = f"{found[0]} pid {found[1]}" if found else "unknown host"
                outcome = Outcome(
                    Status.ABANDONED,
                    error=f"instance {run.instance} ({where}) vanished while the run was going",
                )
                duration = max(0.0, (now - (run.started_at or now)).total_seconds())
                if not self.end_runs([end_of(run.id, run.instance, outcome, now, duration)]):
                    continue
                text = d.one(q.JOB_SPEC, (run.job,))
                spec = self.specs.parse(text[0]) if text else None
                follow_rows += [self._run_row(f, now) for f in follow_ups(run, outcome, spec)]
                lost.append(run)
            d.executemany(q.RUNS_INSERT, follow_rows)
            if dead:
                d.run_in(q.INSTANCES_STOP, dead, before=(to_db(now),))
            if follow_rows:
                self._wake_in_transaction()
        directory = d.lock_dir()
        for instance in dead if directory else ():
            self.hooks.forget(directory, instance)  # type: ignore[arg-type]
        if follow_rows:
            self._wake_after_commit()
        return lost
