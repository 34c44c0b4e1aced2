"""Store queries for operators: instances, the leader lease, health, retention.

Functions over an open Store rather than methods on it, so that the daemon's
store changes and these evolve separately. `prune` is also what the daemon
calls hourly to enforce `[jobd] history`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import peewee as pw

from jobd.core.model import FINAL_STATUSES, Presence, Status
from jobd.core.timeutil import from_db, to_db

if TYPE_CHECKING:
    from jobd.store.store import Store

FINAL = [status.value for status in FINAL_STATUSES]
# The statuses that say how a job's work went; cancelled and skipped runs say
# what an operator or the overlap policy decided, not whether the job works.
OUTCOMES = [Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.ABANDONED]
PRUNE_BATCH = 5000
# What `status` shows of an instance (plus `live`); a stable set for --json.
INSTANCE_KEYS = (
    "id",
    "host",
    "pid",
    "version",
    "started_at",
    "heartbeat_at",
    "role",
    "running",
    "clock_skew",
    "stopped_at",
)


def schema_version(store: Store) -> int:
    """The version recorded in the store (what migrations brought it to)."""
    value = store.m.Schema.select(pw.fn.MAX(store.m.Schema.version)).scalar()
    return int(value or 0)


# -- instances and the leader ----------------------------------------------------


def instances(
    store: Store, ttl: float, now: datetime, seen_within: float = 86400.0
) -> list[dict[str, Any]]:
    """Instances seen within `seen_within` seconds or still live, newest heartbeat first.

    Whether one is live is Store.presence's call, as for the daemons that
    declare one gone: by its lock on SQLite (an idle daemon there writes no
    heartbeat), by its heartbeat within the lease ttl otherwise.
    """
    Instance = store.m.Instance
    cutoff = now - timedelta(seconds=seen_within)
    rows = (
        Instance.select(*[getattr(Instance, key) for key in INSTANCE_KEYS])
        .where((Instance.heartbeat_at >= to_db(cutoff)) | Instance.stopped_at.is_null())
        .order_by(Instance.heartbeat_at.desc())
        .dicts()
    )
    result = []
    for row in rows:
        for key in ("started_at", "heartbeat_at", "stopped_at"):
            row[key] = from_db(row[key])
        row["live"] = (
            row["stopped_at"] is None
            and store.presence(row["id"], row["heartbeat_at"], ttl, now) is Presence.LIVE
        )
        if row["live"] or row["heartbeat_at"] >= cutoff:
            result.append(row)
    return result


def live_instances(store: Store, ttl: float, now: datetime) -> list[dict[str, Any]]:
    return [row for row in instances(store, ttl, now, seen_within=ttl) if row["live"]]


def last_heartbeat(store: Store) -> datetime | None:
    Instance = store.m.Instance
    return from_db(Instance.select(pw.fn.MAX(Instance.heartbeat_at)).scalar())


def leader_lease(store: Store, now: datetime) -> dict[str, Any] | None:
    """The table lease, when the daemons use one (leader = "table"); None otherwise."""
    Lease = store.m.Lease
    rows = list(Lease.select().order_by(Lease.name).dicts())
    if not rows:
        return None
    row = next((r for r in rows if r["name"] == "leader"), rows[0])
    acquired, expires = from_db(row["acquired_at"]), from_db(row["expires_at"])
    return {
        "name": row["name"],
        "holder": row["holder"],
        "host": row["host"],
        "epoch": row["epoch"],
        "acquired_at": acquired,
        "expires_at": expires,
        "age_s": (now - acquired).total_seconds() if acquired else None,
        "expired": expires is None or expires <= now,
    }


# -- jobs ----------------------------------------------------------------------


def upcoming(store: Store, limit: int = 5) -> list[dict[str, Any]]:
    """The next fires across all jobs that will fire (not paused, removed or disabled)."""
    Job = store.m.Job
    rows = (
        Job.select(Job.name, Job.next_fire_at, Job.timezone)
        .where(_firing(Job), Job.next_fire_at.is_null(False))
        .order_by(Job.next_fire_at, Job.name)
        .limit(limit)
    )
    return [{"job": r.name, "at": from_db(r.next_fire_at), "timezone": r.timezone} for r in rows]


def overdue(store: Store, before: datetime) -> list[dict[str, Any]]:
    """Jobs that should have fired before `before` and have not: no leader is firing."""
    Job = store.m.Job
    rows = (
        Job.select(Job.name, Job.next_fire_at)
        .where(_firing(Job), Job.next_fire_at < to_db(before))
        .order_by(Job.next_fire_at)
    )
    return [{"job": r.name, "due": from_db(r.next_fire_at)} for r in rows]


def _firing(Job: Any) -> Any:
    return (~Job.paused) & (~Job.removed) & Job.enabled


def last_outcomes(store: Store, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each job's latest succeeded/failed/timed_out/abandoned run; one index walk per job."""
    E = store.m.Execution
    result = {}
    for name in names:
        row = (
            E.select(E.id, E.status, E.finished_at, E.exit_code)
            .where(E.job == name, E.status.in_(OUTCOMES))
            .order_by(E.id.desc())
            .first()
        )
        if row is not None:
            result[name] = {
                "id": row.id,
                "status": row.status,
                "finished_at": from_db(row.finished_at),
                "exit_code": row.exit_code,
            }
    return result


def latest_runs(store: Store, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each job's latest run: its status and when it started (when it was queued,
    not started yet), for `jobd list`'s LAST, PASSED and STATUS; one index walk per job."""
    E = store.m.Execution
    result = {}
    for name in names:
        row = (
            E.select(E.status, E.started_at, E.queued_at)
            .where(E.job == name)
            .order_by(E.id.desc())
            .first()
        )
        if row is not None:
            result[name] = {
                "status": row.status,
                "at": from_db(row.started_at) or from_db(row.queued_at),
            }
    return result


# -- retention -----------------------------------------------------------------


def prune(
    store: Store,
    keep: int | None,
    older_than: float | None,
    now: datetime,
    dry_run: bool = False,
    batch: int = PRUNE_BATCH,
) -> dict[str, int]:
    """Delete final runs beyond each job's newest `keep` final runs, or that finished
    more than `older_than` seconds before `now`. Queued and running runs stay.

    Returns the runs deleted (or, with dry_run, that would be) per job, jobs
    with none left out. Each job's doomed runs are found as id bounds through
    the (job, id) index (walking only the rows to delete plus `keep`), then
    deleted in id ranges of `batch` rows, one short transaction each, so a
    daemon sharing the store is never blocked for long. None disables a limit.
    """
    if keep is None and older_than is None:
        return {}
    E, Job = store.m.Execution, store.m.Job
    cutoff = now - timedelta(seconds=older_than) if older_than is not None else None
    counts: dict[str, int] = {}
    names = [row.name for row in Job.select(Job.name).order_by(Job.name)]
    with_runs = _with_runs(store, names)
    for name in names:
        if name not in with_runs:
            continue  # nothing to delete, and no need for a query to say so
        doomed = _doomed(store, name, keep, cutoff)
        if doomed is None:
            continue
        if dry_run:
            count = E.select().where(E.job == name, doomed).count()
        else:
            count = delete_in_ranges(store, (E.job == name) & doomed, batch)
        if count:
            counts[name] = count
    return counts


def _with_runs(store: Store, names: list[str], chunk: int = 500) -> set[str]:
    """The jobs among `names` with at least one run: one indexed probe per job, 500
    jobs a query. A daemon with 10,000 jobs prunes hourly; most jobs have nothing
    to delete, and two or three queries each cost seconds of CPU an hour."""
    found: set[str] = set()
    p = store.db.param
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        marks = ", ".join([p] * len(part))
        cursor = store.db.execute_sql(
            f"SELECT name FROM jobs WHERE name IN ({marks}) "
            "AND EXISTS (SELECT 1 FROM executions WHERE executions.job = jobs.name)",
            part,
        )
        found.update(row[0] for row in cursor.fetchall())
    return found


def _doomed(store: Store, job: str, keep: int | None, cutoff: datetime | None) -> Any:
    """The condition, for one job, that selects the runs to delete; None for none."""
    E = store.m.Execution
    parts = []
    if keep is not None:
        # The newest final run beyond the `keep` newest: it and older ones go.
        bound = (
            E.select(E.id)
            .where(E.job == job, E.status.in_(FINAL))
            .order_by(E.id.desc())
            .offset(keep)
            .limit(1)
            .scalar()
        )
        if bound is not None:
            parts.append(E.id <= bound)
    if cutoff is not None:
        # Ids grow with queue time, so the first run queued after the cutoff
        # bounds the old ones; finished_at keeps the test exact (a run queued
        # long ago that finished recently stays). A run queued out of order
        # across hosts is caught by the next prune.
        first_new = (
            E.select(E.id)
            .where(E.job == job, E.queued_at >= to_db(cutoff))
            .order_by(E.id)
            .limit(1)
            .scalar()
        )
        old = E.finished_at < to_db(cutoff)
        parts.append(old if first_new is None else (E.id < first_new) & old)
    if not parts:
        return None
    condition = parts[0] if len(parts) == 1 else parts[0] | parts[1]
    return E.status.in_(FINAL) & condition


def delete_in_ranges(store: Store, doomed: Any, batch: int = PRUNE_BATCH) -> int:
    """Delete the executions `doomed` selects in id ranges of `batch` rows, one short
    transaction each, so a daemon sharing the store is never blocked for long."""
    E = store.m.Execution
    deleted, low = 0, 0
    while True:
        with store.atomic():
            high = (
                E.select(E.id)
                .where(E.id > low, doomed)
                .order_by(E.id)
                .offset(batch - 1)
                .limit(1)
                .scalar()
            )
            query = E.delete().where(E.id > low, doomed)
            if high is not None:
                query = query.where(E.id <= high)
            deleted += query.execute()
        if high is None:
            return deleted
        low = high
