"""Group quotas in the store: usage, admission under max_active, retention by max_retained.

Functions over an open Store, like the other operator queries. A job's group is
the jobs table's group_name column, written whenever the job is applied or
scheduled; the limits come from the config's [groups.NAME] tables.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobd.core.model import ACTIVE_STATUSES, GroupQuota, JobSpec, NewRun
from jobd.core.policies import FireAction, quota_decision
from jobd.store import queries as q
from jobd.store.admin import FINAL, Doomed, delete_in_ranges

if TYPE_CHECKING:
    from jobd.store.store import Store

ACTIVE = tuple(status.value for status in ACTIVE_STATUSES)


def active_by_group(store: Store, groups: Sequence[str]) -> dict[str, int]:
    """Queued plus running runs per group; groups with none are absent."""
    if not groups:
        return {}
    return dict(store.dialect.run_in(q.ACTIVE_BY_GROUP, list(groups), before=ACTIVE))


def job_count(store: Store, group: str, excluding: str | None = None) -> int:
    if excluding is None:
        return int(store.dialect.one(q.GROUP_JOBS, (group,))[0])
    return int(store.dialect.one(q.GROUP_JOBS_BUT, (group, excluding))[0])


def usage(store: Store, quotas: Mapping[str, GroupQuota]) -> list[dict[str, Any]]:
    """Each configured group's jobs, active runs and retained final runs, with its limits."""
    if not quotas:
        return []
    names = list(quotas)
    jobs = dict(store.dialect.run_in(q.JOBS_BY_GROUP, names))
    sql = store.dialect.text(q.RETAINED_BY_GROUP, **{"in": len(names), "final": len(FINAL)})
    retained = dict(store.db.execute_sql(sql, (*names, *FINAL)).fetchall())
    active = active_by_group(store, names)
    return [
        {
            "group": name,
            "jobs": jobs.get(name, 0),
            "max_jobs": quota.max_jobs,
            "active": active.get(name, 0),
            "max_active": quota.max_active,
            "retained": retained.get(name, 0),
            "max_retained": quota.max_retained,
        }
        for name, quota in sorted(quotas.items())
    ]


def enqueue_within_quota(store: Store, run: NewRun, quota: GroupQuota) -> tuple[int | None, str]:
    """Queue `run` unless its group already has max_active runs queued or running.

    Returns (run id, "") or (None, the reason). The count and the insert are one
    transaction, serialized per group (an advisory lock on PostgreSQL; SQLite's
    write transactions are serialized already), so two triggers racing for the
    last slot cannot both get it.
    """
    with store.atomic():
        _lock(store, quota)
        active = active_by_group(store, [quota.name]).get(quota.name, 0)
        decision = quota_decision(quota, active)
        if decision.action is FireAction.SKIP:
            return None, decision.reason or ""
        run_id = store.insert_run(run, store.now())
    store.wake_daemons()
    return run_id, ""


def _lock(store: Store, quota: GroupQuota) -> None:
    """Serialize admissions to one group (SQLite's write transactions already are)."""
    store.dialect.lock(zlib.crc32(f"jobd-group:{quota.name}".encode()))


def upsert_within_quota(store: Store, spec: JobSpec, quota: GroupQuota) -> tuple[bool | None, str]:
    """Create or update a store-only job in `quota`'s group unless the group already
    has max_jobs other jobs. Returns (created, "") or (None, the reason)."""
    with store.atomic():
        _lock(store, quota)
        others = job_count(store, quota.name, excluding=spec.name)
        if quota.max_jobs and others >= quota.max_jobs:
            return None, (
                f"group {quota.name!r} is at its quota: {others} of max_jobs = "
                f"{quota.max_jobs} jobs"
            )
        return store.upsert_cli_job(spec, store.now()), ""


def prune_retained(store: Store, quota: GroupQuota, dry_run: bool = False) -> dict[str, int]:
    """Delete the group's final runs beyond its newest max_retained; per job, what went.

    Queued and running runs always stay. The bound is found once through the
    executions' id order; the deletes go in id ranges, as `jobd prune`'s do.
    """
    if not quota.max_retained:
        return {}
    d = store.dialect
    # The group's jobs, removed ones too: their history still counts.
    sql = d.text(q.GROUP_BOUND, **{"in": len(FINAL)})
    row = store.db.execute_sql(sql, (quota.name, *FINAL, quota.max_retained)).fetchone()
    if row is None:
        return {}
    doomed = Doomed(q.DOOMED_OF_GROUP, (quota.name,), (row[0],))
    sql = d.text(q.DOOMED_BY_JOB, doomed.fragment, **{"in": len(FINAL)})
    counts = dict(store.db.execute_sql(sql, doomed.params()).fetchall())
    if not dry_run:
        delete_in_ranges(store, doomed)
    return counts
