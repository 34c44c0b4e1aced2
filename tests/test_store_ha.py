"""Store behaviour that several instances rely on: lost-run recovery, refusing a
late finish, telling a returning instance what to stop, and lock ordering."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg2
import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Outcome, Status, Trigger
from jobd.core.timeutil import to_db
from tests.conftest import wait_for

TTL = 5.0


def _setup(store: Any, store_url: str, jobs: str) -> None:
    config = parse_config(f'[jobd]\nstore = "{store_url}"\n\n{jobs}')
    store.apply_config(config, store.now())


def _running(store: Any, job: str, instance: str) -> Any:
    store.enqueue(NewRun(job=job, trigger=Trigger.MANUAL, not_before=store.now()))
    [(run, _spec)] = store.claim(instance, "host-" + instance, 1)
    return run


def _silence(store: Any, instance: str, seconds: float) -> None:
    I = store.m.Instance
    past = store.now() - timedelta(seconds=seconds)
    I.update(heartbeat_at=to_db(past)).where(I.id == instance).execute()


def _no_follow_ups(run: Any, outcome: Any, spec: Any) -> list[NewRun]:
    return []


def _retry(run: Any, outcome: Any, spec: Any) -> list[NewRun]:
    return [
        NewRun(
            job=run.job,
            trigger=Trigger.RETRY,
            not_before=run.queued_at,
            attempt=run.attempt + 1,
            retry_of=run.id,
        )
    ]


def test_runs_of_a_silent_instance_are_abandoned_and_retried(store: Any, store_url: str) -> None:
    _setup(store, store_url, '[jobs.work]\ncommand = ["true"]\nretries = 1\noverlap = "allow"\n')
    for name in ("gone", "alive"):
        store.register_instance(name, "host-" + name, 4242, "test")
    lost_run = _running(store, "work", "gone")
    kept_run = _running(store, "work", "alive")
    _silence(store, "gone", TTL + 1)
    _silence(store, "alive", TTL - 1)
    lost = store.reap_lost_runs(TTL, _retry)
    assert [r.id for r in lost] == [lost_run.id]
    abandoned = store.execution(lost_run.id)
    assert abandoned.status == Status.ABANDONED
    assert "instance gone (host-gone pid 4242)" in abandoned.error
    assert store.execution(kept_run.id).status == Status.RUNNING
    [retry] = [r for r in store.executions(job="work", limit=None) if r.retry_of]
    assert retry.retry_of == lost_run.id and retry.attempt == 2 and retry.status == "queued"
    # A second reaper (another live instance) finds nothing left to do.
    assert store.reap_lost_runs(TTL, _retry) == []
    assert len(store.executions(job="work", limit=None)) == 3


def test_a_late_finish_cannot_overwrite_abandoned(store: Any, store_url: str) -> None:
    _setup(store, store_url, '[jobs.work]\ncommand = ["true"]\n')
    store.register_instance("gone", "host", 1, "test")
    run = _running(store, "work", "gone")
    _silence(store, "gone", TTL + 1)
    store.reap_lost_runs(TTL, _no_follow_ups)
    applied = store.record_progress({}, {}, [(run.id, "gone", Outcome(Status.SUCCEEDED, 0), [])])
    assert applied == [False]
    assert store.execution(run.id).status == Status.ABANDONED
    # ...and the returning instance is told to stop its copy.
    reason = store.runs_to_stop("gone", [run.id])[run.id]
    assert "abandoned" in reason


def test_runs_to_stop_names_cancels_and_leaves_healthy_runs_alone(
    store: Any, store_url: str
) -> None:
    _setup(store, store_url, '[jobs.work]\ncommand = ["true"]\noverlap = "allow"\n')
    store.register_instance("me", "host", 1, "test")
    healthy = _running(store, "work", "me")
    cancelled = _running(store, "work", "me")
    store.request_cancel(cancelled.id)
    assert store.runs_to_stop("me", [healthy.id, cancelled.id]) == {
        cancelled.id: "cancelled by request"
    }
    assert store.runs_to_stop("someone-else", [healthy.id]) != {}


def test_fires_lock_job_rows_in_the_order_claims_do(postgres_url: str) -> None:
    """record_fires and an exclusive claim both lock several job rows; taken in
    different orders they deadlock, and PostgreSQL aborts one of them."""
    from tests.conftest import open_store

    store = open_store(postgres_url)
    jobs = '[jobs.a]\ncommand = ["true"]\n\n[jobs.b]\ncommand = ["true"]\n'
    _setup(store, postgres_url, jobs)
    other = psycopg2.connect(postgres_url)
    errors: list[BaseException] = []
    now = store.now()
    writer_pid: list[int] = []

    def fire() -> None:
        try:
            # peewee connections are per thread: this is the writer's own.
            writer_pid.append(store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
            # Due order, not name order: b before a.
            store.record_fires([], {"b": (now, now), "a": (now, now)})
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    try:
        with other.cursor() as cur:
            cur.execute("SET lock_timeout = '5s'")
            cur.execute("SELECT name FROM jobs WHERE name = 'a' FOR UPDATE")
            writer = threading.Thread(target=fire)
            writer.start()

            def writer_waits() -> bool:
                with psycopg2.connect(postgres_url) as probe, probe.cursor() as c:
                    c.execute(
                        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                        (writer_pid[-1] if writer_pid else -1,),
                    )
                    row = c.fetchone()
                    return row is not None and row[0] == "Lock"

            wait_for(writer_waits, timeout=5)
            try:
                cur.execute("SELECT name FROM jobs WHERE name = 'b' FOR UPDATE")
            except psycopg2.errors.DeadlockDetected as exc:
                errors.append(exc)
            other.rollback() if errors else other.commit()
        writer.join(timeout=10)
    finally:
        other.close()
        store.close()
    assert not errors, errors


@pytest.mark.parametrize("role", ["leader", "standby"])
def test_heartbeat_records_role_and_clock_skew(store: Any, role: str) -> None:
    store.register_instance("me", "host", 1, "test")
    Instance = store.m.Instance
    Instance.update(heartbeat_at=to_db(store.now() - timedelta(hours=1))).execute()
    before = store.now()
    store.heartbeat("me", role, 2, 3.25)
    after = store.now()
    [inst] = store.instances()
    assert (inst["role"], inst["running"], inst["clock_skew"]) == (role, 2, 3.25)
    # Dated by the database's clock, the one reaps compare it with.
    slack = timedelta(milliseconds=1)  # SQLite's clock counts whole milliseconds
    assert before - slack <= inst["heartbeat_at"] <= after + slack
