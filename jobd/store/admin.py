"""Store queries for operators: instances, the leader lease, health, retention.

Functions over an open Store rather than methods on it, so that the daemon's
store changes and these evolve separately. `prune` is also what the daemon
calls hourly to enforce `[jobd] history`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobd.core.model import FINAL_STATUSES, Presence, Status
from jobd.core.timeutil import from_db, to_db
from jobd.store import queries as q
from jobd.store.queries import INSTANCE_COLUMNS as INSTANCE_KEYS

if TYPE_CHECKING:
    from jobd.store.store import Store

FINAL = [status.value for status in FINAL_STATUSES]
# The statuses that say how a job's work went; cancelled and skipped runs say
# what an operator or the overlap policy decided, not whether the job works.
OUTCOMES = tuple(
    s.value for s in (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.ABANDONED)
)
PRUNE_BATCH = 5000


def schema_version(store: Store) -> int:
    """The version recorded in the store (what migrations brought it to)."""
    return int(store.dialect.one(q.SCHEMA_VERSION_READ)[0] or 0)


# -- instances and the leader ----------------------------------------------------


def instances(
    store: Store, ttl: float, now: datetime, seen_within: float = 86400.0
) -> list[dict[str, Any]]:
    """Instances seen within `seen_within` seconds or still live, newest heartbeat first.

    Whether one is live is Store.presence's call, as for the daemons that
    declare one gone: by its lock on SQLite (an idle daemon there writes no
    heartbeat), by its heartbeat within the lease ttl otherwise.
    """
    cutoff = now - timedelta(seconds=seen_within)
    result = []
    for values in store.dialect.all(q.INSTANCES_SEEN, (to_db(cutoff),)):
        row = dict(zip(INSTANCE_KEYS, values, strict=True))
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
    return from_db(store.dialect.one(q.LAST_HEARTBEAT)[0])


def leader_lease(store: Store, now: datetime) -> dict[str, Any] | None:
    """The table lease, when the daemons use one (leader = "table"); None otherwise."""
    rows = [dict(zip(q.LEASE_COLUMNS, r, strict=True)) for r in store.dialect.all(q.LEASES)]
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
    return [
        {"job": name, "at": from_db(at), "timezone": timezone}
        for name, at, timezone in store.dialect.all(q.UPCOMING, (limit,))
    ]


def overdue(store: Store, before: datetime) -> list[dict[str, Any]]:
    """Jobs that should have fired before `before` and have not: no leader is firing."""
    return [
        {"job": name, "due": from_db(due)}
        for name, due in store.dialect.all(q.OVERDUE, (to_db(before),))
    ]


def last_outcomes(store: Store, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each job's latest succeeded/failed/timed_out/abandoned run; one index walk per job."""
    rows = _latest(store, names, q.NEWEST_OUTCOME_OF, q.OUTCOME_ROWS, OUTCOMES)
    return {
        job: {
            "id": run_id,
            "status": status,
            "finished_at": from_db(finished_at),
            "exit_code": exit_code,
        }
        for job, run_id, status, finished_at, exit_code in rows
    }


def latest_runs(store: Store, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each job's latest run: its status and when it started (when it was queued,
    not started yet), for `jobd list`'s LAST, PASSED and STATUS; one index walk per job."""
    rows = _latest(store, names, q.NEWEST_OF, q.LATEST_ROWS)
    return {
        job: {"status": status, "at": from_db(started_at) or from_db(queued_at)}
        for job, _run_id, status, started_at, queued_at in rows
    }


def _latest(
    store: Store,
    names: Sequence[str],
    newest: q.Query,
    rows_of: q.Query,
    statuses: Sequence[str] = (),
) -> list:
    """(job, id, *columns) of each named job's newest run (`newest`: of those that
    count), for jobs that have one. Two statements per batch of names, not a query
    per job: a store of 100,000 jobs is listed in a few hundred statements. The
    newest id comes from a backward walk of the (job, id) index per job, the rows
    (`rows_of`) by their primary key."""
    newest_ids = store.dialect.run_in(newest, names, before=statuses)
    found = {run_id: job for job, run_id in newest_ids if run_id is not None}
    return [(found[row[0]], *row) for row in store.dialect.run_in(rows_of, list(found))]


# -- retention -----------------------------------------------------------------


@dataclass(frozen=True)
class Doomed:
    """Which runs a prune deletes: a fragment of queries.py (its `{in}` the final
    statuses) and its parameters."""

    fragment: q.Query
    before: tuple[Any, ...]  # the parameters before the final statuses
    after: tuple[Any, ...]  # and after them

    def params(self) -> tuple[Any, ...]:
        return (*self.before, *FINAL, *self.after)


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
    cutoff = now - timedelta(seconds=older_than) if older_than is not None else None
    counts: dict[str, int] = {}
    names = [row[0] for row in store.dialect.all(q.JOB_NAMES)]
    # Most jobs have nothing to delete: one indexed probe per job, 500 jobs a
    # query, says which have runs at all (a daemon with 10,000 jobs prunes hourly).
    with_runs = {row[0] for row in store.dialect.run_in(q.JOBS_WITH_RUNS, names)}
    for name in names:
        if name not in with_runs:
            continue  # nothing to delete, and no need for a query to say so
        doomed = _doomed(store, name, keep, cutoff)
        if doomed is None:
            continue
        if dry_run:
            sql = store.dialect.text(q.DOOMED_COUNT, doomed.fragment, **{"in": len(FINAL)})
            count = int(store.db.execute_sql(sql, doomed.params()).fetchone()[0])
        else:
            count = delete_in_ranges(store, doomed, batch)
        if count:
            counts[name] = count
    return counts


def _doomed(store: Store, job: str, keep: int | None, cutoff: datetime | None) -> Doomed | None:
    """The runs of one job to delete; None for none."""
    bound = first_new = None
    if keep is not None:
        sql = store.dialect.text(q.KEEP_BOUND, **{"in": len(FINAL)})
        row = store.db.execute_sql(sql, (job, *FINAL, keep)).fetchone()
        bound = row[0] if row else None
    if cutoff is not None:
        row = store.dialect.one(q.FIRST_SINCE, (job, to_db(cutoff)))
        first_new = row[0] if row else None
    if bound is None and cutoff is None:
        return None
    return Doomed(q.DOOMED_OF_JOB, (job,), (bound, to_db(cutoff), first_new, first_new))


def delete_in_ranges(store: Store, doomed: Doomed, batch: int = PRUNE_BATCH) -> int:
    """Delete the executions `doomed` selects in id ranges of `batch` rows, one short
    transaction each, so a daemon sharing the store is never blocked for long."""
    d = store.dialect
    statuses = {"in": len(FINAL)}
    range_end = d.text(q.DOOMED_RANGE_END, doomed.fragment, **statuses)
    delete_range = d.text(q.DELETE_RANGE, doomed.fragment, **statuses)
    delete_rest = d.text(q.DELETE_REST, doomed.fragment, **statuses)
    deleted, low = 0, 0
    while True:
        with store.atomic():
            row = store.db.execute_sql(range_end, (low, *doomed.params(), batch - 1)).fetchone()
            high = row[0] if row else None
            if high is None:
                cursor = store.db.execute_sql(delete_rest, (low, *doomed.params()))
            else:
                cursor = store.db.execute_sql(delete_range, (low, high, *doomed.params()))
            deleted += cursor.rowcount
        if high is None:
            return deleted
        low = high
