"""Peers and the spawn floor: jobd beside procrastinate and Celery beat + worker.

Every system does the same work: each job is `sh -c 'date +%s.%N >> FILE'`, so
every start time below is the job child's own clock, read the same way.

- *spawn floor*: no scheduler; a bare loop of 16 threads spawning the same
  commands (the concurrency every system here gets).
- *jobd*: `jobd run` on SQLite and on PostgreSQL, at `max_concurrent` 16 and
  at the default users run (4).
- *procrastinate* 3.10 (PostgreSQL): one worker, concurrency 16, an async task
  awaiting its child (bench/peer_procrastinate.py says how it is configured).
- *Celery* 5.7 beat + one worker with 16 prefork children on the local Redis
  (bench/peer_celery.py says how it is configured).

Each peer lives in its own virtualenv (bench/.venv-procrastinate,
bench/.venv-celery), made on first use; none is ever a jobd dependency.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH,
    NONE,
    POSTGRES_DSN,
    ROOT,
    TIMES,
    Latency,
    cpu_between,
    ensure_venv,
    log,
    ms,
    postgres_schema,
    proc_rss_mib,
    proc_task_cpu,
    stop_process,
    wait_for_line,
)
from bench.fire import slot_schedule
from bench.jobd_side import JobdSetup, count_lines, jobd_setup
from bench.report import table
from bench.throughput import insert_queued

CONCURRENCY = 16
DEFAULT_MAX_CONCURRENT = 4  # jobd's default (SPEC: max_concurrent = 4)
REDIS_URL = os.environ.get("JOBD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PROCRASTINATE = ("procrastinate==3.10.*", "psycopg[binary]")
CELERY = ("celery[redis]==5.7.*",)
READY = "bench-ready"
FLOOR = "spawn floor (16 threads)"


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is; the quick run's are smaller."""

    k: int  # burst size
    n: int  # runs per drain
    live_n: int  # runs submitted one by one (0: not measured)
    precision_s: int
    idle_jobs: int
    settle_s: float
    window_s: float
    minute_boundary: bool  # False: the burst falls on the next whole second

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(300, 200, 0, 8, 1000, 3, 10, False)
        return cls(1000, 2000, 1000, 40, 10_000, 60, 60, True)


def work_command(path: Path) -> list[str]:
    """Every system's job: a child that writes its own clock to `path`."""
    return ["sh", "-c", f"date +%s.%N >> {path}"]


def read_times(path: Path) -> list[float]:
    times = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().split():
            with contextlib.suppress(ValueError):
                times.append(float(line))
    return sorted(times)


def span_rate(times: Sequence[float]) -> float:
    """Runs per second between the first and the last child start."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def precision_delays(times: Sequence[float], skip: int = 2) -> list[float]:
    """Delays of an every-second job's runs after their due second (the whole second
    each child start falls in; every delay here is well under a second). The first
    `skip` runs may fall while the scheduler is still starting."""
    return [t - math.floor(t) for t in sorted(times)[skip:]]


# -- process probes ---------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """The process and its descendants that are not job children (`sh`, `date`):
    Celery's prefork pool, not the commands it runs."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            comm = Path(f"/proc/{current}/comm").read_text().strip()
        except OSError:
            continue
        if current != pid and comm in ("sh", "date", "bash"):
            continue
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def tree_cpu(pids: Sequence[int]) -> dict[str, float]:
    """Per-thread CPU seconds of several processes (thread ids are unique system-wide)."""
    times: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            times.update(proc_task_cpu(pid))
    return times


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets a process holds."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def postgres_backends(pids: Sequence[int]) -> list[int]:
    """The PostgreSQL backends serving these processes' connections."""
    import psycopg2

    ports = sorted(set().union(*(local_ports(pid) for pid in pids)))
    if not ports:
        return []
    conn = psycopg2.connect(POSTGRES_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def redis_server_pid() -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "redis-server":
                    return int(proc.name)
    return None


@dataclass
class Watched:
    """A system's own processes, and the store or broker processes serving it."""

    pids: Callable[[], list[int]]
    store: Callable[[list[int]], list[int]] = lambda _pids: []

    def reading(self) -> tuple[dict[str, float], dict[str, float]]:
        own = self.pids()
        return tree_cpu(own), tree_cpu(self.store(own))


def wait_stamps(
    path: Path, expected: int, watched: Watched | None, quiet: float, deadline: float
) -> dict[str, Any]:
    """Wait for `expected` child starts; with `watched`, its CPU between the first start
    and the last (so start-up and shut-down are not counted)."""
    first_own = first_store = None
    seen_at_first = 0
    last, last_change = -1, time.monotonic()
    while True:
        seen = count_lines(path)
        now = time.monotonic()
        if seen and first_own is None and watched is not None:
            first_own, first_store = watched.reading()
            seen_at_first = seen
        if seen >= expected:
            break
        if seen != last:
            last, last_change = seen, now
        elif (seen and now - last_change > quiet) or now > deadline:
            log(f"  only {seen} of {expected} runs started; giving up waiting")
            break
        time.sleep(0.01)
    result: dict[str, Any] = {"seen": seen}
    if watched is not None and first_own is not None and first_store is not None:
        own, store = watched.reading()
        runs = max(1, seen - seen_at_first)
        result["cpu_ms"] = cpu_between(first_own, own) / runs * 1000
        result["store_cpu_ms"] = cpu_between(first_store, store) / runs * 1000
    return result


# -- the spawn floor ----------------------------------------------------------------------


def floor_spawn(n: int, workdir: Path) -> tuple[float, list[float]]:
    """Spawn n commands from CONCURRENCY threads as fast as they go; (start, stamps)."""
    stamps = workdir / f"floor-{uuid.uuid4().hex[:6]}"
    command = work_command(stamps)
    began = time.time()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(lambda _i: subprocess.run(command, check=False), range(n)))
    return began, read_times(stamps)


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

    # burst(k, due) -> (stamps, lost or None); drain(n) / live(n) -> result dicts
    def burst(self, k: int, due: float) -> dict[str, Any] | None:
        raise NotImplementedError

    def drain(self, n: int) -> dict[str, Any]:
        raise NotImplementedError

    def live(self, n: int) -> dict[str, Any]:
        raise NotImplementedError

    @contextlib.contextmanager
    def every_second(self) -> Iterator[Path]:
        raise NotImplementedError
        yield Path()

    @contextlib.contextmanager
    def idle(self, jobs: int) -> Iterator[Watched]:
        raise NotImplementedError
        yield Watched(list)


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


# -- the run -------------------------------------------------------------------------------


def systems(quick: bool, postgres: bool) -> list[System]:
    """jobd at 16 and at the default on each store (the quick run: at 16 only), then the peers."""
    chosen: list[System] = []
    for backend in ["sqlite", "postgresql"] if postgres else ["sqlite"]:
        chosen.append(Jobd(backend, CONCURRENCY))
    if not quick:
        for backend in ["sqlite", "postgresql"] if postgres else ["sqlite"]:
            chosen.append(Jobd(backend, DEFAULT_MAX_CONCURRENT))
    if postgres:
        chosen.append(Procrastinate())
    if redis_reachable():
        chosen.append(Celery())
    else:
        log(f"Redis at {REDIS_URL} unreachable: Celery's rows are skipped")
    return chosen


def versions() -> list[list[str]]:
    """The peers' versions, for the machine table (their venvs are made if needed)."""
    rows = []
    for label, venv, requirements, dist in (
        ("procrastinate", ".venv-procrastinate", PROCRASTINATE, "procrastinate"),
        ("Celery", ".venv-celery", CELERY, "celery"),
    ):
        python = ensure_venv(BENCH / venv, requirements)
        code = f"import importlib.metadata as m; print(m.version({dist!r}))"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        rows.append([label, out.stdout.strip() or "unknown"])
    try:
        info = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "INFO", "server"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        info = ""
    found = [
        line.split(":", 1)[1].strip()
        for line in info.splitlines()
        if line.startswith("redis_version:")
    ]
    rows.append(["Redis", found[0] if found else "not reachable"])
    return rows


def redis_reachable() -> bool:
    try:
        out = subprocess.run(
            ["redis-cli", "-u", REDIS_URL, "PING"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.stdout.strip() == "PONG"


def next_due(sizes: Sizes, lead: float) -> float:
    """The first minute boundary (the quick run: whole second) at least `lead` s away."""
    step = 60 if sizes.minute_boundary else 1
    return float(math.ceil((time.time() + lead) / step) * step)


def burst_lead(sizes: Sizes) -> float:
    """Seconds of set-up to allow before the due instant (a config with K jobs applied,
    a worker started); one too short is retried, longer."""
    return (6 if sizes.minute_boundary else 3) + sizes.k / 150


def burst(system: System, sizes: Sizes) -> dict[str, Any] | None:
    """The K-job burst, retried at a later instant when set-up overran the first."""
    lead = burst_lead(sizes)
    for _attempt in range(3):
        due = next_due(sizes, lead)
        result = system.burst(sizes.k, due)
        if result is not None:
            delays = [t - due for t in result["times"] if t >= due - 1]
            log(f"  {system.name}: burst p99 {ms(Latency.of(delays).p(99))} ms")
            return {**result, "started": Latency.of(delays), "k": sizes.k}
        lead *= 2
        log(f"  {system.name}: set-up overran the due instant; again, {lead:.0f} s ahead")
    return None


def guarded(system: System, func: Callable[[], Any]) -> Any:
    """One measurement; a peer that fails loses its row, not the whole run."""
    try:
        return func()
    except Exception as exc:
        log(f"  {system.name} failed, its row is left empty: {str(exc)[-1500:]}")
        return None


def measure(quick: bool, postgres: bool) -> dict[str, Any]:
    sizes = Sizes.of(quick)
    chosen = systems(quick, postgres)
    began, load_before = time.monotonic(), os.getloadavg()[0]
    out: dict[str, Any] = {"sizes": sizes, "systems": [s.name for s in chosen]}
    log(f"peers: {', '.join(s.name for s in chosen)}")

    with tempfile.TemporaryDirectory(prefix="spawn-floor-") as workdir:
        began, times = floor_spawn(sizes.k, Path(workdir))
        out["floor_burst"] = Latency.of([t - began for t in times])
        before = _self_cpu()  # every thread's, ended ones too; not the children's
        _began, times = floor_spawn(sizes.n, Path(workdir))
        out["floor_cpu_ms"] = (_self_cpu() - before) / sizes.n * 1000
        out["floor_rate"] = span_rate(times)
    log(f"  {FLOOR}: burst p99 {ms(out['floor_burst'].p(99))} ms, {out['floor_rate']:.0f} runs/s")

    # Bursts fall on minute boundaries (Celery beat's crontab knows no seconds); the
    # sustained measurements fill the wait for the next boundary.
    kinds = ("drain", "live") if sizes.live_n else ("drain",)
    fillers = [(s, kind) for kind in kinds for s in chosen]
    out["burst"], out["drain"], out["live"] = {}, {}, {}

    def run_filler() -> None:
        system, kind = fillers.pop(0)
        log(f"  {system.name}: {kind}")
        result = guarded(
            system, lambda: system.drain(sizes.n) if kind == "drain" else system.live(sizes.live_n)
        )
        if result is None:
            return
        out[kind][system.name] = result
        log(f"    {result['rate']:.0f} runs/s, {result.get('cpu_ms', math.nan):.2f} CPU ms/run")

    for system in chosen:
        if isinstance(system, Celery) and not sizes.minute_boundary:
            continue  # quick runs fall on whole seconds, which beat cannot fire at
        # Until the next boundary is near, a sustained measurement (some 10-25 s).
        while fillers and sizes.minute_boundary:
            gap = next_due(sizes, burst_lead(sizes)) - time.time() - burst_lead(sizes)
            if gap < 30:
                break
            run_filler()
        log(f"peers: burst of {sizes.k:,}, {system.name}")
        result = guarded(system, lambda s=system: burst(s, sizes))
        if result is not None:
            out["burst"][system.name] = result
    while fillers:
        run_filler()

    out["precision"], out["idle"] = precision_and_idle(chosen, sizes)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["run"] = (
        f"This part took {time.monotonic() - began:.0f} s, ending {when}; "
        f"load average (1 min) {load_before:.2f} → {os.getloadavg()[0]:.2f}."
    )
    return out


def precision_and_idle(
    chosen: list[System], sizes: Sizes
) -> tuple[dict[str, Latency], dict[str, dict[str, Any]]]:
    """Every system idle with `idle_jobs` far-away jobs, measured over a window after a
    settle period; meanwhile each system's every-second job runs in turn (idle
    schedulers use next to no CPU, so they do not disturb it)."""
    idle_systems = [
        s for s in chosen if not (isinstance(s, Jobd) and s.max_concurrent != CONCURRENCY)
    ]
    log(f"peers: idle with {sizes.idle_jobs:,} jobs, every-second precision")
    precision: dict[str, Latency] = {}
    idle: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(max_workers=len(idle_systems)) as pool:
            futures = {
                s.name: pool.submit(stack.enter_context, s.idle(sizes.idle_jobs))
                for s in idle_systems
            }
            watched = {name: f.result() for name, f in futures.items()}
        window: dict[str, Any] = {}

        def idle_window() -> None:
            time.sleep(sizes.settle_s)
            before = {name: w.reading() for name, w in watched.items()}
            time.sleep(sizes.window_s)
            for name, w in watched.items():
                own, store = w.reading()
                pids = w.pids()
                window[name] = {
                    "cpu_min": cpu_between(before[name][0], own) / sizes.window_s * 60,
                    "store_cpu_min": cpu_between(before[name][1], store) / sizes.window_s * 60,
                    "rss": sum(_rss(pid) for pid in pids),
                    "processes": len(pids),
                }

        idler = threading.Thread(target=idle_window)
        idler.start()
        for system in chosen:
            if isinstance(system, Celery) or (
                isinstance(system, Jobd) and system.max_concurrent != CONCURRENCY
            ):
                continue  # beat's crontab has no seconds; one job needs no concurrency
            with system.every_second() as stamps:
                time.sleep(sizes.precision_s)
            delays = precision_delays(read_times(stamps))
            precision[system.name] = Latency.of(delays)
            log(f"  {system.name}: every second, p50 {ms(precision[system.name].p(50))} ms")
        idler.join()
        idle.update(window)
    for name, r in idle.items():
        log(f"  {name}: idle {r['cpu_min'] * 1000:.0f} CPU ms/min, {r['rss']:.1f} MiB")
    return precision, idle


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss(pid: int) -> float:
    try:
        return proc_rss_mib(pid)
    except OSError:
        return 0.0


# -- the report ----------------------------------------------------------------------------


def _share(ours: float | None, floor: float | None) -> str:
    if not ours or not floor or math.isnan(ours) or math.isnan(floor):
        return NONE
    return f"{ours / floor:.0%}"


def _times(ours: float, floor: float) -> str:
    if math.isnan(ours) or math.isnan(floor) or floor <= 0:
        return NONE
    return f"{ours / floor:.2f}{TIMES}"


def _cpu(result: dict[str, Any] | None, key: str = "cpu_ms") -> str:
    if not result or key not in result:
        return NONE
    return f"{result[key]:.2f}"


def section(out: dict[str, Any]) -> str:
    sizes: Sizes = out["sizes"]
    floor_p99 = out["floor_burst"].p(99)
    floor_rate = out["floor_rate"]
    burst_rows = [
        [
            FLOOR,
            ms(out["floor_burst"].p(50)),
            ms(floor_p99),
            ms(out["floor_burst"].max),
            NONE,
            sizes.k - out["floor_burst"].count,
            f"1.00{TIMES}",
        ]
    ]
    for name in out["systems"]:
        r = out["burst"].get(name)
        if r is None:
            continue
        s = r["started"]
        burst_rows.append(
            [
                name,
                ms(s.p(50)),
                ms(s.p(99)),
                ms(s.max),
                NONE if r["lost"] is None else r["lost"],
                sizes.k - s.count,
                _times(s.p(99), floor_p99),
            ]
        )
    floor_cpu = f"{out['floor_cpu_ms']:.2f}"
    rate_rows = [[FLOOR, f"{floor_rate:,.0f}", "100%", floor_cpu, NONE, NONE, NONE, NONE]]
    for name in out["systems"]:
        d, live = out["drain"].get(name), out["live"].get(name)
        rate_rows.append(
            [
                name,
                f"{d['rate']:,.0f}" if d else NONE,
                _share(d["rate"], floor_rate) if d else NONE,
                _cpu(d) + (f" (+{_cpu(d, 'store_cpu_ms')})" if d and d.get("store_cpu_ms") else ""),
                f"{live['rate']:,.0f}" if live else NONE,
                _share(live["rate"], floor_rate) if live else NONE,
                _cpu(live)
                + (
                    f" (+{_cpu(live, 'store_cpu_ms')})" if live and live.get("store_cpu_ms") else ""
                ),
                f"{live['submit_rate']:,.0f}" if live else NONE,
            ]
        )
    precision_rows = [
        [name, lat.count, ms(lat.p(50)), ms(lat.p(99)), ms(lat.max)]
        for name, lat in out["precision"].items()
    ]
    idle_rows = [
        [
            name,
            f"{r['cpu_min'] * 1000:,.1f}",
            f"{r['store_cpu_min'] * 1000:,.1f}" if r["store_cpu_min"] else NONE,
            f"{r['rss']:,.1f}",
            r["processes"],
        ]
        for name, r in out["idle"].items()
    ]
    boundary = "a minute boundary" if sizes.minute_boundary else "a whole second (quick run)"
    return "\n\n".join(
        [
            "## Peers and the spawn floor",
            "Every system runs the same job, `sh -c 'date +%s.%N >> FILE'`, and every start "
            "time is that child's own clock. The *spawn floor* is no scheduler: a bare loop "
            f"of {CONCURRENCY} threads spawning the same commands, measured in the same run; "
            f"each system gets {CONCURRENCY} slots (jobd `max_concurrent = 16`, procrastinate "
            "`concurrency = 16`, Celery 16 prefork children), and jobd is measured at its "
            f"default `max_concurrent = {DEFAULT_MAX_CONCURRENT}` too. "
            "procrastinate 3.10 runs one worker with an async task that awaits its child "
            "(its documentation's way to run many I/O-bound jobs at once), the async psycopg "
            "connector and pool, LISTEN/NOTIFY on. Celery 5.7 runs beat and one worker on "
            "the local Redis with the Optimizing guide's settings for many short tasks "
            "(`worker_prefetch_multiplier = 64`, results ignored, rate limits disabled, "
            "`-O fair`). Each peer lives in its own virtualenv (bench/.venv-procrastinate, "
            "bench/.venv-celery). " + out.get("run", ""),
            f"### Burst: {sizes.k:,} jobs due at {boundary}",
            "Milliseconds from the due instant to each child's start (the floor: from the "
            "loop's start). *lost*: fires never recorded in the store (Celery keeps no "
            "record, so only *never ran* applies). Celery's beat fires at minute boundaries "
            "only, so a quick run leaves it out.",
            table(
                ["system", "p50", "p99", "max", "lost", "never ran", "p99 ÷ floor's"], burst_rows
            ),
            f"### Sustained: {sizes.n:,} runs queued, {sizes.live_n:,} submitted live",
            "Runs per second between the first and the last child start. *drain*: the runs "
            "are queued before the worker starts (jobd: manual runs inserted into the "
            "store; procrastinate: one `batch_defer`; Celery: messages sent to the queue). "
            "*live*: one client submits them one by one while the worker runs (jobd: the "
            "operation `jobd trigger` calls, with its audit row and wake-up; procrastinate: "
            "`defer_async`; Celery: `delay()`); *submitted/s* is that client's rate. *CPU "
            "ms/run*: the scheduler's own processes (all threads; Celery's pool children, "
            "not the jobs) between the first and the last child start, per run; in "
            "brackets the store's or broker's share (the PostgreSQL backends serving its "
            "connections; the Redis server). The floor's CPU is its loop's own per spawn: "
            "what starting a child costs a Python process with no scheduling at all. A quick "
            "run measures the drain only.",
            table(
                [
                    "system",
                    "drain runs/s",
                    "of floor",
                    "drain CPU ms/run",
                    "live runs/s",
                    "of floor",
                    "live CPU ms/run",
                    "submitted/s",
                ],
                rate_rows,
            ),
            "### One job every second",
            f"{sizes.precision_s} s of a job due every second (jobd `* * * * * *`, "
            "procrastinate `* * * * * *` with croniter's seconds field); milliseconds from "
            "the due second to the child's start. Measured during the idle window below. "
            "Celery beat has no per-second cron (its intervals are not aligned to seconds).",
            table(["system", "runs", "p50", "p99", "max"], precision_rows),
            f"### Idle: {sizes.idle_jobs:,} jobs defined, none due",
            f"CPU per minute over {sizes.window_s:.0f} s, after a settle period of "
            f"{sizes.settle_s:.0f} s from ready (a fresh daemon spends more in its first "
            "minute); the store's or broker's share beside it; resident memory summed over "
            "the system's processes.",
            table(["system", "CPU ms/min", "store CPU ms/min", "RSS MiB", "processes"], idle_rows),
            "### Failover",
            "jobd's is measured under Failover (a killed leader's successor within the "
            "lease). procrastinate has no leader: every worker runs the periodic deferrer and "
            "a unique (task, periodic id, timestamp) row makes a second deferral harmless, so "
            "a dead worker costs nothing while another is up. Celery beat must run exactly "
            "once and has no failover of its own; a second beat sends every task twice.",
        ]
    )


def check(out: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The spawn-floor targets, for jobd at max_concurrent 16 on each store."""
    checks = []
    floor_p99 = out["floor_burst"].p(99)
    floor_rate = out["floor_rate"]
    for name in out["systems"]:
        if not name.startswith("jobd") or not name.endswith(f"max_concurrent {CONCURRENCY}"):
            continue
        store = name.split(", ")[1]
        b = out["burst"].get(name)
        if b:
            p99 = b["started"].p(99)
            checks.append(
                (
                    f"burst p99 ≤ 1.2{TIMES} the spawn floor's, jobd, {store}",
                    p99 <= 1.2 * floor_p99,
                    f"{ms(p99)} ms vs {ms(floor_p99)} ms ({_times(p99, floor_p99)})",
                )
            )
        d = out["drain"].get(name)
        if d:
            checks.append(
                (
                    f"sustained runs/s ≥ 90% of the spawn floor's, jobd, {store}",
                    d["rate"] >= 0.9 * floor_rate,
                    f"{d['rate']:,.0f} vs {floor_rate:,.0f} ({_share(d['rate'], floor_rate)})",
                )
            )
            if "cpu_ms" in d:
                checks.append(
                    (
                        f"daemon CPU per run ≤ 0.5 ms, jobd, {store}",
                        d["cpu_ms"] <= 0.5,
                        f"{d['cpu_ms']:.2f} ms",
                    )
                )
        lat = out["precision"].get(name)
        if lat:
            checks.append(
                (
                    f"every-second job p50 ≤ 3 ms by the child's clock, jobd, {store}",
                    lat.p(50) <= 0.003,
                    f"{ms(lat.p(50))} ms",
                )
            )
    return checks


if __name__ == "__main__":  # a look at this part alone: python -m bench.peers [--quick]
    from bench.common import postgres_available

    result = measure("--quick" in sys.argv, postgres_available())
    print(section(result))
    for what, ok, figures in check(result):
        print(f"{'ok  ' if ok else 'MISS'} {what}: {figures}")
