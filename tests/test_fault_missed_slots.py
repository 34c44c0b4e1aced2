"""Fault: slots the daemon could not fire on time, and store changes it was not told of.

Real `jobd run` processes on both stores, steered through the real CLI:

- a job paused and resumed (or scheduled, or unscheduled) while the daemon sleeps
  its long idle sleep fires at its next slot, because every such change wakes the
  daemons at once;
- a daemon stopped (SIGSTOP) past several slots follows each job's `catchup`
  policy for them when it is continued: `all` runs every one, one after another,
  `latest` one, `none` none, and no burst of `skipped` rows is written;
- a run left `running` by an instance that is gone does not make missed slots
  skip: they queue behind it and run once it is marked abandoned.

The lease is long (60 s) so that nothing but a wake-up ends an idle daemon's sleep
early: heartbeats, reaps and lease renewals come every 10 s or more.
"""

from __future__ import annotations

import itertools
import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Status, Trigger
from jobd.core.timeutil import to_db
from jobd.store import Store
from tests.conftest import open_store, run_jobd, wait_for
from tests.daemons import proxy_to, runs, wait_clock
from tests.faults import Daemon, duplicates, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.fault]

SLOW_TIMERS = '[jobd]\nlease_ttl = "60s"\nkill_grace = "1s"\nshutdown_grace = "2s"\n'
# How soon a change must show: a couple of slots of an every-second job.
PROMPT = 4.0


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def start_daemon(tmp_path: Path, url: str, jobs: str) -> tuple[Daemon, Path]:
    config = write_config(tmp_path / "jobd.toml", SLOW_TIMERS + jobs)
    return Daemon(config, url, tmp_path / "jobd.log").start(), config


def jobd(config: Path, url: str, *args: str) -> str:
    done = run_jobd("--config", str(config), *args, env={"JOBD_STORE": url})
    assert done.returncode == 0, done.stderr
    return done.stdout


def slot_runs(store: Store, job: str, after: datetime) -> list:
    return [r for r in runs(store, job) if r.scheduled_for is not None and r.scheduled_for > after]


# -- every change that can move a next fire wakes the daemons ------------------------

TICK = '[jobs.tick]\nschedule = "*/2 * * * * *"\ncommand = ["true"]\ncatchup = "none"\n'


def test_resume_wakes_an_idle_daemon_at_once(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    daemon, config = start_daemon(tmp_path, store_url, TICK)
    store = open_store(store_url)
    try:
        wait_for(lambda: any(r.status is Status.SUCCEEDED for r in runs(store, "tick")))
        jobd(config, store_url, "pause", "tick")
        paused_at = store.now()
        # Past a slot or two: the daemon has gone to sleep with nothing to fire.
        wait_clock(paused_at + timedelta(seconds=3))
        resuming_at = store.now()  # the resume commits before the command returns
        jobd(config, store_url, "resume", "tick")
        resumed_at = store.now()
        fired = wait_for(lambda: slot_runs(store, "tick", resumed_at), timeout=PROMPT)
        wait_for(lambda: slot_runs(store, "tick", fired[0].scheduled_for + timedelta(seconds=3)))
        rows = runs(store, "tick")
        # A slot whose fire was under way as the pause committed may still be
        # recorded (paused_at is read after the command returned, on a loaded
        # machine a second after the commit); a paused job must fire nothing later,
        # until the resume, which may commit (and fire a slot) well before its
        # command returns.
        asleep = [
            r for r in rows if paused_at + timedelta(seconds=1) < r.scheduled_for < resuming_at
        ]
        detail = [(r.scheduled_for, r.queued_at, r.trigger.value, r.status.value) for r in rows]
        assert asleep == [], f"a paused job fired: {paused_at} .. {resuming_at}: {detail}"
        assert not [r for r in rows if r.status is Status.SKIPPED]
        assert duplicates(r.scheduled_for for r in rows) == 0
        reliability.observe(
            "wake",
            backend_of(store_url),
            runs=len(rows),
            duplicates=0,
            lost=0,
            detail="pause, 3 s asleep, resume: the next slot fired",
        )
    finally:
        store.close()
        daemon.cleanup()


def test_schedule_and_unschedule_wake_an_idle_daemon_at_once(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    # Nothing to fire for a year: the daemon sleeps its longest idle sleep.
    yearly = '[jobs.yearly]\nschedule = "@yearly"\ncommand = ["true"]\n'
    daemon, config = start_daemon(tmp_path, store_url, yearly)
    store = open_store(store_url)
    try:
        wait_clock(store.now() + timedelta(seconds=1))
        jobd(config, store_url, "schedule", "fast", "*/2 * * * * *", "--", "true")
        scheduled_at = store.now()
        wait_for(lambda: slot_runs(store, "fast", scheduled_at), timeout=PROMPT)
        jobd(config, store_url, "unschedule", "fast")
        removed_at = store.now()
        # A fire written in the moment before the removal may still start.
        wait_clock(removed_at + timedelta(seconds=3))
        late = slot_runs(store, "fast", removed_at + timedelta(seconds=1))
        assert late == [], "an unscheduled job fired"
        reliability.observe(
            "wake",
            backend_of(store_url),
            runs=len(runs(store, "fast")),
            duplicates=duplicates(r.scheduled_for for r in runs(store, "fast")),
            lost=0,
            detail="jobd schedule then unschedule against an idle daemon",
        )
    finally:
        store.close()
        daemon.cleanup()


# -- a daemon stopped past its slots follows catchup for them --------------------------

STOPPED = timedelta(seconds=6)
AFTER = timedelta(seconds=2)


def whole_seconds(start: datetime, end: datetime) -> list[datetime]:
    """The every-second slots in (start, end]."""
    first = start.replace(microsecond=0) + timedelta(seconds=1)
    return [first + timedelta(seconds=i) for i in range(int((end - first).total_seconds()) + 1)]


@pytest.mark.parametrize("policy", ["all", "latest", "none"])
def test_a_stopped_daemon_follows_catchup_for_the_slots_it_slept_through(
    store_url: str, tmp_path: Path, reliability: Recorder, policy: str
) -> None:
    # The default overlap, skip: a slot must not be skipped for a run that is not going.
    every = f'[jobs.every]\nschedule = "* * * * * *"\ncommand = ["true"]\ncatchup = "{policy}"\n'
    daemon, _config = start_daemon(tmp_path, store_url, every)
    store = open_store(store_url)
    try:
        wait_for(lambda: len([r for r in runs(store, "every") if r.status.final]) >= 2)

        def between_slots_and_idle() -> bool:
            fraction = store.now().microsecond / 1e6
            busy = [r for r in runs(store, "every") if not r.status.final]
            return 0.3 < fraction < 0.6 and not busy

        wait_for(between_slots_and_idle)
        os.kill(daemon.pid, signal.SIGSTOP)
        stopped_at = store.now()
        wait_clock(stopped_at + STOPPED)
        os.kill(daemon.pid, signal.SIGCONT)
        continued_at = store.now()
        settled = continued_at + AFTER

        def caught_up() -> bool:
            rows = runs(store, "every")
            return any(r.scheduled_for > settled for r in rows) and all(
                r.status.final for r in rows if r.scheduled_for <= settled
            )

        wait_for(caught_up, timeout=30)
        rows = runs(store, "every")
        stalled = [r for r in rows if stopped_at < r.scheduled_for <= continued_at]
        missed = whole_seconds(stopped_at, continued_at)
        # Nothing was running when it stopped: none of its slots may be skipped.
        # (A slot due while the caught-up ones still run is, as overlap = skip says.)
        assert [r for r in stalled if r.status is Status.SKIPPED] == [], "a slot was skipped"
        assert duplicates(r.scheduled_for for r in rows) == 0
        catchups = [r for r in stalled if r.trigger is Trigger.CATCHUP]
        if policy == "all":
            # Every slot ran, one after another.
            wanted = whole_seconds(stopped_at, settled)
            assert (
                sorted(r.scheduled_for for r in rows if stopped_at < r.scheduled_for <= settled)
                == wanted
            )
            assert {r.status for r in stalled} == {Status.SUCCEEDED}
            ordered = sorted(stalled, key=lambda r: r.started_at)
            for before, after in itertools.pairwise(ordered):
                assert after.started_at >= before.finished_at, "two runs overlapped"
        elif policy == "latest":
            assert len(catchups) == 1
            assert len(stalled) <= 3  # the latest missed, and those within the grace
        else:
            assert catchups == []
            assert len(stalled) <= 2  # only those within the grace
        reliability.observe(
            "stall",
            backend_of(store_url),
            runs=len(stalled),
            duplicates=0,
            lost=0,
            detail=f"SIGSTOP 6 s, catchup = {policy}: {len(missed)} slots fell due, "
            f"{len(stalled)} rows, none skipped",
        )
    finally:
        store.close()
        daemon.cleanup()


def test_a_run_left_by_a_vanished_instance_does_not_make_missed_slots_skip(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """What a failover leaves: the cut-off instance's run still shows `running`."""
    every = '[jobs.every]\nschedule = "* * * * * *"\ncommand = ["true"]\ncatchup = "all"\n'
    text = '[jobd]\nlease_ttl = "3s"\nkill_grace = "1s"\nshutdown_grace = "2s"\n' + every
    config = write_config(tmp_path / "jobd.toml", text)
    store = open_store(store_url)
    try:
        store.apply_config(parse_config(text), store.now())
        store.register_instance("gone-1", "elsewhere", 999999, "test")
        Instance, Job = store.m.Instance, store.m.Job
        Instance.update(heartbeat_at=to_db(store.now() - timedelta(minutes=2))).where(
            Instance.id == "gone-1"
        ).execute()
        lock_dir = store.instance_lock_dir()
        if lock_dir:  # SQLite: its lock file, no longer held by anyone
            os.makedirs(lock_dir, exist_ok=True)
            Path(lock_dir, "gone-1").touch()
        left = store.enqueue(NewRun("every", Trigger.MANUAL, not_before=store.now()))
        assert [run.id for run, _ in store.claim("gone-1", "elsewhere", 1)] == [left]
        missed_from = store.now().replace(microsecond=0) - timedelta(seconds=5)
        Job.update(next_fire_at=to_db(missed_from)).where(Job.name == "every").execute()
        started = store.now()
        daemon = Daemon(config, store_url, tmp_path / "jobd.log").start()
        try:

            def caught_up() -> list:
                rows = [r for r in runs(store, "every") if r.trigger is Trigger.CATCHUP]
                return rows if len(rows) >= 5 and all(r.status.final for r in rows) else []

            catchups = wait_for(caught_up, timeout=20)
            assert {r.status for r in catchups} == {Status.SUCCEEDED}
            assert store.execution(left).status is Status.ABANDONED
            rows = runs(store, "every")
            # The missed slots; later ones may skip for real on a loaded machine, when
            # a run of `true` outlasts its second.
            missed = [r for r in rows if r.scheduled_for and r.scheduled_for < started]
            assert [r for r in missed if r.status is Status.SKIPPED] == []
            reliability.observe(
                "stall",
                backend_of(store_url),
                runs=len(rows),
                duplicates=duplicates(r.scheduled_for for r in rows if r.scheduled_for),
                lost=0,
                detail="missed slots behind a vanished instance's run: queued, not skipped",
            )
        finally:
            daemon.cleanup()
    finally:
        store.close()


def test_slots_missed_in_a_short_store_outage_follow_catchup(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """The leader keeps its lease through a 5 s outage (lease_ttl 60 s), so the slots
    of the outage are not a failover's: they are late, and catchup = all runs each."""
    every = '[jobs.every]\nschedule = "* * * * * *"\ncommand = ["true"]\ncatchup = "all"\n'
    text = SLOW_TIMERS + 'max_backoff = "1s"\n' + every
    config = write_config(tmp_path / "jobd.toml", text)
    store = open_store(postgres_url)
    with proxy_to(postgres_url) as proxy:
        daemon = Daemon(config, proxy.url_for(postgres_url), tmp_path / "jobd.log").start()
        try:
            wait_for(lambda: len([r for r in runs(store, "every") if r.status.final]) >= 2)
            proxy.cut()
            cut_at = store.now()
            wait_clock(cut_at + timedelta(seconds=5))
            proxy.restore()
            restored_at = store.now()
            settled = restored_at + AFTER

            def caught_up() -> bool:
                rows = runs(store, "every")
                return any(r.scheduled_for > settled for r in rows) and all(
                    r.status.final for r in rows if r.scheduled_for <= settled
                )

            wait_for(caught_up, timeout=30)
            rows = runs(store, "every")
            assert duplicates(r.scheduled_for for r in rows) == 0
            fired = sorted(r.scheduled_for for r in rows if cut_at < r.scheduled_for <= settled)
            assert fired == whole_seconds(cut_at, settled)
            # The outage's slots all ran; a slot due while they still ran may be skipped.
            outage = [r for r in rows if cut_at < r.scheduled_for <= restored_at]
            assert {r.status for r in outage} == {Status.SUCCEEDED}, "a slot was skipped"
            assert "store available again" in daemon.log()
            reliability.observe(
                "stall",
                "postgresql",
                runs=len(fired),
                duplicates=0,
                lost=0,
                detail="5 s store outage, catchup = all: every slot ran, none skipped",
            )
        finally:
            daemon.cleanup()
            store.close()
