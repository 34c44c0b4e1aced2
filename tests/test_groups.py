"""Group quotas against the real store: the migration that adds jobs.group_name,
usage, admission under max_active, the daemon's fire path, and max_retained."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import Config, GroupQuota, NewRun, Outcome, Status, Trigger
from jobd.core.policies import FireAction, quota_decision
from jobd.daemon.loop import Daemon
from jobd.store import Store
from jobd.store import groups as store_groups
from jobd.store.migrations import SCHEMA_VERSION
from tests.conftest import finish_run, open_store

TWO_TENANTS = """
[groups.tenant-a]
max_active = 2
max_jobs = 5
max_retained = 4
[groups.tenant-b]
[jobs.scan_a1]
command = ["true"]
group = "tenant-a"
[jobs.scan_a2]
command = ["true"]
group = "tenant-a"
[jobs.scan_b]
command = ["true"]
group = "tenant-b"
[jobs.loner]
command = ["true"]
"""


def apply(store: Store, text: str = TWO_TENANTS) -> Config:
    config = parse_config(text, "jobd.toml", {})
    store.apply_config(config, store.now())
    return config


def manual(job: str, store: Store) -> NewRun:
    return NewRun(job=job, trigger=Trigger.MANUAL, not_before=store.now())


def finish_all(store: Store) -> None:
    """Run every queued run to success (claims take one run per exclusive job at a time)."""
    while claimed := store.claim("i", "h", 100):
        for run, _spec in claimed:
            finish_run(store, run.id, "i", Outcome(Status.SUCCEEDED, 0))


# -- pure policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "active", "action"),
    [
        (None, 99, FireAction.ENQUEUE),
        (GroupQuota("g"), 99, FireAction.ENQUEUE),  # 0 = unlimited
        (GroupQuota("g", max_active=2), 1, FireAction.ENQUEUE),
        (GroupQuota("g", max_active=2), 2, FireAction.SKIP),
        (GroupQuota("g", max_active=2), 3, FireAction.SKIP),
    ],
)
def test_quota_decision(quota: GroupQuota | None, active: int, action: FireAction) -> None:
    decision = quota_decision(quota, active)
    assert decision.action is action
    if action is FireAction.SKIP:
        assert decision.reason == (
            f"group 'g' is at its quota: {active} of max_active = 2 runs queued or running"
        )


# -- the store -------------------------------------------------------------------------


def test_a_version_1_store_gains_the_group_column(store_url: str) -> None:
    store = open_store(store_url)
    apply(store, '[jobs.old]\ncommand = ["true"]\n')
    # Make it what jobd 0.1 left behind: no group_name column, schema version 1.
    index = next(i.name for i in store.db.get_indexes("jobs") if i.columns == ["group_name"])
    store.db.execute_sql(f'DROP INDEX "{index}"')
    store.db.execute_sql("ALTER TABLE jobs DROP COLUMN group_name")
    store.m.Schema.update(version=1).execute()
    store.close()

    store = open_store(store_url)
    try:
        assert store.m.Schema.get().version == SCHEMA_VERSION == 6
        assert "group_name" in {c.name for c in store.db.get_columns("jobs")}
        assert any(i.columns == ["group_name"] for i in store.db.get_indexes("jobs"))
        assert store.job("old") is not None  # rows survive
        apply(store)
        assert store.m.Job.get(store.m.Job.name == "scan_a1").group_name == "tenant-a"
    finally:
        store.close()


def test_usage_counts_jobs_active_and_retained_runs(store: Store) -> None:
    config = apply(store)
    store.enqueue(manual("scan_a2", store))
    store.enqueue(manual("loner", store))
    finish_all(store)
    store.enqueue(manual("scan_a1", store))
    store.claim("i", "h", 10)  # running counts as active too
    store.enqueue(manual("scan_a1", store))
    usage = {row["group"]: row for row in store_groups.usage(store, config.groups)}
    assert usage["tenant-a"] == {
        "group": "tenant-a",
        "jobs": 2,
        "max_jobs": 5,
        "active": 2,
        "max_active": 2,
        "retained": 1,
        "max_retained": 4,
    }
    assert usage["tenant-b"]["jobs"] == 1 and usage["tenant-b"]["active"] == 0


def test_enqueue_within_quota_refuses_at_max_active(store: Store) -> None:
    config = apply(store)
    quota = config.groups["tenant-a"]
    first, _ = store_groups.enqueue_within_quota(store, manual("scan_a1", store), quota)
    second, _ = store_groups.enqueue_within_quota(store, manual("scan_a2", store), quota)
    third, reason = store_groups.enqueue_within_quota(store, manual("scan_a1", store), quota)
    assert first and second and third is None
    assert reason == "group 'tenant-a' is at its quota: 2 of max_active = 2 runs queued or running"
    assert store_groups.active_by_group(store, ["tenant-a"]) == {"tenant-a": 2}
    # Another group, and jobs without one, are not affected.
    other, _ = store_groups.enqueue_within_quota(
        store, manual("scan_b", store), config.groups["tenant-b"]
    )
    assert other is not None


def test_the_daemon_skips_scheduled_fires_over_quota(store: Store) -> None:
    text = TWO_TENANTS.replace(
        'command = ["true"]\ngroup = "tenant-a"',
        ('schedule = "* * * * * *"\ncommand = ["true"]\ngroup = "tenant-a"'),
    )
    text = text.replace("max_active = 2", "max_active = 1")
    config = parse_config(text, "jobd.toml", {})
    store.apply_config(config, store.now() - timedelta(seconds=5))
    daemon = Daemon(config, store)
    try:
        daemon.leader.poll()
        term = daemon.leader.term()
        assert term is not None
        # At the moment it took the lead: each job then has exactly one fire (its
        # latest missed slot), where a later `now` may cross into a new second.
        daemon.fire_due(term.since)
    finally:
        daemon.leader.release()
        daemon.waker.close()
    runs = store.executions(limit=None)
    by_status: dict[str, list[Any]] = {}
    for run in runs:
        by_status.setdefault(run.status.value, []).append(run)
    assert len(by_status["queued"]) == 1  # max_active = 1 across both jobs
    skipped = by_status["skipped"]
    assert len(skipped) == 1
    assert skipped[0].error == (
        "group 'tenant-a' is at its quota: 1 of max_active = 1 runs queued or running"
    )


def test_prune_retained_keeps_the_newest_across_the_group(store: Store) -> None:
    config = apply(store)
    ids = []
    for job in ["scan_a1", "scan_a2", "scan_b", "loner"] * 3:
        run_id = store.enqueue(manual(job, store))
        ids.append((job, run_id))
    finish_all(store)
    pending = store.enqueue(manual("scan_a1", store))  # queued: never pruned
    quota = config.groups["tenant-a"]  # max_retained = 4
    assert store_groups.prune_retained(store, quota, dry_run=True) == {"scan_a1": 1, "scan_a2": 1}
    assert store_groups.prune_retained(store, quota) == {"scan_a1": 1, "scan_a2": 1}
    left = {r.id for r in store.executions(limit=None)}
    group_ids = [i for job, i in ids if job in ("scan_a1", "scan_a2")]
    assert {i for i in group_ids if i in left} == set(group_ids[-4:])
    assert pending in left
    assert all(i in left for job, i in ids if job in ("scan_b", "loner"))
    assert store_groups.prune_retained(store, quota) == {}
    assert store_groups.prune_retained(store, config.groups["tenant-b"]) == {}  # unlimited
