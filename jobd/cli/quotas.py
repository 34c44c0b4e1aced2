"""Group quotas at the command line: refusals that exit 75 and are audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobd.cli.context import actor
from jobd.errors import QuotaRefused

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobd.model import GroupQuota, JobSpec, NewRun
    from jobd.store import Store

REFUSED = "quota.refused"


def refuse(store: Store, target: str, quota: GroupQuota, reason: str, **detail: Any) -> None:
    """Record the refusal, then raise it: the audit trail shows who hit which quota."""
    store.audit(REFUSED, actor(), target, {"group": quota.name, "reason": reason, **detail})
    raise QuotaRefused(f"{target}: refused: {reason}; try again later")


def enqueue_or_refuse(store: Store, run: NewRun, quota: GroupQuota) -> int:
    from jobd.store.groups import enqueue_within_quota

    run_id, reason = enqueue_within_quota(store, run, quota)
    if run_id is None:
        refuse(store, run.job, quota, reason, request="trigger", max_active=quota.max_active)
    assert run_id is not None
    return run_id


def upsert_or_refuse(store: Store, spec: JobSpec, quota: GroupQuota) -> bool:
    """`jobd schedule --group`: create or update the job, unless that adds one too many."""
    from jobd.store.groups import upsert_within_quota

    created, reason = upsert_within_quota(store, spec, quota)
    if created is None:
        refuse(store, spec.name, quota, reason, request="schedule", max_jobs=quota.max_jobs)
    assert created is not None
    return created


def group_usage(store: Store, quotas: Mapping[str, GroupQuota]) -> list[dict[str, Any]]:
    """Each configured group's use against its quotas (none without groups: no query)."""
    if not quotas:
        return []
    from jobd.store.groups import usage

    return usage(store, quotas)


def quota_cell(used: int, limit: int) -> str:
    """`3/5`, or `3` when unlimited."""
    return f"{used}/{limit}" if limit else str(used)


def quota_style(cell: str) -> str | None:
    """Yellow when a quota is reached: the next request there is refused or skipped."""
    used, _, limit = cell.partition("/")
    return "yellow bold" if limit and int(used) >= int(limit) else None
