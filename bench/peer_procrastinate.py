"""procrastinate 3.10 for bench/peers.py; runs in bench/.venv-procrastinate, never in jobd's.

    python bench/peer_procrastinate.py '{"mode": "worker", "dsn": ..., "stamps": ..., ...}'

Modes:
  schema   apply procrastinate's schema (the DSN's search_path picks the schema)
  worker   one worker, `concurrency` async slots, optional periodic tasks
           ({"cron": ..., "count": n}); runs until SIGTERM. Its log line
           "Starting worker" says it is up.
  defer    defer n jobs: "batch" (one batch_defer_async, before the worker
           starts) or one by one as fast as one client can; prints JSON.

Configured as procrastinate's documentation recommends for many short I/O-bound
jobs: an async task (the job awaits its child process, so one event loop
keeps `concurrency` jobs in flight), the async PsycopgConnector with its
connection pool, LISTEN/NOTIFY on (the default) so idle slots wake on a
deferral instead of polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

import procrastinate

CONFIG = json.loads(sys.argv[1])
STAMPS = CONFIG.get("stamps", "/dev/null")

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=CONFIG["dsn"], min_size=1, max_size=CONFIG.get("pool", 20)
    )
)


@app.task(name="stamp")
async def stamp(timestamp: int | None = None) -> None:
    """The same work as every system's job: a child that writes its own clock."""
    proc = await asyncio.create_subprocess_exec("sh", "-c", f"date +%s.%N >> {STAMPS}")
    await proc.wait()


def register_periodic(cron: str, count: int) -> None:
    for i in range(count):
        app.periodic_registry.register_task(
            task=stamp, cron=cron, periodic_id=f"p{i:05d}", configure_kwargs={}
        )


async def main() -> None:
    mode = CONFIG["mode"]
    async with app.open_async():
        if mode == "schema":
            await app.schema_manager.apply_schema_async()
        elif mode == "worker":
            periodic = CONFIG.get("periodic")
            if periodic:
                register_periodic(periodic["cron"], periodic["count"])
            await app.run_worker_async(
                concurrency=CONFIG["concurrency"], install_signal_handlers=True
            )
        elif mode == "defer":
            n = CONFIG["n"]
            began = time.perf_counter()
            if CONFIG.get("batch"):
                for start in range(0, n, 1000):
                    await stamp.batch_defer_async(*({} for _ in range(min(1000, n - start))))
            else:
                for _ in range(n):
                    await stamp.defer_async()
            print(json.dumps({"n": n, "seconds": time.perf_counter() - began}), flush=True)


class Ready(logging.Handler):
    """Says "ready" on stdout once the worker has started its loop. procrastinate's
    command line logs at WARNING by default; that is kept for everything else."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "start_worker":
            print("bench-ready", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    worker_log = logging.getLogger("procrastinate.worker")
    worker_log.setLevel(logging.INFO)
    worker_log.propagate = False
    worker_log.addHandler(Ready())
    warnings = logging.StreamHandler()
    warnings.setLevel(logging.WARNING)
    worker_log.addHandler(warnings)
    asyncio.run(main())
