"""The APScheduler 3.11 side of the benchmarks, run by bench/.venv-aps/bin/python.

    bench/.venv-aps/bin/python bench/aps_worker.py '{"mode": "fire", ...}'

Prints one JSON line with its measurements. APScheduler is configured as its
documentation suggests for each job store: BackgroundScheduler, the default
ThreadPoolExecutor (10 threads), the default misfire_grace_time (1 s) and
coalescing. The SQLite job store gets the same durability settings as jobd's
store (WAL, synchronous=NORMAL), so neither side is slowed by fsyncs the other
skips. Job functions record their own start time: an in-process function call,
where jobd's jobs are whole processes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

STARTS: list[tuple[str, float]] = []
ENDS: list[float] = []
QUEUED: dict[str, float] = {}
MISSED: list[str] = []
ERRORS: list[str] = []


def stamp(key: str) -> None:
    """The job: note when it began (list.append is atomic under the GIL)."""
    STARTS.append((key, time.time()))
    ENDS.append(time.time())


def spawn_true(key: str) -> None:
    """The job as a process, like jobd's: run `true` and wait for it."""
    STARTS.append((key, time.time()))
    subprocess.run(["true"], check=False)
    ENDS.append(time.time())


class StampingExecutor(ThreadPoolExecutor):
    """The default executor, noting when each job is handed to the thread pool."""

    def _do_submit_job(self, job, run_times):
        QUEUED[job.id] = time.time()
        super()._do_submit_job(job, run_times)


def on_event(event) -> None:
    if event.code == EVENT_JOB_MISSED:
        MISSED.append(event.job_id)
    elif event.code == EVENT_JOB_ERROR:
        ERRORS.append(f"{event.job_id}: {event.exception!r}")


def make_scheduler(store: str, workdir: str, **job_defaults) -> BackgroundScheduler:
    if store == "memory":
        jobstore = MemoryJobStore()
    else:
        from sqlalchemy import create_engine, event

        engine = create_engine(f"sqlite:///{Path(workdir) / 'aps.db'}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        jobstore = SQLAlchemyJobStore(engine=engine)
    scheduler = BackgroundScheduler(
        jobstores={"default": jobstore},
        executors={"default": StampingExecutor()},
        job_defaults=job_defaults,
        timezone=UTC,
    )
    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    return scheduler


def cron_at(moment: float) -> CronTrigger:
    at = datetime.fromtimestamp(moment, UTC)
    return CronTrigger(
        month=at.month, day=at.day, hour=at.hour, minute=at.minute, second=at.second, timezone=UTC
    )


def wait_done(expected: int, not_before: float, quiet: float) -> None:
    last, last_change = -1, time.time()
    while True:
        now = time.time()
        seen = len(STARTS) + len(MISSED)
        if seen >= expected:
            return
        if seen != last:
            last, last_change = seen, now
        elif now > not_before and now - max(last_change, not_before) > quiet:
            return
        time.sleep(0.05)


def fire(cfg: dict) -> dict:
    """K jobs all due in the same second: submit and start latency, and drops."""
    k, due = cfg["k"], float(cfg["due"])
    scheduler = make_scheduler(cfg["store"], cfg["workdir"])
    started = time.time()
    for i in range(k):
        scheduler.add_job(stamp, cron_at(due), args=[f"j{i}"], id=f"j{i}")
    scheduler.start()
    ready = time.time()
    if ready > due - 0.2:
        scheduler.shutdown(wait=False)
        return {"error": "lead", "setup_s": ready - started}
    wait_done(k, due, quiet=10)
    time.sleep(0.2)
    scheduler.shutdown(wait=True)
    return {
        "setup_s": ready - started,
        "queued": [QUEUED[key] - due for key in QUEUED],
        "started": [t - due for _key, t in STARTS],
        "ran": len({key for key, _t in STARTS}),
        "missed": len(MISSED),
        "errors": ERRORS[:5],
    }


def precision(cfg: dict) -> dict:
    """One job every second for `seconds`: how late each run starts. With `offset`
    (seconds), the slots fall that far into each second, so that another scheduler
    measured at the same time fires at other instants."""
    offset = float(cfg.get("offset", 0.0))
    scheduler = make_scheduler(cfg["store"], cfg["workdir"])
    if offset:
        first = datetime.fromtimestamp(math.floor(time.time()) + 1 + offset, UTC)
        trigger = IntervalTrigger(seconds=1, start_date=first, timezone=UTC)
    else:
        trigger = CronTrigger(second="*", timezone=UTC)
    scheduler.add_job(stamp, trigger, args=["tick"], id="tick")
    scheduler.start()
    time.sleep(cfg["seconds"])
    scheduler.shutdown(wait=True)
    # Each run is late by far less than a second, so its slot is its start, rounded down.
    lateness = [(t - offset) - math.floor(t - offset) for _key, t in STARTS]
    return {"started": lateness[1:], "missed": len(MISSED)}  # the first may race the start


def throughput(cfg: dict) -> dict:
    """N runs all due at once, executed as fast as the scheduler goes."""
    n, due = cfg["n"], float(cfg["due"])
    func = spawn_true if cfg.get("job") == "process" else stamp
    # Throughput, not punctuality: no run may be dropped for being late.
    scheduler = make_scheduler(cfg["store"], cfg["workdir"], misfire_grace_time=None)
    trigger = DateTrigger(datetime.fromtimestamp(due, UTC))
    for i in range(n):
        scheduler.add_job(func, trigger, args=[f"r{i}"], id=f"r{i}")
    scheduler.start()
    ready = time.time()
    if ready > due - 0.2:
        scheduler.shutdown(wait=False)
        return {"error": "lead", "setup_s": ready}
    wait_done(n, due, quiet=15)
    while len(ENDS) < len(STARTS):
        time.sleep(0.01)
    scheduler.shutdown(wait=True)
    first = min(t for _key, t in STARTS)
    return {
        "n": len(STARTS),
        "missed": len(MISSED),
        "seconds": max(ENDS) - first,
        "from_due": max(ENDS) - due,
    }


def idle(cfg: dict) -> None:
    """N jobs far in the future; print 'ready' and idle until SIGTERM."""
    scheduler = make_scheduler(cfg["store"], cfg["workdir"])
    trigger = CronTrigger(month=1, day=1, hour=0, minute=0, timezone=UTC)  # @yearly
    for i in range(cfg["n"]):
        scheduler.add_job(stamp, trigger, args=[f"y{i}"], id=f"y{i}")
    scheduler.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    stop.wait()
    scheduler.shutdown(wait=False)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    mode = cfg["mode"]
    if mode == "idle":
        idle(cfg)
        return
    if mode == "cron":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench.cron_math import measure

        print(json.dumps(measure(cfg)))
        return
    result = {"fire": fire, "precision": precision, "throughput": throughput}[mode](cfg)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
