"""Group quotas in the store: usage, admission under max_active, retention by max_retained.

Functions over an open Store, like the other operator queries. A job's group is
the jobs table's group_name column, written whenever the job is applied or
scheduled; the limits come from the config's [groups.NAME] tables.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import peewee as pw

from jobd.core.model import ACTIVE_STATUSES, GroupQuota, JobSpec, NewRun
from jobd.core.policies import FireAction, quota_decision
from jobd.store.admin import FINAL, delete_in_ranges

if TYPE_CHECKING:
    from jobd.store.store import Store

ACTIVE = [status.value for status in ACTIVE_STATUSES]


def _members(store: Store, group: str) -> Any:
    """The names of the group's jobs, removed ones too (their history still counts)."""
    Job = store.m.Job
    return Job.select(Job.name).where(Job.group_name == group)


def active_by_group(store: Store, groups: Sequence[str]) -> dict[str, int]:
    """Queued plus running runs per group; groups with none are absent."""
    if not groups:
        return {}
    E, Job = store.m.Execution, store.m.Job
    query = (
        E.select(Job.group_name, pw.fn.COUNT(E.id).alias("n"))
        .join(Job, on=(Job.name == E.job))
        .where(Job.group_name.in_(list(groups)), E.status.in_(ACTIVE))
        .group_by(Job.group_name)
    )
    return {row["group_name"]: row["n"] for row in query.dicts()}


def job_count(store: Store, group: str, excluding: str | None = None) -> int:
    Job = store.m.Job
    query = Job.select().where(Job.group_name == group, ~Job.removed)
    if excluding is not None:
        query = query.where(Job.name != excluding)
    return query.count()


def usage(store: Store, quotas: Mapping[str, GroupQuota]) -> list[dict[str, Any]]:
    """Each configured group's jobs, active runs and retained final runs, with its limits."""
    if not quotas:
        return []
    E, Job = store.m.Execution, store.m.Job
    names = list(quotas)
    jobs = dict(
        Job.select(Job.group_name, pw.fn.COUNT(Job.name))
        .where(Job.group_name.in_(names), ~Job.removed)
        .group_by(Job.group_name)
        .tuples()
    )
    retained = dict(
        E.select(Job.group_name, pw.fn.COUNT(E.id))
        .join(Job, on=(Job.name == E.job))
        .where(Job.group_name.in_(names), E.status.in_(FINAL))
        .group_by(Job.group_name)
        .tuples()
    )
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
    E = store.m.Execution
    members = _members(store, quota.name)
    bound = (
        E.select(E.id)
        .where(E.job.in_(members), E.status.in_(FINAL))
        .order_by(E.id.desc())
        .offset(quota.max_retained)
        .limit(1)
        .scalar()
    )
    if bound is None:
        return {}
    doomed = E.job.in_(members) & E.status.in_(FINAL) & (E.id <= bound)
    counts = dict(E.select(E.job, pw.fn.COUNT(E.id)).where(doomed).group_by(E.job).tuples())
    if not dry_run:
        delete_in_ranges(store, doomed)
    return counts
