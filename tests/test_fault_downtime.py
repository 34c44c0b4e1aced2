"""Fault: no daemon ran for 2 hours. Each catchup policy does exactly what it says.

The outage is made by moving every job's next fire back two hours in the store
before a real daemon starts, as if the last daemon had stopped then. The
expected fires are counted here, minute by minute, without jobd's cron code.
tests/test_planner.py proves the same rules on the pure planner.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobd.core.model import CATCHUP_CAP, Status, Trigger
from jobd.core.timeutil import to_db
from tests.conftest import open_store, run_jobd, wait_for
from tests.faults import Daemon, duplicates, stuck_rows, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.fault]

DOWN = timedelta(hours=2)
JOBS = {
    # name: (schedule, catchup, window, step in minutes)
    "minutely_none": ("* * * * *", "none", "1d", 1),
    "minutely_latest": ("* * * * *", "latest", "1d", 1),
    "minutely_all": ("* * * * *", "all", "1d", 1),  # 120 missed: capped at 100
    "five_all": ("*/5 * * * *", "all", "1d", 5),
    "five_all_window": ("*/5 * * * *", "all", "30m", 5),
    "five_latest_window": ("*/5 * * * *", "latest", "3m", 5),  # none, unless 3 min old
}


def minute_slots(start: datetime, end: datetime, step: int) -> list[datetime]:
    """Every `step`-minute slot in [start, end), on UTC minute boundaries."""
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += timedelta(minutes=1)
    slots = []
    moment = first
    while moment < end:
        if moment.minute % step == 0:
            slots.append(moment)
        moment += timedelta(minutes=1)
    return slots


def expected_catchup(
    policy: str, window: str, step: int, down_since: datetime, back: datetime
) -> list[datetime]:
    missed = minute_slots(down_since, back, step)
    if window == "30m":
        missed = [s for s in missed if s >= back - timedelta(minutes=30)]
    if window == "3m":
        missed = [s for s in missed if s >= back - timedelta(minutes=3)]
    if policy == "none" or not missed:
        return []
    if policy == "latest":
        return missed[-1:]
    return missed[-CATCHUP_CAP:]


def test_two_hours_down_each_policy_does_what_it_says(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    text = '[jobd]\nmax_concurrent = 8\nlease_ttl = "3s"\n' + "".join(
        f'[jobs.{name}]\nschedule = "{expr}"\ncatchup = "{policy}"\n'
        f'catchup_window = "{window}"\noverlap = "allow"\ncommand = ["true"]\n'
        for name, (expr, policy, window, _step) in JOBS.items()
    )
    config = write_config(tmp_path / "jobd.toml", text)
    applied = run_jobd("--config", str(config), "run", "--once", env={"JOBD_STORE": store_url})
    assert applied.returncode == 0, applied.stderr
    # Away from a minute boundary, so which slots are "missed" cannot depend on
    # the exact instant the daemon begins to lead.
    while not 5 <= datetime.now(UTC).second <= 45:
        time.sleep(0.5)
    store = open_store(store_url)
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    try:
        now = store.now()
        down_since = now - DOWN
        Job = store.m.Job
        Job.update(next_fire_at=to_db(down_since), last_fire_at=to_db(down_since)).execute()
        # The first slot at or after the stop, as the stopped daemon left it.
        for name, (_expr, _policy, _window, step) in JOBS.items():
            first = minute_slots(down_since, now, step)[0]
            Job.update(next_fire_at=to_db(first)).where(Job.name == name).execute()
        daemon.start()
        back = store.now()
        expected = {
            name: expected_catchup(policy, window, step, down_since, back)
            for name, (_e, policy, window, step) in JOBS.items()
        }
        total = sum(len(v) for v in expected.values())

        def caught_up() -> list:
            E = store.m.Execution
            return E.select().where(E.trigger == Trigger.CATCHUP).count() >= total and (
                stuck_rows(store) == 0
            )

        wait_for(caught_up, timeout=60)
        time.sleep(0.5)  # a second round of catch-up, if there were one, would show now
        got = {
            name: sorted(
                r.scheduled_for
                for r in store.executions(job=name, limit=None)
                if r.trigger is Trigger.CATCHUP
            )
            for name in JOBS
        }
        after = store.now()
        futures = {name: store.job(name).next_fire_at for name in JOBS}
        assert daemon.stop() == 0
        log = daemon.full_log()
        runs = store.executions(limit=None)
        lost = sum(len(set(expected[n]) - set(got[n])) for n in JOBS)
        extra = sum(len(set(got[n]) - set(expected[n])) + duplicates(got[n]) for n in JOBS)
        reliability.observe(
            "downtime",
            backend,
            runs=len(runs),
            duplicates=extra,
            lost=lost,
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail="none: 0 fires; latest: 1; all: every slot, the latest 100 of 120 "
            "with a warning; catchup_window bounds both",
        )
        for name in JOBS:
            assert got[name] == expected[name], name
        assert len(got["minutely_all"]) == CATCHUP_CAP
        assert "120 missed slots; catching up only the latest 100" in log
        # Nothing stays behind: every job fires its next live slot, none twice.
        for name, next_fire in futures.items():
            assert next_fire is not None and next_fire > after - timedelta(seconds=1), name
        assert {r.status for r in runs} == {Status.SUCCEEDED}
        assert duplicates((r.job, r.scheduled_for) for r in runs) == 0
    finally:
        daemon.cleanup()
        store.close()
