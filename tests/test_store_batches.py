"""The daemon's hot store paths, on SQLite and PostgreSQL: firing slots, claiming
runs and recording their progress, many at a time, with the same outcome as one
at a time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jobd.core.config.parse import parse_job
from jobd.core.model import NewRun, Outcome, Source, Status, Trigger


@pytest.fixture
def postgresql_url(postgres_url: str) -> str:
    """conftest's `store_url` asks for `<backend>_url`; the backend is "postgresql"."""
    return postgres_url


def add_job(store: Any, name: str, schedule: str | None = None, **raw: Any) -> None:
    table = {"command": ["true"], **raw}
    if schedule:
        table["schedule"] = schedule
    spec = parse_job(name, table, "test", {}, source=Source.CLI)
    store.upsert_cli_job(spec, store.now())


def queue(store: Any, job: str, n: int = 1, delay: float = 0.0) -> list[int]:
    now = store.now()
    return [
        store.enqueue(
            NewRun(job=job, trigger=Trigger.MANUAL, not_before=now + timedelta(seconds=delay))
        )
        for _ in range(n)
    ]


def test_record_fires_inserts_once_per_slot_and_advances_each_job(store: Any) -> None:
    for name in ("a", "b", "c"):
        add_job(store, name, "* * * * *", overlap="allow")
    slot = store.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    runs = [
        NewRun(job=name, trigger=Trigger.SCHEDULE, scheduled_for=slot, not_before=slot)
        for name in ("a", "b", "c")
    ]
    advances = {
        "a": (slot + timedelta(minutes=1), slot),
        "b": (slot + timedelta(minutes=2), slot),
        "c": (None, slot - timedelta(minutes=5)),
    }
    assert store.record_fires(runs, advances) == 3
    assert store.record_fires(runs, advances) == 0  # the unique (job, slot) key
    jobs = {record.name: record for record in store.jobs()}
    assert jobs["a"].next_fire_at == slot + timedelta(minutes=1)
    assert jobs["b"].next_fire_at == slot + timedelta(minutes=2)
    assert jobs["c"].next_fire_at is None
    assert jobs["c"].last_fire_at == slot - timedelta(minutes=5)
    rows = store.executions(limit=None)
    assert sorted(r.job for r in rows) == ["a", "b", "c"]
    assert all(r.status is Status.QUEUED and r.scheduled_for == slot for r in rows)


def test_record_fires_skipped_rows_are_final_and_replace_cancels_running(store: Any) -> None:
    add_job(store, "r", "* * * * *", overlap="replace")
    add_job(store, "s", "* * * * *")
    [running] = queue(store, "r")
    store.claim("i1", "h", 10)
    slot = store.now().replace(microsecond=0)
    runs = [
        NewRun(job="s", trigger=Trigger.SCHEDULE, scheduled_for=slot, not_before=slot,
               status=Status.SKIPPED, error="overlap = skip"),
        NewRun(job="r", trigger=Trigger.SCHEDULE, scheduled_for=slot, not_before=slot),
    ]  # fmt: skip
    store.record_fires(runs, {}, cancel_jobs=["r"])
    by_job = {r.job: r for r in store.executions(limit=None) if r.scheduled_for}
    assert by_job["s"].status is Status.SKIPPED and by_job["s"].finished_at is not None
    assert by_job["s"].error == "overlap = skip"
    assert store.execution(running).cancel_requested  # type: ignore[union-attr]


def test_claim_respects_limit_due_time_and_exclusive_jobs(store: Any) -> None:
    add_job(store, "many", overlap="allow")
    add_job(store, "one")  # overlap = skip: never two running
    add_job(store, "later", overlap="allow")
    many = queue(store, "many", 5)
    one = queue(store, "one", 3)
    queue(store, "later", 2, delay=3600)
    first = store.claim("i1", "host1", 4)
    assert [run.id for run, _spec in first] == many[:4]
    second = store.claim("i2", "host2", 10)
    assert [run.id for run, _spec in second] == [many[4], one[0]]
    for run, spec in first + second:
        assert run.status is Status.RUNNING and run.started_at is not None
        assert spec.name == run.job
    assert {run.instance for run, _ in first} == {"i1"} and second[0][0].host == "host2"
    hashes = {record.name: record.spec.config_hash for record in store.jobs()}
    assert all(run.config_hash == hashes[run.job] for run, _ in first + second)
    assert store.claim("i3", "host3", 10) == []  # "one" is running; "later" not due


def test_record_progress_applies_only_to_this_instances_running_runs(store: Any) -> None:
    add_job(store, "p", overlap="allow")
    ids = queue(store, "p", 4)
    claimed = store.claim("me", "h", 3)
    assert [run.id for run, _ in claimed] == ids[:3]
    store.request_cancel(ids[3])  # queued → cancelled at once: not ours to finish
    retry = NewRun(job="p", trigger=Trigger.RETRY, not_before=store.now(), attempt=2,
                   retry_of=ids[1])  # fmt: skip
    applied = store.record_progress(
        {ids[0]: 4242, ids[1]: 4343},
        {ids[0]: ("hello\n", 6)},
        [
            (ids[0], "me", Outcome(Status.SUCCEEDED, 0), []),
            (ids[1], "me", Outcome(Status.FAILED, 3, None, "exit code 3"), [retry]),
            (ids[2], "someone-else", Outcome(Status.SUCCEEDED, 0), []),
            (ids[3], "me", Outcome(Status.SUCCEEDED, 0), []),
        ],
    )
    assert applied == [True, True, False, False]
    runs = {run.id: run for run in store.executions(limit=None, with_log=True)}
    assert runs[ids[0]].status is Status.SUCCEEDED and runs[ids[0]].pid == 4242
    assert runs[ids[0]].log == "hello\n" and runs[ids[0]].log_bytes == 6
    assert runs[ids[0]].duration_s is not None and runs[ids[0]].duration_s >= 0
    assert runs[ids[1]].status is Status.FAILED and runs[ids[1]].exit_code == 3
    assert runs[ids[1]].error == "exit code 3" and runs[ids[1]].pid == 4343
    assert runs[ids[2]].status is Status.RUNNING  # another instance's claim stands
    assert runs[ids[3]].status is Status.CANCELLED
    retries = [run for run in runs.values() if run.trigger is Trigger.RETRY]
    assert len(retries) == 1 and retries[0].retry_of == ids[1] and retries[0].attempt == 2


def test_progress_for_many_runs_in_one_call(store: Any) -> None:
    add_job(store, "bulk", overlap="allow")
    ids = queue(store, "bulk", 120)
    assert len(store.claim("me", "h", 200)) == 120
    finishes = [
        (rid, "me", Outcome(Status.SUCCEEDED if rid % 2 else Status.FAILED, rid % 2 - 1), [])
        for rid in ids
    ]
    pids = {rid: 1000 + rid for rid in ids}
    assert store.record_progress(pids, {}, finishes) == [True] * 120
    runs = {run.id: run for run in store.executions(limit=None)}
    for rid in ids:
        assert runs[rid].pid == 1000 + rid
        assert runs[rid].status is (Status.SUCCEEDED if rid % 2 else Status.FAILED)
