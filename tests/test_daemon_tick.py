"""The daemon driven in-process on a real store, one step at a time: what a tick,
a reap or a fire does, without processes or waiting on the clock."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from jobd.core.model import (
    Catchup,
    Config,
    JobKind,
    JobSpec,
    NewRun,
    Overlap,
    Settings,
    Status,
    Trigger,
)
from jobd.core.timeutil import to_db
from jobd.daemon.loop import Daemon
from jobd.leader.lease import TableLeader
from jobd.store import Store

SETTINGS = Settings(lease_ttl=3.0, kill_grace=1.0, shutdown_grace=2.0)


def job(name: str, **fields: Any) -> JobSpec:
    return JobSpec(name=name, schedule=None, kind=JobKind.COMMAND, command=("true",), **fields)


@pytest.fixture
def make_daemon(store: Store) -> Iterator[Any]:
    made: list[Daemon] = []

    def make(*specs: JobSpec) -> Daemon:
        config = Config(SETTINGS, {spec.name: spec for spec in specs})
        store.apply_config(config, store.now())
        daemon = Daemon(config, store)
        store.register_instance(daemon.instance, daemon.host, os.getpid(), "test")
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        # A started daemon prunes history in a thread of its own, with a connection
        # of its own: let it end before the test's schema is dropped under it.
        pruner = daemon.housekeeping._pruner
        if pruner is not None:
            pruner.join(10)
        daemon.heartbeats.stop()  # the beat thread and the keeper process
        daemon.leader.release()
        daemon.waker.close()


def age_heartbeat(store: Store, instance: str, seconds: float) -> None:
    Instance = store.m.Instance
    stale = to_db(store.now() - timedelta(seconds=seconds))
    Instance.update(heartbeat_at=stale).where(Instance.id == instance).execute()


def start_run(store: Store, name: str, instance: str, host: str = "elsewhere") -> int:
    run_id = store.enqueue(NewRun(name, Trigger.MANUAL, not_before=store.now()))
    claimed = store.claim(instance, host, 10)
    assert [run.id for run, _ in claimed] == [run_id]
    return run_id


def test_reap_marks_runs_of_a_silent_instance_abandoned(store: Store, make_daemon: Any) -> None:
    daemon = make_daemon(job("work", retries=1))
    store.register_instance("gone", "elsewhere", 1, "test")
    run_id = start_run(store, "work", "gone")
    age_heartbeat(store, "gone", SETTINGS.lease_ttl + 1)
    daemon.heartbeats.reap()
    lost = store.execution(run_id)
    assert lost is not None and lost.status is Status.ABANDONED
    retries = [r for r in store.executions("work", limit=None) if r.id != run_id]
    assert [(r.trigger, r.attempt, r.retry_of) for r in retries] == [(Trigger.RETRY, 2, run_id)]


def test_reap_never_abandons_this_instances_own_runs(store: Store, make_daemon: Any) -> None:
    # A store outage kept our heartbeat from being written; our run is still going.
    daemon = make_daemon(job("work"))
    run_id = start_run(store, "work", daemon.instance, daemon.host)
    age_heartbeat(store, daemon.instance, SETTINGS.lease_ttl + 1)
    daemon.heartbeats.reap()
    run = store.execution(run_id)
    assert run is not None and run.status is Status.RUNNING


def test_housekeeping_due_soon_is_done_by_a_tick_that_is_awake_anyway(
    store: Store, make_daemon: Any
) -> None:
    # Timers that drift apart would each wake an idle daemon; a tick runs those due
    # within the slack early, so they share its wake-up from then on.
    daemon = make_daemon(job("work"))
    daemon.housekeeping.rebuild()
    daemon.leader.poll()
    slack = daemon.housekeeping.slack
    heartbeat, reap, _prune = daemon.housekeeping.timers.jobs
    soon = datetime.now() + timedelta(seconds=slack / 2)
    later = datetime.now() + timedelta(seconds=slack * 2)
    heartbeat.next_run, reap.next_run = soon, later
    age_heartbeat(store, daemon.instance, 60)
    renewal_due = isinstance(daemon.leader, TableLeader)
    if renewal_due:
        daemon.leader._next_poll = time.monotonic() + slack / 2
    daemon.tick(daemon.clock.now())
    [me] = [i for i in store.instances() if i["id"] == daemon.instance]
    assert (store.now() - me["heartbeat_at"]).total_seconds() < 5
    assert heartbeat.next_run > later  # rescheduled a whole period on
    assert reap.next_run == later  # beyond the slack: left for its own time
    if renewal_due:
        assert daemon.leader.next_poll_in() > slack  # the lease was renewed early too


def test_a_reap_writes_no_heartbeat_while_ours_is_fresh(
    store: Store, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = make_daemon(job("work"))
    daemon.heartbeats.heartbeat()
    written: list[str] = []
    monkeypatch.setattr(store, "heartbeat", lambda instance, *a: written.append(instance))
    daemon.heartbeats.reap()
    assert written == []
    daemon.heartbeats.next_heartbeat = time.monotonic() - 0.1  # overdue, as after a store outage
    daemon.heartbeats.reap()
    assert written == [daemon.instance]


def test_after_a_store_outage_others_get_a_lease_ttl_to_heartbeat(
    store: Store, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = make_daemon(job("work"))
    store.register_instance("peer", "elsewhere", 1, "test")
    run_id = start_run(store, "work", "peer")
    # Both lost the store for longer than lease_ttl; we get it back first.
    age_heartbeat(store, "peer", SETTINGS.lease_ttl + 1)
    daemon.store_ok = False
    daemon.outage.failed()
    daemon._safe_tick(daemon.clock.now())
    assert daemon.store_ok
    daemon.heartbeats.reap()
    run = store.execution(run_id)
    assert run is not None and run.status is Status.RUNNING
    # A lease_ttl later the peer is judged by its heartbeat again.
    import jobd.daemon.heartbeats as heartbeats_module

    later = heartbeats_module.time.monotonic() + SETTINGS.lease_ttl + 0.1
    monkeypatch.setattr(heartbeats_module.time, "monotonic", lambda: later)
    daemon.heartbeats.reap()
    run = store.execution(run_id)
    assert run is not None and run.status is Status.ABANDONED


def test_a_store_outage_is_probed_every_second_however_long_it_lasts(
    store: Store, make_daemon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A back-off that kept doubling left the daemon idle long after the store came
    back (a 30 s outage became a minute without fires): only the log backs off."""
    import peewee as pw

    from jobd.system.storewait import PROBE_EVERY

    daemon = make_daemon(job("work"))

    def unavailable(now: datetime) -> float:
        raise pw.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(daemon, "tick", unavailable)
    idle = [daemon._safe_tick(daemon.clock.now()) for _ in range(6)]
    assert idle == [PROBE_EVERY] * 6
    assert daemon.outage.attempts == 6
    monkeypatch.setattr(daemon.executor, "running", {1: object()})
    # Often enough that a heartbeat is written soon after the store is back, well
    # before the fence (2/3 of lease_ttl, jobd.runs.fence) stops the runs.
    expected = min(PROBE_EVERY, SETTINGS.lease_ttl / 6)
    assert daemon._safe_tick(daemon.clock.now()) == expected


@pytest.mark.parametrize("overlap", [Overlap.SKIP, Overlap.QUEUE, Overlap.REPLACE])
def test_missed_fires_under_catchup_all_run_instead_of_skipping_each_other(
    store: Store, make_daemon: Any, overlap: Overlap
) -> None:
    spec = replace(job("tick", catchup=Catchup.ALL, overlap=overlap), schedule="* * * * * *")
    daemon = make_daemon(spec)
    assert daemon.leader.poll()
    now = daemon.clock.now()
    missed_from = now.replace(microsecond=0) - timedelta(seconds=5)
    Job = store.m.Job
    Job.update(next_fire_at=to_db(missed_from)).where(Job.name == "tick").execute()
    daemon.fire_due(now)
    rows = list(reversed(store.executions("tick", limit=None)))
    catchups = [r for r in rows if r.trigger is Trigger.CATCHUP]
    assert len(catchups) >= 5
    assert {r.status for r in catchups} == {Status.QUEUED}


def test_missed_fires_still_skip_a_run_that_is_already_active(
    store: Store, make_daemon: Any
) -> None:
    spec = replace(job("tick", catchup=Catchup.ALL), schedule="* * * * * *")
    daemon = make_daemon(spec)
    assert daemon.leader.poll()
    store.register_instance("peer", "elsewhere", 1, "test")  # live: a fresh heartbeat
    start_run(store, "tick", "peer")
    now = daemon.clock.now()
    Job = store.m.Job
    Job.update(next_fire_at=to_db(now.replace(microsecond=0) - timedelta(seconds=3))).where(
        Job.name == "tick"
    ).execute()
    daemon.fire_due(now)
    fired = [r for r in store.executions("tick", limit=None) if r.trigger is not Trigger.MANUAL]
    # Skipped, and as one row standing for them all: a burst never floods the history.
    assert [r.status for r in fired] == [Status.SKIPPED]
    assert fired[0].error is not None and "slots" in fired[0].error


@pytest.mark.parametrize("gone", ["stale heartbeat", "stopped", "unknown"])
def test_a_run_of_a_vanished_instance_does_not_make_fires_skip(
    store: Store, make_daemon: Any, gone: str
) -> None:
    # Its instance died or was cut off; the run waits only to be marked abandoned.
    spec = replace(job("tick", catchup=Catchup.ALL), schedule="* * * * * *")
    daemon = make_daemon(spec)
    assert daemon.leader.poll()
    if gone != "unknown":
        store.register_instance("peer", "elsewhere", 1, "test")
    start_run(store, "tick", "peer")
    if gone == "stale heartbeat":
        age_heartbeat(store, "peer", SETTINGS.lease_ttl / 2 + 0.5)
    elif gone == "stopped":
        store.stop_instance("peer")
    now = daemon.clock.now()
    Job = store.m.Job
    Job.update(next_fire_at=to_db(now.replace(microsecond=0) - timedelta(seconds=3))).where(
        Job.name == "tick"
    ).execute()
    daemon.fire_due(now)
    fired = [r for r in store.executions("tick", limit=None) if r.trigger is not Trigger.MANUAL]
    assert len(fired) >= 3 and {r.status for r in fired} == {Status.QUEUED}


def test_a_slot_between_applying_the_config_and_leading_is_fired_not_missed(
    store: Store, make_daemon: Any
) -> None:
    every_second = job("tick", catchup=Catchup.NONE)
    every_second = replace(every_second, schedule="* * * * * *")
    daemon = make_daemon(every_second)
    daemon.start()
    term = daemon.leader.term()
    assert term is not None and term.since == daemon.firing.first_term_since
    # A slot after applying the config but before the guard was taken; placed
    # around the real term, which a lease dates by the database's clock.
    slot = (term.since - timedelta(microseconds=1)).replace(microsecond=0)
    daemon.firing.applied_at = slot - timedelta(milliseconds=500)
    Job = store.m.Job
    Job.update(next_fire_at=to_db(slot)).where(Job.name == "tick").execute()
    daemon.fire_due(max(daemon.clock.now(), slot + timedelta(milliseconds=300)))
    fired = store.executions("tick", limit=None)
    assert (slot, Trigger.SCHEDULE) in [(r.scheduled_for, r.trigger) for r in fired]


def test_a_value_the_store_refuses_in_a_tick_is_not_called_an_outage(
    store: Store, make_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A value the store will not take (here, a check the operator added) is not an
    outage: "store unavailable" would send the operator to the database server."""
    import logging

    from jobd.errors import ExitCode, StoreValueRefused, store_failure

    daemon = make_daemon(job("refused"))
    store.enqueue(NewRun("refused", Trigger.MANUAL, not_before=store.now()))
    if store.backend == "postgresql":
        store.db.execute_sql(
            "ALTER TABLE executions ADD CONSTRAINT no_start CHECK (status <> 'running') NOT VALID"
        )
    else:
        store.db.execute_sql(
            "CREATE TRIGGER no_start BEFORE UPDATE ON executions WHEN NEW.status = 'running' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a check'); END"
        )
    with caplog.at_level(logging.WARNING, logger="jobd"):
        try:
            daemon._safe_tick(daemon.clock.now())
        except Exception as exc:  # SQLite's own error class escapes the loop: exit 1
            failure = store_failure(exc)
            assert isinstance(failure, StoreValueRefused), exc
            assert failure.exit_code == ExitCode.FAILURE
            assert str(failure).startswith("the store refused a value: ")
        else:  # peewee's is tried again, as an outage is, but not called one
            assert caplog.records[-1].getMessage().startswith("the store refused a value (")
    assert not any("unavailable" in record.getMessage() for record in caplog.records)
