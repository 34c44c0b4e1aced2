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

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobd.model import Status
from jobd.store import Store, open_store
from tests.conftest import run_jobd, wait_for
from tests.daemons import runs, wait_clock
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
        jobd(config, store_url, "resume", "tick")
        resumed_at = store.now()
        fired = wait_for(lambda: slot_runs(store, "tick", resumed_at), timeout=PROMPT)
        wait_for(lambda: slot_runs(store, "tick", fired[0].scheduled_for + timedelta(seconds=3)))
        rows = runs(store, "tick")
        asleep = [r for r in rows if paused_at < r.queued_at < resumed_at]
        assert asleep == [], "a paused job fired"
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
