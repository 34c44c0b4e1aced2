"""status, check, prune, audit: what operators and monitors read, on both backends."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from jobd.core.timeutil import to_db
from jobd.store import admin
from jobd.store.migrations import SCHEMA_VERSION
from jobd.store.queries import NEW_JOB_COLUMNS
from tests.clihelp import (
    ANSI,
    RUN_SHAPE,
    MapOf,
    Time,
    add_instance,
    add_job,
    check_shape,
    invoke,
    jobd,
    nullable,
    postgresql_url,
)

__all__ = ["postgresql_url"]  # the fixture alias, see tests.clihelp

STATUS_SHAPE = {
    "store": {"url": str, "backend": str, "schema_version": int},
    "leader": nullable(
        {
            "name": str,
            "holder": nullable(str),
            "host": nullable(str),
            "epoch": int,
            "acquired_at": nullable(Time),
            "expires_at": nullable(Time),
            "age_s": nullable(float),
            "expired": bool,
        }
    ),
    "instances": [
        {
            "id": str,
            "host": str,
            "pid": int,
            "version": str,
            "started_at": Time,
            "heartbeat_at": Time,
            "role": str,
            "running": int,
            "clock_skew": nullable(float),
            "stopped_at": nullable(Time),
            "live": bool,
        }
    ],
    "queue_depth": int,
    "running": [RUN_SHAPE],
    "next_fires": [{"job": str, "at": Time, "timezone": str}],
    "groups": [
        {
            "group": str,
            "jobs": int,
            "max_jobs": int,
            "active": int,
            "max_active": int,
            "retained": int,
            "max_retained": int,
        }
    ],
    "checked_at": Time,
}
CHECK_SHAPE = {
    "healthy": bool,
    "reasons": [{"check": str, "job": nullable(str), "message": str}],
    "live_instances": int,
    "jobs": int,
    "checked_at": Time,
}
PRUNE_SHAPE = {
    "dry_run": bool,
    "keep": nullable(int),
    "older_than_s": nullable(float),
    "deleted": MapOf(int),
    "groups": MapOf(int),
    "total": int,
}
AUDIT_SHAPE = [
    {
        "id": int,
        "at": Time,
        "action": str,
        "actor": str,
        "target": nullable(str),
        "detail": nullable(dict),
    }
]


def enqueue(store: Any, job: str, status: Status = Status.QUEUED) -> int:
    run = NewRun(job=job, trigger=Trigger.MANUAL, not_before=store.now(), status=status)
    return store.enqueue(run)


def set_lease(store: Any, expires_in: float) -> None:
    now = store.now()
    store.m.Lease.insert(
        name="leader",
        holder="inst-1",
        host="db-host-1",
        epoch=7,
        acquired_at=to_db(now - timedelta(minutes=10)),
        expires_at=to_db(now + timedelta(seconds=expires_in)),
    ).execute()


# -- status ----------------------------------------------------------------------


def test_status_json(store_url: str, store: Any) -> None:
    add_job(store, "backup", schedule="@hourly")
    add_job(store, "manual", schedule=None)
    add_instance(store, "live-1")
    add_instance(store, "gone-1", heartbeat=store.now() - timedelta(minutes=10))
    set_lease(store, expires_in=20)
    running = [enqueue(store, "backup"), enqueue(store, "manual")]
    store.claim("live-1", "h1", 2)
    queued = enqueue(store, "backup")
    result = invoke(store_url, "status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    check_shape(report, STATUS_SHAPE)
    assert report["store"]["backend"] in ("sqlite", "postgresql")
    assert report["store"]["schema_version"] == SCHEMA_VERSION
    assert (report["leader"]["holder"], report["leader"]["epoch"]) == ("inst-1", 7)
    assert report["leader"]["expired"] is False and report["leader"]["age_s"] >= 599
    live = {i["id"]: i["live"] for i in report["instances"]}
    assert live == {"live-1": True, "gone-1": False}
    assert sorted(r["id"] for r in report["running"]) == running
    assert report["queue_depth"] == 1 and queued
    assert [f["job"] for f in report["next_fires"]] == ["backup"]


def test_status_for_people_on_a_pipe(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup", schedule="@hourly")
    add_instance(store, "live-1")
    result = jobd(store_url, tmp_path, "status")
    assert result.returncode == 0, result.stderr
    assert not ANSI.search(result.stdout)
    assert "leader     live-1 on " in result.stdout  # its heartbeat says it leads
    assert "instances  1 live, 0 gone" in result.stdout
    assert "live-1" in result.stdout and "backup" in result.stdout


def test_status_masks_the_store_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:hunter2@")
    result = invoke(url, "status", "--json")
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert json.loads(result.output)["store"]["url"].startswith("postgresql://postgres:***@")


# -- check -----------------------------------------------------------------------


def test_check_healthy(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup", schedule="@hourly")
    enqueue(store, "backup", Status.FAILED)
    enqueue(store, "backup", Status.SUCCEEDED)
    enqueue(store, "backup", Status.CANCELLED)  # a decision, not an outcome
    add_instance(store)
    set_lease(store, expires_in=20)
    result = jobd(store_url, tmp_path, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("healthy: 1 live instance(s), 1 job(s)")
    check_shape(json.loads(invoke(store_url, "check", "--json").output), CHECK_SHAPE)


def test_check_unhealthy_names_every_reason(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "late", schedule="@hourly")
    add_job(store, "paused_late", schedule="@hourly")
    add_job(store, "broken", schedule="@hourly")
    Job = store.m.Job
    hour_ago = to_db(store.now() - timedelta(hours=1))
    Job.update(next_fire_at=hour_ago).where(Job.name.in_(["late", "paused_late"])).execute()
    store.set_paused("paused_late", True, store.now())
    enqueue(store, "broken", Status.TIMED_OUT)
    add_instance(store, "old", heartbeat=store.now() - timedelta(minutes=5))
    set_lease(store, expires_in=-90)
    result = jobd(store_url, tmp_path, "check", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    check_shape(report, CHECK_SHAPE)
    assert report["healthy"] is False
    kinds = sorted((r["check"], r["job"]) for r in report["reasons"])
    assert kinds == [
        ("failing", "broken"),
        ("instances", None),
        ("leader", None),
        ("overdue", "late"),
    ]
    text = jobd(store_url, tmp_path, "check")
    assert text.returncode == 1
    assert text.stdout.splitlines()[0] == "unhealthy: 4 problem(s)"
    assert "no live instance (last heartbeat 5m" in text.stdout
    assert "broken: last run" in text.stdout and "timed_out" in text.stdout


def test_check_store_unreachable_is_69(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing-dir/jobd.db"
    result = jobd(url, tmp_path, "check")
    assert result.returncode == 69 and result.stderr.count("\n") == 1


# -- prune -----------------------------------------------------------------------


def age(store: Any, run_ids: list[int], days: float) -> None:
    E = store.m.Execution
    then = to_db(store.now() - timedelta(days=days))
    E.update(queued_at=then, finished_at=then).where(E.id.in_(run_ids)).execute()


def test_prune_keeps_the_newest_and_never_active_runs(store: Any) -> None:
    add_job(store, "a")
    add_job(store, "b")
    old_queued = enqueue(store, "a")
    finals = [enqueue(store, "a", Status.SUCCEEDED) for _ in range(10)]
    running = enqueue(store, "a")
    store.claim("i", "h", 2)
    b_runs = [enqueue(store, "b", Status.FAILED) for _ in range(2)]
    now = store.now()
    assert admin.prune(store, 3, None, now, dry_run=True) == {"a": 7}
    assert len(store.executions("a", limit=None)) == 12
    assert admin.prune(store, 3, None, now, batch=2) == {"a": 7}
    left = sorted(r.id for r in store.executions("a", limit=None))
    assert left == sorted([old_queued, running, *finals[-3:]])
    assert sorted(r.id for r in store.executions("b", limit=None)) == b_runs
    assert admin.prune(store, 3, None, now) == {}


def test_prune_by_age(store: Any) -> None:
    add_job(store, "a")
    old = [enqueue(store, "a", Status.SUCCEEDED) for _ in range(4)]
    old_active = enqueue(store, "a")
    new = [enqueue(store, "a", Status.FAILED) for _ in range(3)]
    age(store, [*old, old_active], days=100)
    long_run = old[-1]  # queued 100 days ago, finished just now
    E = store.m.Execution
    E.update(finished_at=to_db(store.now())).where(E.id == long_run).execute()
    counts = admin.prune(store, None, 90 * 86400.0, store.now(), batch=1)
    assert counts == {"a": 3}
    left = sorted(r.id for r in store.executions("a", limit=None))
    assert left == sorted([long_run, old_active, *new])


def test_prune_either_limit(store: Any) -> None:
    add_job(store, "a")
    old = [enqueue(store, "a", Status.SUCCEEDED) for _ in range(2)]
    new = [enqueue(store, "a", Status.SUCCEEDED) for _ in range(5)]
    age(store, old, days=10)
    assert admin.prune(store, 3, 86400.0, store.now()) == {"a": 4}
    assert sorted(r.id for r in store.executions("a", limit=None)) == new[2:]


def test_prune_command(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "a")
    for _ in range(5):
        enqueue(store, "a", Status.SUCCEEDED)
    config = tmp_path / "jobd.toml"
    config.write_text('[jobd]\nhistory = { keep = 2, max_age = "0s" }\n')
    dry = jobd(store_url, tmp_path, "prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    check_shape(report, PRUNE_SHAPE)
    assert (report["deleted"], report["keep"], report["older_than_s"]) == ({"a": 3}, 2, None)
    assert store.audit_events(5) == []
    done = jobd(store_url, tmp_path, "prune", "--keep", "1", "--older-than", "30d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["JOB", "RUNS", "a", "4"]
    assert "deleted 4 run(s): newest 1 per job kept, older than 30d" in done.stderr
    event = store.audit_events(1)[0]
    assert (event["action"], event["detail"]["deleted"]) == ("prune", 4)
    bad = jobd(store_url, tmp_path, "prune", "--older-than", "forever")
    assert bad.returncode == 2 and "--older-than" in bad.stderr


# -- audit -----------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["1", "5"])
def test_audit(store_url: str, store: Any, limit: str) -> None:
    store.audit("trigger", "alice@h", "backup", {"run": 1})
    store.audit("pause", "bob@h", "backup")
    result = invoke(store_url, "audit", "--limit", limit, "--json")
    assert result.exit_code == 0, result.output
    events = json.loads(result.output)
    check_shape(events, AUDIT_SHAPE)
    assert [e["action"] for e in events] == ["pause", "trigger"][: int(limit)]
    table = invoke(store_url, "audit")
    assert table.output.splitlines()[0].split() == [
        "ID",
        "AT",
        "ACTION",
        "ACTOR",
        "TARGET",
        "DETAIL",
    ]
    assert '{"run": 1}' in table.output


# -- each job's latest run, for list and check --------------------------------------


def test_latest_runs_of_many_jobs_take_a_few_statements_not_one_per_job(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jobd list` and `jobd check` read each job's newest run (and newest outcome)
    in two statements per batch of jobs: with 100,000 jobs, one query per job took
    minutes."""
    names = [f"j{i:04d}" for i in range(1100)]
    for name in names[:3]:
        add_job(store, name)
    spec = store.job(names[0]).spec
    row = dict(zip(NEW_JOB_COLUMNS, store._job_row(spec, store.now()), strict=True))
    store.m.Job.insert_many([{**row, "name": name} for name in names[3:]]).execute()
    done = enqueue(store, names[0], Status.SUCCEEDED)
    queued = enqueue(store, names[0])  # newer, and not an outcome
    failed = enqueue(store, names[1], Status.FAILED)
    enqueue(store, names[2], Status.CANCELLED)  # not an outcome either
    statements = []
    execute_sql = store.db.execute_sql

    def counted(sql: str, *args: Any, **kwargs: Any) -> Any:
        statements.append(sql)
        return execute_sql(sql, *args, **kwargs)

    monkeypatch.setattr(store.db, "execute_sql", counted)
    latest = admin.latest_runs(store, names)
    assert {name: run["status"] for name, run in latest.items()} == {
        names[0]: "queued",
        names[1]: "failed",
        names[2]: "cancelled",
    }
    assert latest[names[0]]["at"] is not None
    outcomes = admin.last_outcomes(store, names)
    assert {name: (o["id"], o["status"]) for name, o in outcomes.items()} == {
        names[0]: (done, "succeeded"),
        names[1]: (failed, "failed"),
    }
    assert queued not in {o["id"] for o in outcomes.values()}
    # Three batches of names each: a statement for the newest ids, one for their rows.
    assert len(statements) <= 12, len(statements)
