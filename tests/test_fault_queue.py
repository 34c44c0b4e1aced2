"""Fault: a backlog far beyond what the daemon runs at once. 10,000 queued runs
(500 in ./test.sh) against max_concurrent = 4: the daemon's memory stays
flat, never more than 4 run at a time, and the queue drains in order (started
in id order), every run once.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from jobd.core.model import Status
from jobd.core.timeutil import to_db
from tests.conftest import open_store, wait_for
from tests.faults import Daemon, duplicates, lines_of, q, rss_kb, stuck_rows, write_config
from tests.reliability import Recorder, sized

pytestmark = [pytest.mark.slow, pytest.mark.fault]


def test_a_large_backlog_drains_in_order_with_bounded_memory(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    count = sized(500, 10000)
    ran = tmp_path / "ran"
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nmax_concurrent = 4\n[jobs.work]\noverlap = "allow"\n'
        f"shell = {q(f'echo $JOBD_EXECUTION_ID >> {ran}')}\n",
    )
    store = open_store(store_url)
    daemon = Daemon(config, store_url, tmp_path / "jobd.log")
    peak, most_running = [0], [0]
    done = threading.Event()

    def sample() -> None:
        watcher = open_store(store_url)
        try:
            while not done.is_set():
                peak[0] = max(peak[0], rss_kb(daemon.pid))
                E = watcher.m.Execution
                running = E.select().where(E.status == Status.RUNNING).count()
                most_running[0] = max(most_running[0], running)
                time.sleep(0.05)
        finally:
            watcher.close()

    try:
        daemon.start()
        baseline = rss_kb(daemon.pid)
        now = to_db(store.now())
        rows = [
            {"job": "work", "trigger": "manual", "queued_at": now, "not_before": now,
             "status": "queued", "attempt": 1}
            for _ in range(count)
        ]  # fmt: skip
        E = store.m.Execution
        with store.atomic():
            for start in range(0, count, 500):
                E.insert_many(rows[start : start + 500]).execute()
        store.wake_daemons()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        wait_for(lambda: stuck_rows(store) == 0, timeout=sized(120, 900), interval=0.5)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        after = rss_kb(daemon.pid)
        assert daemon.stop() == 0
        runs = sorted(store.executions(job="work", limit=None), key=lambda r: r.id)
        executed = [int(x) for x in lines_of(ran)]
        starts = [r.started_at for r in runs]
        out_of_order = sum(1 for a, b in itertools.pairwise(starts) if a > b)
        growth = (peak[0] - baseline) / 1024
        reliability.observe(
            "queue",
            backend,
            runs=len(runs),
            ran=len(set(executed)),
            duplicates=duplicates(executed),
            lost=len({r.id for r in runs} - set(executed)),
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail=f"{count:,} queued: drained in {elapsed:.0f}s ({count / elapsed:.0f}/s), "
            f"at most {most_running[0]} running, RSS {baseline // 1024} MB +{growth:.1f} MB peak, "
            f"{out_of_order} started out of id order",
        )
        assert {r.status for r in runs} == {Status.SUCCEEDED}
        assert sorted(executed) == [r.id for r in runs]
        assert out_of_order == 0
        assert most_running[0] <= 4
        assert growth < 24, f"daemon RSS grew {growth:.1f} MB"
        assert (after - baseline) / 1024 < 16
    finally:
        done.set()
        daemon.cleanup()
        store.close()
