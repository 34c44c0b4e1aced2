"""Group quotas: refusals that are audited, then raised as QuotaRefused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobd.errors import QuotaRefused
from jobd.store.groups import enqueue_within_quota, upsert_within_quota, usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobd.core.model import GroupQuota, JobSpec, NewRun
    from jobd.store import Store

REFUSED = "quota.refused"


def refuse(
    store: Store, actor: str, target: str, quota: GroupQuota, reason: str, **detail: Any
) -> None:
    """Record the refusal, then raise it: the audit trail shows who hit which quota."""
    store.audit(REFUSED, actor, target, {"group": quota.name, "reason": reason, **detail})
    raise QuotaRefused(f"{target}: refused: {reason}; try again later")


def enqueue_or_refuse(store: Store, actor: str, run: NewRun, quota: GroupQuota) -> int:
    run_id, reason = enqueue_within_quota(store, run, quota)
    if run_id is None:
        refuse(store, actor, run.job, quota, reason, request="trigger", max_active=quota.max_active)
    assert run_id is not None
    return run_id


def upsert_or_refuse(store: Store, actor: str, spec: JobSpec, quota: GroupQuota) -> bool:
    """Create or update a store-only job, unless that adds one too many to its group."""

    created, reason = upsert_within_quota(store, spec, quota)
    if created is None:
        refuse(store, actor, spec.name, quota, reason, request="schedule", max_jobs=quota.max_jobs)
    assert created is not None
    return created


def group_usage(store: Store, quotas: Mapping[str, GroupQuota]) -> list[dict[str, Any]]:
    """Each configured group's use against its quotas (none without groups: no query)."""
    if not quotas:
        return []

    return usage(store, quotas)
