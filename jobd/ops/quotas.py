"""Group quotas: refusals that are audited, then raised as QuotaRefused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from jobd.errors import QuotaRefused
from jobd.store.groups import enqueue_within_quota, upsert_within_quota, usage

if TYPE_CHECKING:
    from collections.abc import Mapping

    from jobd.core.model import GroupQuota, JobSpec, NewRun
    from jobd.store import Store

REFUSED = "quota.refused"

T = TypeVar("T")


def refuse(
    store: Store, actor: str, target: str, quota: GroupQuota, reason: str, **detail: Any
) -> None:
    """Record the refusal, then raise it: the audit trail shows who hit which quota."""
    store.audit(REFUSED, actor, target, {"group": quota.name, "reason": reason, **detail})
    raise QuotaRefused(f"{target}: refused: {reason}; try again later")


def enqueue_or_refuse(store: Store, actor: str, run: NewRun, quota: GroupQuota) -> int:
    run_id, reason = enqueue_within_quota(store, run, quota)
    detail = {"request": "trigger", "max_active": quota.max_active}
    return _granted(run_id, reason, store, actor, run.job, quota, detail)


def upsert_or_refuse(store: Store, actor: str, spec: JobSpec, quota: GroupQuota) -> bool:
    """Create or update a store-only job, unless that adds one too many to its group."""
    created, reason = upsert_within_quota(store, spec, quota)
    detail = {"request": "schedule", "max_jobs": quota.max_jobs}
    return _granted(created, reason, store, actor, spec.name, quota, detail)


def _granted(
    value: T | None,
    reason: str,
    store: Store,
    actor: str,
    target: str,
    quota: GroupQuota,
    detail: dict[str, Any],
) -> T:
    """The store's answer when the quota allowed it; else the audited refusal."""
    if value is None:
        refuse(store, actor, target, quota, reason, **detail)
    assert value is not None
    return value


def group_usage(store: Store, quotas: Mapping[str, GroupQuota]) -> list[dict[str, Any]]:
    """Each configured group's use against its quotas (none without groups: no query)."""
    if not quotas:
        return []

    return usage(store, quotas)
