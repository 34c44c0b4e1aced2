"""The systems of the peers part: jobd, procrastinate and Celery beat + worker, each
able to run a burst, a drain, live submissions, an every-second job and an idle
set, plus the spawn floor. The peers run in their own virtualenvs
(bench/.venv-procrastinate, bench/.venv-celery) through bench/peer_procrastinate.py
and bench/peer_celery.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH,
    ROOT,
    ensure_venv,
    postgres_schema,
    stop_process,
    wait_for_line,
)
from bench.fire import slot_schedule
from bench.jobd_side import JobdSetup, jobd_setup
from bench.probes import (
    Watched,
    postgres_backends,
    process_tree,
    read_times,
    redis_server_pid,
    span_rate,
    wait_stamps,
    work_command,
)
from bench.throughput import insert_queued

CONCURRENCY = 16
REDIS_URL = os.environ.get("JOBD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PROCRASTINATE = ("procrastinate==3.10.*", "psycopg[binary]")
CELERY = ("celery[redis]==5.7.*",)
READY = "bench-ready"


# -- the spawn floor ----------------------------------------------------------------------


def floor_spawn(n: int, workdir: Path) -> tuple[float, list[float]]:
    """Spawn n commands from CONCURRENCY threads as fast as they go; (start, stamps)."""
    stamps = workdir / f"floor-{uuid.uuid4().hex[:6]}"
    command = work_command(stamps)
    began = time.time()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(lambda _i: subprocess.run(command, check=False), range(n)))
    return began, read_times(stamps)


def floor_every_second(seconds: int, stamps: Path) -> None:
    """No scheduler: sleep to each whole second and spawn the command, `seconds` times;
    what any process-starting scheduler's every-second job can reach here."""
    command = work_command(stamps)
    for _ in range(seconds):
        time.sleep(max(0.0, math.ceil(time.time()) - time.time()))
        subprocess.Popen(command).wait()


# -- a peer process ------------------------------------------------------------------------


@contextlib.contextmanager
def peer_process(
    python: Path, script: str, config: dict[str, Any], log_path: Path
) -> Iterator[subprocess.Popen]:
    """A peer's worker or beat, started and waited for; stopped (SIGTERM) at the end."""
    with log_path.open("a") as log_file:
        proc = subprocess.Popen(
            [str(python), str(BENCH / script), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            wait_for_line(log_path, READY, 120, proc)
            yield proc
        finally:
            stop_process(proc, timeout=30)


def run_peer(python: Path, script: str, config: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [str(python), str(BENCH / script), json.dumps(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{script} {config.get('mode')} failed:\n{out.stderr[-2000:]}")
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


# -- the systems ---------------------------------------------------------------------------------


@dataclass
class System:
    """One scheduler configuration, able to run each measurement."""

    name: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="peers-")))

    def stamps(self, what: str) -> Path:
        return self.workdir / f"{what}-{uuid.uuid4().hex[:6]}"

    def close(self) -> None:
        """Remove the work directory (stamp files, peer logs)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def burst(self, k: int, due: float) -> dict[str, Any] | None:
        """k jobs due at `due`: {"times": child starts, "lost": fires never recorded
        (None where the system keeps no record)}, or None when set-up overran `due`."""
        raise NotImplementedError

    def drain(self, n: int) -> dict[str, Any]:
        """n runs queued before the worker starts: rate, CPU per run (wait_stamps)."""
        raise NotImplementedError

    def live(self, n: int) -> dict[str, Any]:
        """n runs submitted one by one while the worker runs: as drain, plus submit_rate."""
        raise NotImplementedError

    def every_second(self) -> contextlib.AbstractContextManager[Path]:
        """A job due every second, running until the context ends; yields its stamps."""
        raise NotImplementedError

    def idle(self, jobs: int) -> contextlib.AbstractContextManager[Watched]:
        """The system with `jobs` jobs that never come due, ready; yields its processes."""
        raise NotImplementedError


def too_late(due: float, deadline_lead: float = 0.3) -> bool:
    return time.time() > due - deadline_lead


class Jobd(System):
    def __init__(self, backend: str, max_concurrent: int) -> None:
        store = "SQLite" if backend == "sqlite" else "PostgreSQL"
        super().__init__(f"jobd, {store}, max_concurrent {max_concurrent}")
        self.backend = backend
        self.max_concurrent = max_concurrent

    def _setup(self) -> contextlib.AbstractContextManager[JobdSetup]:
        return jobd_setup(self.backend, {"max_concurrent": self.max_concurrent})

    def _watched(self, setup: JobdSetup) -> Watched:
        assert setup.proc is not None
        pid = setup.proc.pid
        store = postgres_backends if self.backend == "postgresql" else (lambda _p: [])
        return Watched(lambda: [pid], store)

    def burst(self, k: int, due: float) -> dict[str, Any] | None:
        with self._setup() as setup:
            stamps = self.stamps("burst")
            schedule = slot_schedule(due)
            command = work_command(stamps)
            setup.write_config(
                {f"j{i:05d}": {"schedule": schedule, "command": command} for i in range(k)}
            )
            setup.apply()
            setup.start()
            if too_late(due):
                return None
            wait_stamps(
                stamps, k, None, quiet=10, deadline=time.monotonic() + due - time.time() + 120
            )
            deadline = time.monotonic() + 30
            while setup.count("status IN ('queued', 'running')") and time.monotonic() < deadline:
                time.sleep(0.1)
            rows = setup.count("scheduled_for IS NOT NULL")
        return {"times": read_times(stamps), "lost": k - rows}

    def drain(self, n: int) -> dict[str, Any]:
        with self._setup() as setup:
            stamps = self.stamps("drain")
            setup.write_config({"t": {"command": work_command(stamps), "overlap": "allow"}})
            setup.apply()
            insert_queued(setup.url, "t", n)
            setup.start()
            result = wait_stamps(
                stamps, n, self._watched(setup), quiet=15, deadline=time.monotonic() + 60 + n / 20
            )
        return {**result, "rate": span_rate(read_times(stamps))}

    def live(self, n: int) -> dict[str, Any]:
        with self._setup() as setup:
            stamps = self.stamps("live")
            setup.write_config({"t": {"command": work_command(stamps), "overlap": "allow"}})
            setup.apply()
            setup.start()
            submitter = subprocess.Popen(
                [sys.executable, "-c", SUBMIT_JOBD, setup.url, str(n)],
                stdout=subprocess.PIPE,
                text=True,
                env=setup.env(),
                cwd=ROOT,
            )
            result = wait_stamps(
                stamps, n, self._watched(setup), quiet=15, deadline=time.monotonic() + 60 + n / 20
            )
            out, _ = submitter.communicate(timeout=120)
        sent = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"n": 0, "seconds": 0}
        return {**result, "rate": span_rate(read_times(stamps)), "submit_rate": _rate(sent)}

    @contextlib.contextmanager
    def every_second(self) -> Iterator[Path]:
        with self._setup() as setup:
            stamps = self.stamps("tick")
            setup.write_config(
                {"tick": {"schedule": "* * * * * *", "command": work_command(stamps)}}
            )
            setup.apply()
            setup.start()
            yield stamps

    @contextlib.contextmanager
    def idle(self, jobs: int) -> Iterator[Watched]:
        with self._setup() as setup:
            command = work_command(self.workdir / "never")
            setup.write_config(
                {f"y{i:05d}": {"schedule": "@yearly", "command": command} for i in range(jobs)}
            )
            setup.apply()
            setup.start()
            yield self._watched(setup)


# A manual run per call, the way `jobd trigger` queues one (audit row, wake-up),
# without starting a process per submission.
SUBMIT_JOBD = """
import json, sys, time
from jobd.ops.context import Context
from jobd.ops.runs import trigger
scope = Context(config_path=None, store_override=sys.argv[1]).scope()
n = int(sys.argv[2])
began = time.perf_counter()
for _ in range(n):
    trigger(scope, "bench", "t")
print(json.dumps({"n": n, "seconds": time.perf_counter() - began}))
"""


def _rate(sent: dict[str, Any]) -> float:
    return sent["n"] / sent["seconds"] if sent.get("seconds") else 0.0


class Procrastinate(System):
    SCRIPT = "peer_procrastinate.py"

    def __init__(self) -> None:
        super().__init__("procrastinate 3.10, PostgreSQL, concurrency 16")
        self.python = ensure_venv(BENCH / ".venv-procrastinate", PROCRASTINATE)

    @contextlib.contextmanager
    def _schema(self) -> Iterator[str]:
        with postgres_schema("procrastinate_bench") as dsn:
            run_peer(self.python, self.SCRIPT, {"mode": "schema", "dsn": dsn})
            yield dsn

    def _worker(self, dsn: str, stamps: Path, periodic: dict[str, Any] | None = None):
        config = {"mode": "worker", "dsn": dsn, "concurrency": CONCURRENCY, "stamps": str(stamps)}
        if periodic:
            config["periodic"] = periodic
        return peer_process(self.python, self.SCRIPT, config, self.workdir / "worker.log")

    @staticmethod
    def _watched(proc: subprocess.Popen) -> Watched:
        return Watched(lambda: [proc.pid], postgres_backends)

    def burst(self, k: int, due: float) -> dict[str, Any] | None:
        at = time.gmtime(due)
        # croniter, which procrastinate uses, takes the seconds as a sixth field at the end.
        cron = f"{at.tm_min} {at.tm_hour} * * * {at.tm_sec}"
        stamps = self.stamps("burst")
        with self._schema() as dsn, self._worker(dsn, stamps, {"cron": cron, "count": k}):
            if too_late(due):
                return None
            wait_stamps(
                stamps, k, None, quiet=10, deadline=time.monotonic() + due - time.time() + 120
            )
            rows = _pg_count(dsn, "SELECT count(*) FROM procrastinate_jobs")
        return {"times": read_times(stamps), "lost": k - rows}

    def drain(self, n: int) -> dict[str, Any]:
        stamps = self.stamps("drain")
        with self._schema() as dsn:
            run_peer(self.python, self.SCRIPT, {"mode": "defer", "dsn": dsn, "n": n, "batch": True})
            with self._worker(dsn, stamps) as proc:
                result = wait_stamps(
                    stamps,
                    n,
                    self._watched(proc),
                    quiet=15,
                    deadline=time.monotonic() + 60 + n / 20,
                )
        return {**result, "rate": span_rate(read_times(stamps))}

    def live(self, n: int) -> dict[str, Any]:
        stamps = self.stamps("live")
        with (
            self._schema() as dsn,
            self._worker(dsn, stamps) as proc,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            sent = pool.submit(
                run_peer, self.python, self.SCRIPT, {"mode": "defer", "dsn": dsn, "n": n}
            )
            result = wait_stamps(
                stamps,
                n,
                self._watched(proc),
                quiet=15,
                deadline=time.monotonic() + 60 + n / 20,
            )
            submitted = sent.result()
        return {**result, "rate": span_rate(read_times(stamps)), "submit_rate": _rate(submitted)}

    @contextlib.contextmanager
    def every_second(self) -> Iterator[Path]:
        stamps = self.stamps("tick")
        with self._schema() as dsn, self._worker(dsn, stamps, {"cron": "* * * * * *", "count": 1}):
            yield stamps

    @contextlib.contextmanager
    def idle(self, jobs: int) -> Iterator[Watched]:
        with (
            self._schema() as dsn,
            self._worker(dsn, self.workdir / "never", {"cron": "0 0 1 1 *", "count": jobs}) as proc,
        ):
            yield self._watched(proc)


def _pg_count(dsn: str, sql: str) -> int:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return int(cur.fetchone()[0])
    finally:
        conn.close()


class Celery(System):
    SCRIPT = "peer_celery.py"

    def __init__(self) -> None:
        super().__init__("Celery 5.7 beat + worker, Redis, 16 prefork children")
        self.python = ensure_venv(BENCH / ".venv-celery", CELERY)

    def _config(self, mode: str, queue: str, **extra: Any) -> dict[str, Any]:
        return {"mode": mode, "broker": REDIS_URL, "queue": queue, **extra}

    def _worker(self, queue: str, stamps: Path):
        config = self._config("worker", queue, concurrency=CONCURRENCY, stamps=str(stamps))
        return peer_process(self.python, self.SCRIPT, config, self.workdir / "worker.log")

    def _beat(self, queue: str, entries: dict[str, Any]):
        schedule = self.workdir / f"beat-{queue}"
        config = self._config("beat", queue, entries=entries, schedule_file=str(schedule))
        return peer_process(self.python, self.SCRIPT, config, self.workdir / "beat.log")

    @staticmethod
    def _watched(*procs: subprocess.Popen) -> Watched:
        redis = redis_server_pid()
        return Watched(
            lambda: [pid for proc in procs for pid in process_tree(proc.pid)],
            lambda _pids: [redis] if redis else [],
        )

    @contextlib.contextmanager
    def _queue(self) -> Iterator[str]:
        queue = f"jobd-bench-{uuid.uuid4().hex[:8]}"
        try:
            yield queue
        finally:
            with contextlib.suppress(Exception):
                subprocess.run(
                    ["redis-cli", "-u", REDIS_URL, "DEL", queue], capture_output=True, timeout=10
                )

    def burst(self, k: int, due: float) -> dict[str, Any] | None:
        at = time.gmtime(due)
        if at.tm_sec:
            raise ValueError("Celery beat's crontab fires on minute boundaries only")
        stamps = self.stamps("burst")
        entries = {"minute": at.tm_min, "hour": at.tm_hour, "count": k}
        with self._queue() as queue, self._worker(queue, stamps), self._beat(queue, entries):
            if too_late(due):
                return None
            wait_stamps(
                stamps, k, None, quiet=10, deadline=time.monotonic() + due - time.time() + 120
            )
        return {"times": read_times(stamps), "lost": None}

    def drain(self, n: int) -> dict[str, Any]:
        stamps = self.stamps("drain")
        with self._queue() as queue:
            run_peer(self.python, self.SCRIPT, self._config("send", queue, n=n))
            with self._worker(queue, stamps) as proc:
                result = wait_stamps(
                    stamps,
                    n,
                    self._watched(proc),
                    quiet=15,
                    deadline=time.monotonic() + 60 + n / 20,
                )
        return {**result, "rate": span_rate(read_times(stamps))}

    def live(self, n: int) -> dict[str, Any]:
        stamps = self.stamps("live")
        with (
            self._queue() as queue,
            self._worker(queue, stamps) as proc,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            sent = pool.submit(run_peer, self.python, self.SCRIPT, self._config("send", queue, n=n))
            result = wait_stamps(
                stamps,
                n,
                self._watched(proc),
                quiet=15,
                deadline=time.monotonic() + 60 + n / 20,
            )
            submitted = sent.result()
        return {**result, "rate": span_rate(read_times(stamps)), "submit_rate": _rate(submitted)}

    @contextlib.contextmanager
    def idle(self, jobs: int) -> Iterator[Watched]:
        entries = {"yearly": True, "count": jobs}
        with (
            self._queue() as queue,
            self._worker(queue, self.workdir / "never") as worker,
            self._beat(queue, entries) as beat,
        ):
            yield self._watched(worker, beat)
