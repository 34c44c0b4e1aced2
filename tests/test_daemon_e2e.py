"""The daemon end to end: real `jobd run` processes on SQLite and PostgreSQL.

Schedules have six fields (seconds first) so that slots come every second. Tests
wait on store rows, log lines or the wall clock, each with a deadline; every
daemon and job process a test starts is SIGKILLed when it ends.
"""

from __future__ import annotations

import math
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from jobd.core.model import NewRun, Run, Status, Trigger
from jobd.store import Store
from tests.conftest import open_store, wait_for
from tests.daemons import Daemons, finished, proxy_to, runs, wait_clock, wait_run
from tests.processes import alive, assert_group_gone, wait_dead

pytestmark = pytest.mark.slow

EVERY_SECOND = "* * * * * *"
SECOND = timedelta(seconds=1)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()
    for daemon in started.started:  # shown by pytest when the test failed
        print(f"--- {daemon.log_path.name} (exit {daemon.proc.returncode})\n{daemon.log()}")


def trigger(store: Store, job: str) -> int:
    """What `jobd trigger` does: queue a manual run and wake the daemons."""
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


def now() -> datetime:
    return datetime.now(UTC)


def slots_of(rows: list[Run]) -> list[datetime]:
    return [r.scheduled_for for r in rows if r.scheduled_for is not None]


def assert_one_row_per_consecutive_slot(rows: list[Run], step: timedelta = SECOND) -> None:
    slots = sorted(slots_of(rows))
    assert len(slots) == len(rows), "every fired row has a slot"
    assert len(slots) == len(set(slots)), "a slot fired twice"
    gaps = [(a, b) for a, b in pairwise(slots) if b - a != step]
    assert not gaps, f"missing slots between {gaps}"


def going(run: Run) -> bool:
    return run.status is Status.RUNNING and run.pid is not None


def current_statuses(store: Store, ids: list[int]) -> list[Status]:
    return [run.status for run in map(store.execution, ids) if run is not None]


def latency(rows: list[Run]) -> float:
    """The worst fire→start delay: started_at − scheduled_for, in seconds."""
    return max(
        (r.started_at - r.scheduled_for).total_seconds()
        for r in rows
        if r.started_at and r.scheduled_for
    )


# -- 1. exactly once, on time ----------------------------------------------------------


def test_every_second_for_ten_seconds_fires_each_slot_once(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config({"tick": {"schedule": EVERY_SECOND, "command": ["true"]}})
    daemon = daemons.start(store_url)
    first = wait_for(lambda: slots_of(runs(store, "tick")), timeout=5)[0]
    last = first + 10 * SECOND
    wait_for(lambda: any(r.scheduled_for == last for r in finished(store, "tick")), timeout=20)
    assert daemon.stop() == 0
    rows = runs(store, "tick")
    assert_one_row_per_consecutive_slot(rows)
    assert len(rows) >= 11
    assert {r.status for r in rows} == {Status.SUCCEEDED}
    assert {r.trigger for r in rows[1:]} == {Trigger.SCHEDULE}
    worst = latency(rows)
    print(f"\n[measure] {store.backend}: {len(rows)} slots, max fire→start {worst:.3f}s")
    assert worst < 1.0


# -- 2. two daemons: one row per slot, and failover --------------------------------------


def _fail_over(store: Store, daemons: Daemons, url: str, takeover_bound: float) -> None:
    # catchup = all and overlap = queue: every slot runs, also those missed while no
    # instance led (with skip, a live slot behind the queued backlog is skipped).
    tick = {"schedule": EVERY_SECOND, "command": ["true"], "catchup": "all", "overlap": "queue"}
    daemons.write_config({"tick": tick})
    first = daemons.start(url, "a")
    second = daemons.start(url, "b")
    assert first.leading and not second.leading
    wait_for(lambda: len(finished(store, "tick")) >= 4)

    def calm_moment() -> bool:
        # Mid-second, with the current slot's run already recorded: nothing in flight.
        moment = now()
        rows = runs(store, "tick")
        return (
            0.3 < moment.microsecond / 1e6 < 0.7
            and bool(rows)
            and rows[-1].status.final
            and rows[-1].scheduled_for == moment.replace(microsecond=0)
        )

    wait_for(calm_moment)
    killed_at = now()
    first.kill()
    next_slot = killed_at.replace(microsecond=0) + SECOND

    def fired_after_kill() -> Run | None:
        return next((r for r in runs(store, "tick") if r.queued_at > killed_at), None)

    taken = wait_for(fired_after_kill, timeout=takeover_bound + 5)
    takeover = (taken.queued_at - killed_at).total_seconds()
    print(f"\n[measure] {store.backend}: standby fired {takeover:.3f}s after the leader died")
    assert takeover < takeover_bound
    end = next_slot + 4 * SECOND
    wait_for(lambda: any(r.scheduled_for == end for r in finished(store, "tick")))
    assert second.stop() == 0
    rows = runs(store, "tick")
    assert_one_row_per_consecutive_slot(rows)
    assert {r.status for r in rows} == {Status.SUCCEEDED}, [
        (r.id, r.trigger.value, r.status.value, r.scheduled_for, r.queued_at, r.error) for r in rows
    ]
    assert any(r.scheduled_for and r.scheduled_for >= next_slot for r in rows)


def test_two_daemons_on_one_sqlite_file(sqlite_url: str, daemons: Daemons) -> None:
    store = open_store(sqlite_url)
    # The flock is released the instant the leader dies: the very next slot is on time.
    _fail_over(store, daemons, sqlite_url, takeover_bound=1.2)


def test_two_daemons_on_postgresql(postgres_url: str, daemons: Daemons) -> None:
    store = open_store(postgres_url)
    # The lease must expire first (lease_ttl = 3 s); missed slots are caught up.
    _fail_over(store, daemons, postgres_url, takeover_bound=3 + 1.5)


def _loaded_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_a_daemon_loads_only_its_own_store_driver(
    sqlite_url: str, postgres_url: str, daemons: Daemons
) -> None:
    import psycopg2  # installed: so its absence below is jobd's doing

    assert Path(psycopg2.__file__).exists()
    daemons.write_config({"tick": {"schedule": EVERY_SECOND, "command": ["true"]}})
    on_sqlite = daemons.start(sqlite_url, name="sqlite")
    on_postgres = daemons.start(postgres_url, name="postgresql")
    assert "psycopg2" not in _loaded_libraries(on_sqlite.pid)
    assert "psycopg2" in _loaded_libraries(on_postgres.pid)
    for url in (sqlite_url, postgres_url):
        store = open_store(url)
        wait_for(lambda store=store: finished(store, "tick"), timeout=10)
        store.close()


# -- 3. timeouts take the whole group ----------------------------------------------------


def test_timeout_kills_the_job_and_its_grandchild(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config({"group_leader": {"shell": "sleep 300 & sleep 300", "timeout": "1s"}})
    daemons.start(store_url)
    run_id = trigger(store, "group_leader")
    run = wait_run(store, run_id, lambda r: r.status.final)
    assert run.status is Status.TIMED_OUT
    assert run.error == "timed out after 1.00s"
    assert run.signal == signal.SIGTERM
    assert run.pid is not None
    assert_group_gone(run.pid, reaped=True)
    assert daemons.leftovers() == []


# -- 4. SIGTERM: finish what can finish, cancel the rest ------------------------------


def test_sigterm_lets_short_runs_finish_and_cancels_the_long_one(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config(
        {
            "short1": {"command": ["sleep", "1"]},
            "short2": {"command": ["sleep", "1.5"]},
            "long_sleeper": {"shell": "sleep 60 & sleep 60"},
        },
        shutdown_grace="2500ms",
    )
    daemon = daemons.start(store_url)
    ids = {name: trigger(store, name) for name in ("short1", "short2", "long_sleeper")}
    for run_id in ids.values():
        wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=15) == 0
    short1, short2, long = (store.execution(ids[n]) for n in ("short1", "short2", "long_sleeper"))
    assert short1 and short1.status is Status.SUCCEEDED
    assert short2 and short2.status is Status.SUCCEEDED
    assert long and long.status is Status.CANCELLED
    assert long.error == "cancelled: jobd was stopped"
    assert long.pid is not None
    assert_group_gone(long.pid)
    wait_for(lambda: daemons.leftovers() == [], timeout=3)
    (instance,) = store.instances()
    assert instance["stopped_at"] is not None and instance["role"] == "stopped"
    assert "jobd stopped" in daemon.log()


# -- 5. SIGHUP reloads; a broken config is refused -------------------------------------


def test_sighup_applies_a_changed_config_and_refuses_a_broken_one(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config({"a": {"schedule": EVERY_SECOND, "command": ["true"]}})
    daemon = daemons.start(store_url)
    wait_for(lambda: len(finished(store, "a")) >= 2)

    # a moves to a yearly schedule and must not fire because of the change; b is new.
    daemons.write_config(
        {
            "a": {"schedule": "0 0 0 1 1 *", "command": ["true"]},
            "b": {"schedule": EVERY_SECOND, "command": ["true"]},
        }
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("config reloaded: 1 added, 1 updated, 0 removed")
    reloaded_at = now()
    wait_for(lambda: len(finished(store, "b")) >= 2)
    record = store.job("a")
    assert record is not None
    assert record.next_fire_at == datetime(now().year + 1, 1, 1, tzinfo=UTC)
    late = [r for r in runs(store, "a") if r.queued_at > reloaded_at]
    assert late == []

    # A broken file: logged, the running config stays in force, b keeps firing.
    daemons.config.write_text(daemons.config.read_text() + "\n[jobs.c]\nschedul = 'x'\n")
    mark = len(daemon.log())
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("reload rejected, keeping the running config", after=mark)
    assert "key 'schedul'" in daemon.log()[mark:]
    refused_at = now()
    wait_for(lambda: sum(r.queued_at > refused_at for r in finished(store, "b")) >= 2)
    assert store.job("c") is None
    assert daemon.running


# -- 6. catchup after downtime -------------------------------------------------------------


def test_catchup_after_downtime_follows_each_policy(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    policies = ("none", "latest", "all")
    daemons.write_config(
        {p: {"schedule": EVERY_SECOND, "command": ["true"], "catchup": p} for p in policies}
    )
    daemon = daemons.start(store_url)
    wait_for(lambda: all(len(finished(store, p)) >= 2 for p in policies))
    assert daemon.stop() == 0
    before = {p: len(runs(store, p)) for p in policies}
    last = max(slots_of(runs(store)))
    wait_clock(last + 4.2 * SECOND)  # at least three slots pass while nothing runs
    daemons.start(store_url, "again")
    restart_slots: dict[str, list[Run]] = {}
    for p in policies:
        wait_for(lambda p=p: Trigger.SCHEDULE in {r.trigger for r in runs(store, p)[before[p] :]})
        restart_slots[p] = runs(store, p)[before[p] :]

    pre = {p: max(slots_of(runs(store, p)[: before[p]])) for p in policies}
    for p, rows in restart_slots.items():
        catchups = [r for r in rows if r.trigger is Trigger.CATCHUP]
        first_live = min(r.scheduled_for for r in rows if r.trigger is Trigger.SCHEDULE)
        missed = round((first_live - pre[p]).total_seconds()) - 1
        assert missed >= 3, (p, missed)
        if p == "none":
            assert catchups == []
        elif p == "latest":
            assert [r.scheduled_for for r in catchups] == [first_live - SECOND]
        else:
            assert [r.scheduled_for for r in catchups] == [
                pre[p] + i * SECOND for i in range(1, missed + 1)
            ]
            assert_one_row_per_consecutive_slot(runs(store, p))
        # Missed fires run (one after another), they are not skipped as overlaps.
        ids = [r.id for r in rows]
        wait_for(lambda ids=ids: all(s.final for s in current_statuses(store, ids)))
        assert set(current_statuses(store, [r.id for r in catchups])) <= {Status.SUCCEEDED}
    for p in policies:
        slots = slots_of(runs(store, p))
        assert len(slots) == len(set(slots)), p


# -- 7. retries, then on_failure --------------------------------------------------------------


def test_failures_are_retried_then_on_failure_fires(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config(
        {
            "flaky": {
                "shell": "echo attempt $JOBD_ATTEMPT; exit 3",
                "retries": 2,
                "retry_delay": "200ms",
                "on_failure": ["alert"],
            },
            "alert": {"command": ["true"]},
        }
    )
    daemons.start(store_url)
    first_id = trigger(store, "flaky")
    (alert,) = wait_for(lambda: finished(store, "alert"))
    attempts = runs(store, "flaky")
    assert [(r.attempt, r.trigger, r.status, r.exit_code) for r in attempts] == [
        (1, Trigger.MANUAL, Status.FAILED, 3),
        (2, Trigger.RETRY, Status.FAILED, 3),
        (3, Trigger.RETRY, Status.FAILED, 3),
    ]
    assert [r.retry_of for r in attempts] == [None, first_id, attempts[1].id]
    assert [r.log for r in store.executions("flaky", limit=None, with_log=True)][::-1] == [
        "attempt 1\n",
        "attempt 2\n",
        "attempt 3\n",
    ]
    # Back-off: 200 ms, then 400 ms, each ±20 %.
    for previous, retry, base in ((attempts[0], attempts[1], 0.2), (attempts[1], attempts[2], 0.4)):
        assert previous.finished_at and retry.started_at
        assert (retry.not_before - previous.finished_at).total_seconds() >= base * 0.8 - 0.01
        assert (retry.started_at - previous.finished_at).total_seconds() < base * 1.2 + 1.0
    assert alert.trigger is Trigger.CHAIN
    assert alert.triggered_by == f"flaky#{attempts[2].id}"
    assert alert.status is Status.SUCCEEDED
    assert alert.queued_at >= attempts[2].finished_at  # type: ignore[operator]


# -- 8. overlap ---------------------------------------------------------------------------


def _never_concurrent(rows: list[Run]) -> None:
    spans = sorted((r.started_at, r.finished_at) for r in rows if r.started_at and r.finished_at)
    assert all(end <= start for (_, end), (start, _) in pairwise(spans)), spans


def test_overlap_skip_records_skipped_slots_and_queue_waits(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config(
        {
            "skipper": {"schedule": EVERY_SECOND, "command": ["sleep", "2.5"], "overlap": "skip"},
            "queuer": {"schedule": EVERY_SECOND, "command": ["sleep", "1.5"], "overlap": "queue"},
        }
    )
    daemon = daemons.start(store_url)
    wait_for(
        lambda: (
            len([r for r in finished(store, "skipper") if r.status is Status.SUCCEEDED]) >= 2
            and len([r for r in finished(store, "queuer") if r.status is Status.SUCCEEDED]) >= 3
        ),
        timeout=20,
    )
    daemon.kill()

    skipper = runs(store, "skipper")
    assert_one_row_per_consecutive_slot(skipper)
    skipped = [r for r in skipper if r.status is Status.SKIPPED]
    assert len(skipped) >= 3
    assert {r.error for r in skipped} == {"overlap = skip: the previous run is still active"}
    assert all(r.started_at is None and r.finished_at is not None for r in skipped)
    _never_concurrent(skipper)

    queuer = runs(store, "queuer")
    assert_one_row_per_consecutive_slot(queuer)
    assert not any(r.status is Status.SKIPPED for r in queuer)
    assert sum(r.status is Status.QUEUED for r in queuer) >= 1  # the backlog waits its turn
    _never_concurrent(queuer)
    ran = [r for r in queuer if r.started_at is not None]
    assert [r.scheduled_for for r in ran] == sorted(slots_of(ran))  # in slot order


# -- 9. a daemon killed mid-run ------------------------------------------------------------


def test_a_run_of_a_killed_daemon_is_abandoned_and_retried_on_restart(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    script = 'echo "attempt $JOBD_ATTEMPT"; [ "$JOBD_ATTEMPT" -gt 1 ] || sleep 60'
    daemons.write_config({"interrupted_work": {"shell": script, "retries": 1, "retry_delay": "0s"}})
    daemon = daemons.start(store_url)
    run_id = trigger(store, "interrupted_work")
    running = wait_run(store, run_id, going)
    daemon.kill()
    assert store.execution(run_id).status is Status.RUNNING  # type: ignore[union-attr]
    assert running.pid is not None
    wait_dead(running.pid)  # its keeper (jobd.runs.keeper) ends its runs with it

    daemons.start(store_url, "restarted")
    lost = wait_run(store, run_id, lambda r: r.status.final, timeout=10)
    assert lost.status is Status.ABANDONED
    assert lost.error and f"instance {lost.instance}" in lost.error and "vanished" in lost.error
    retry = wait_for(lambda: [r for r in finished(store, "interrupted_work") if r.id != run_id])[0]
    assert (retry.trigger, retry.attempt, retry.retry_of) == (Trigger.RETRY, 2, run_id)
    assert retry.status is Status.SUCCEEDED
    wait_for(lambda: daemons.leftovers() == [], timeout=3)


# -- 10. a PostgreSQL outage ------------------------------------------------------------------


def test_postgresql_outage_is_survived(postgres_url: str, daemons: Daemons) -> None:
    store = open_store(postgres_url)  # the test's own view goes around the proxy
    with proxy_to(postgres_url) as proxy:
        daemons.write_config(
            {
                "tick": {"schedule": EVERY_SECOND, "command": ["true"]},
                "short_sleeper": {"command": ["sleep", "1.5"]},
                "long_sleeper": {"command": ["sleep", "7"]},
            },
            # Runs ride out an outage shorter than their daemon's fence, 2/3 of
            # lease_ttl after its last heartbeat (test_fault_partition: longer).
            lease_ttl="15s",
        )
        daemon = daemons.start(proxy.url_for(postgres_url))
        wait_for(lambda: len(finished(store, "tick")) >= 2)
        short_id, long_id = trigger(store, "short_sleeper"), trigger(store, "long_sleeper")
        for run_id in (short_id, long_id):
            wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)

        cut_at = now()
        proxy.cut()
        daemon.wait_log("store unavailable", timeout=5)
        wait_clock(cut_at + 4 * SECOND)  # several heartbeats missed, within the fence
        assert daemon.running
        assert store.execution(short_id).status is Status.RUNNING  # type: ignore[union-attr]
        restored_at = now()
        proxy.restore()
        daemon.wait_log("store available again", timeout=10)

        short = wait_run(store, short_id, lambda r: r.status.final)
        assert short.status is Status.SUCCEEDED
        # Ended during the outage, and recorded as it happened, not when written.
        assert short.finished_at and short.finished_at < restored_at - SECOND
        assert short.duration_s is not None and short.duration_s < 3
        wait_for(
            lambda: (
                sum(
                    bool(r.scheduled_for and r.scheduled_for > restored_at + SECOND)
                    for r in finished(store, "tick")
                )
                >= 2
            ),
            timeout=15,
        )
        long = wait_run(store, long_id, lambda r: r.status.final, timeout=15)
        assert long.status is Status.SUCCEEDED, long.error
        rows = runs(store, "tick")
        assert len(slots_of(rows)) == len(set(slots_of(rows)))
        # Still leading after the outage, it fires the slots it missed at once;
        # overlap = skip records those that found the previous one still going.
        assert {r.status for r in rows} <= {Status.SUCCEEDED, Status.SKIPPED}
        assert daemon.stop() == 0


# -- 11. a manual trigger wakes the daemon at once ---------------------------------------------


def test_a_manual_run_starts_within_milliseconds(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    # A long lease keeps housekeeping quiet: only the wake-up path can start it soon.
    daemons.write_config({"now": {"command": ["true"]}}, lease_ttl="90s")
    daemon = daemons.start(store_url)
    delays = []
    for _ in range(3):
        run_id = trigger(store, "now")
        run = wait_run(store, run_id, lambda r: r.status.final, timeout=5)
        assert run.status is Status.SUCCEEDED
        assert run.started_at is not None
        delays.append((run.started_at - run.queued_at).total_seconds())
    print(f"\n[measure] {store.backend}: trigger→start {', '.join(f'{d:.3f}s' for d in delays)}")
    assert max(delays) < 3.0  # housekeeping would take 30 s: only a wake-up is this fast
    assert math.isfinite(max(delays))
    assert daemon.stop() == 0


def test_a_shared_outage_does_not_abandon_runs_of_live_instances(
    postgres_url: str, daemons: Daemons
) -> None:
    """Every instance loses the store at once: when it is back, none may take the
    others' stale heartbeats for deaths while their runs are still going. (An
    outage past 2/3 of lease_ttl makes each stop its runs: test_fault_partition.)"""
    store = open_store(postgres_url)
    with proxy_to(postgres_url) as proxy:
        daemons.write_config(
            {"long_sleeper": {"command": ["sleep", "8"], "overlap": "allow"}},
            max_concurrent=1,
            lease_ttl="15s",
        )
        url = proxy.url_for(postgres_url)
        first, second = daemons.start(url, "a"), daemons.start(url, "b")
        ids = [trigger(store, "long_sleeper"), trigger(store, "long_sleeper")]
        running = [
            wait_run(store, i, lambda r: r.status is Status.RUNNING and r.pid is not None)
            for i in ids
        ]
        assert {r.instance for r in running} == {
            first.instance_id,
            second.instance_id,
        }, "each daemon runs one"
        cut_at = now()
        proxy.cut()
        wait_clock(cut_at + 4 * SECOND)  # several heartbeats missed, within the fence
        proxy.restore()
        for run_id in ids:
            run = wait_run(store, run_id, lambda r: r.status.final, timeout=20)
            assert run.status is Status.SUCCEEDED, run.error
        assert len(runs(store, "long_sleeper")) == 2  # nothing was retried


def test_wake_ups_come_back_after_a_postgresql_outage(postgres_url: str, daemons: Daemons) -> None:
    store = open_store(postgres_url)
    with proxy_to(postgres_url) as proxy:
        # A long lease keeps housekeeping quiet: only NOTIFY can start the run soon.
        daemons.write_config({"now": {"command": ["true"]}}, lease_ttl="90s")
        daemon = daemons.start(proxy.url_for(postgres_url))
        proxy.cut()  # the LISTEN connection breaks: the daemon notices at once
        daemon.wait_log("store unavailable", timeout=5)
        proxy.restore()
        daemon.wait_log("store available again", timeout=10)
        run_id = trigger(store, "now")
        run = wait_run(store, run_id, lambda r: r.status.final, timeout=5)
        assert run.started_at is not None
        assert (
            run.started_at - run.queued_at
        ).total_seconds() < 3.0  # the next housekeeping wake is 30 s away
        # The cut may land between a tick's queries and its LISTEN check: then the
        # LISTEN retry is what meets the outage first, and it is retried after it.
        log = daemon.log()
        assert "cannot LISTEN" not in log or "listening for wake-ups again" in log


def test_a_restart_kills_only_its_own_leftover_processes(tmp_path: Path, daemons: Daemons) -> None:
    """Two jobd on one host with their own stores: both have run 1 of the same job."""
    urls = [f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"]
    daemons.write_config({"interrupted_work": {"command": ["sleep", "60"]}})
    first, second = (daemons.start(url, name) for url, name in zip(urls, "ab", strict=True))
    ours, theirs = (open_store(url) for url in urls)
    assert trigger(ours, "interrupted_work") == trigger(theirs, "interrupted_work") == 1
    ours_run, theirs_run = (wait_run(store, 1, going) for store in (ours, theirs))
    second.kill()
    daemons.start(urls[1], "b-again")
    assert wait_run(theirs, 1, lambda r: r.status.final).status is Status.ABANDONED
    assert theirs_run.pid is not None and ours_run.pid is not None
    wait_dead(theirs_run.pid)  # the killed daemon's leftover goes
    assert alive(ours_run.pid)  # the other jobd's run with the same id and job stays
    assert ours.execution(1).status is Status.RUNNING  # type: ignore[union-attr]
    assert first.running
