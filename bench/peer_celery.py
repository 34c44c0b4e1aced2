"""Celery 5.7 beat and worker on Redis for bench/peers.py; runs in bench/.venv-celery.

    python bench/peer_celery.py '{"mode": "worker", "broker": ..., "queue": ..., ...}'

Modes:
  worker   one worker, prefork pool with `concurrency` children; prints "ready"
  beat     beat with `entries` crontab entries ({"minute", "hour", "count"} or
           the yearly idle set); prints "ready"
  send     send n tasks as fast as one client can; prints JSON

Configured as Celery's documentation recommends for many short tasks where
throughput matters: a large prefetch multiplier (the Optimizing guide suggests
64 or 128 for lots of short tasks), results ignored (the Tasks guide: storing
results you do not use wastes time), rate limits disabled (none are used), the
prefork pool with one child per slot, fair scheduling (-O fair, the default
since 4.0). Every measurement gets its own queue, deleted afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from celery import Celery
from celery.schedules import crontab
from celery.signals import beat_init, worker_ready

CONFIG = json.loads(sys.argv[1])
STAMPS = CONFIG.get("stamps", "/dev/null")

app = Celery("bench", broker=CONFIG["broker"])
app.conf.update(
    task_default_queue=CONFIG["queue"],
    task_ignore_result=True,
    worker_prefetch_multiplier=64,
    worker_disable_rate_limits=True,
    timezone="UTC",
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="stamp")
def stamp() -> None:
    """The same work as every system's job: a child that writes its own clock."""
    subprocess.run(["sh", "-c", f"date +%s.%N >> {STAMPS}"], check=False)


def beat_schedule(entries: dict) -> dict:
    if entries.get("yearly"):
        when = crontab(minute=0, hour=0, day_of_month=1, month_of_year=1)
    else:
        when = crontab(minute=entries["minute"], hour=entries["hour"])
    return {f"e{i:05d}": {"task": "stamp", "schedule": when} for i in range(entries["count"])}


@worker_ready.connect
def _worker_ready(**_kwargs: object) -> None:
    print("bench-ready", flush=True)


@beat_init.connect
def _beat_ready(**_kwargs: object) -> None:
    print("bench-ready", flush=True)


def main() -> None:
    mode = CONFIG["mode"]
    if mode == "worker":
        app.worker_main(
            [
                "worker",
                "--pool=prefork",
                f"--concurrency={CONFIG['concurrency']}",
                "--loglevel=WARNING",
                "-O",
                "fair",
            ]
        )
    elif mode == "beat":
        app.conf.beat_schedule = beat_schedule(CONFIG["entries"])
        app.Beat(loglevel="WARNING", schedule=CONFIG["schedule_file"], quiet=True).run()
    elif mode == "send":
        n = CONFIG["n"]
        began = time.perf_counter()
        for _ in range(n):
            stamp.delay()
        print(json.dumps({"n": n, "seconds": time.perf_counter() - began}), flush=True)


if __name__ == "__main__":
    main()
