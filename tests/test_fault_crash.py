"""Fault: the daemon is SIGKILLed while jobs run (OOM killer, power cut, `kill -9`).

tests/test_recovery.py shows one leftover grandchild killed on restart (SQLite);
here several runs at once on both stores, their retries, and a daemon killed
again and again under an every-second schedule: no orphan, no run stuck in
`running`, no slot lost or run twice.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.conftest import open_store
from tests.faults import Daemon, duplicates, lines_of, q, stuck_rows, write_config
from tests.processes import alive, assert_group_gone
from tests.reliability import Recorder, sized

pytestmark = [pytest.mark.slow, pytest.mark.fault]


def test_sigkill_while_jobs_run_abandons_kills_and_retries(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    count = 3
    pids, done = tmp_path / "pids", tmp_path / "done"
    # The first attempt leaves a grandchild in its group and waits for it; the
    # retry just records that it ran.
    script = (
        f'if [ "$JOBD_ATTEMPT" = 1 ]; then sleep 300 & echo $! >> {pids}; wait; fi; '
        f'echo "$JOBD_EXECUTION_ID" >> {done}'
    )
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nlease_ttl = "2s"\nkill_grace = "1s"\n'
        f"[jobs.work]\nshell = {q(script)}\n"
        'retries = 1\nretry_delay = "0s"\noverlap = "allow"\n',
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    try:
        daemon.start()
        first = [store.enqueue(NewRun("work", Trigger.MANUAL, store.now())) for _ in range(count)]
        wait_for_lines(pids, count)
        groups = wait_for_pids(store, first)
        sleepers = [int(p) for p in lines_of(pids)]
        daemon.kill()
        # Its keeper ends its runs at once: nothing runs on unsupervised until a
        # jobd starts again (test_recovery: the next jobd, when the keeper died too).
        for pgid in groups:
            assert_group_gone(pgid)
        left = [p for p in sleepers if alive(p)]

        daemon.start()
        wait_for(lambda: len(lines_of(done)) >= count, daemon)
        runs = store.executions(job="work", limit=None)
        originals = [r for r in runs if r.id in first]
        retries = [r for r in runs if r.retry_of in first]
        assert {r.status for r in originals} == {Status.ABANDONED}
        wait_for(lambda: stuck_rows(store) == 0, daemon)
        retries = [r for r in store.executions(job="work", limit=None) if r.retry_of in first]
        assert sorted(r.retry_of for r in retries) == sorted(first)
        assert {r.status for r in retries} == {Status.SUCCEEDED}
        executed = [int(x) for x in lines_of(done)]
        assert sorted(executed) == sorted(r.id for r in retries)
        assert daemon.stop() == 0
        orphans = daemon.orphans()
        reliability.observe(
            "crash",
            backend,
            runs=len(originals) + len(retries),
            duplicates=duplicates(executed),
            lost=count - len(retries),
            orphans=len(left) + len(orphans),
            stuck=stuck_rows(store),
            detail=f"{count} runs killed with the daemon: abandoned, groups killed, retried once",
        )
        assert not left and not orphans
    finally:
        daemon.cleanup()
        store.close()


def test_repeated_sigkill_loses_and_doubles_no_slot(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    kills = sized(3, 12)
    fired = tmp_path / "fired"
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nlease_ttl = "2s"\nkill_grace = "1s"\n'
        '[jobs.tick]\nschedule = "* * * * * *"\ncatchup = "all"\noverlap = "allow"\n'
        f"shell = {q(f'echo $JOBD_SCHEDULED_FOR >> {fired}')}\n",
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    store = open_store(store_url)
    rng = random.Random(9)
    try:
        daemon.start()
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 2.0))  # mid-tick, mid-run, mid-write: anywhere
            daemon.kill()
            time.sleep(rng.uniform(0.0, 1.5))  # down for a moment: slots are missed
            daemon.start()
        time.sleep(2)
        assert daemon.stop() == 0
        runs = store.executions(job="tick", limit=None)
        slots = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
        assert slots, daemon.full_log()
        expected = {slots[0] + timedelta(seconds=i) for i in range((slots[-1] - slots[0]).seconds)}
        lost = expected - set(slots)
        executed = lines_of(fired)
        running = [r.id for r in runs if r.status is Status.RUNNING]
        orphans = daemon.orphans()
        reliability.observe(
            "crash-loop",
            backend,
            runs=len(runs),
            duplicates=duplicates(slots) + duplicates(executed),
            lost=len(lost),
            orphans=len(orphans),
            stuck=len(running),
            detail=f"{kills} SIGKILLs at random moments; catchup = all replays the gaps",
        )
        assert not lost, sorted(lost)[:5]
        assert duplicates(slots) == 0 and duplicates(executed) == 0
        assert not running and not orphans
        statuses = {r.status for r in runs}
        assert statuses <= {Status.SUCCEEDED, Status.ABANDONED, Status.QUEUED}, statuses
    finally:
        daemon.cleanup()
        store.close()


def wait_for(condition: Any, daemon: Daemon, timeout: float = 30) -> None:
    from tests.conftest import wait_for as wait

    try:
        wait(condition, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"{condition} not met; daemon log:\n{daemon.full_log()}") from None


def wait_for_lines(path: Path, count: int, timeout: float = 30) -> None:
    from tests.conftest import wait_for as wait

    wait(lambda: len(lines_of(path)) >= count, timeout=timeout)


def wait_for_pids(store: Any, run_ids: list[int]) -> list[int]:
    from tests.conftest import wait_for as wait

    def pids() -> list[int] | None:
        found = [store.execution(i).pid for i in run_ids]
        return found if all(found) else None

    return wait(pids, timeout=30)
