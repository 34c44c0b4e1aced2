"""100,000 jobs: idle cost, firing 1,000 a second, the commands, memory over the run.

One daemon (default settings but for the store) over a store holding N jobs, all
daily: `burst` of them fall due in each second of a window of `seconds` seconds
(one job per second-of-day slot `S M H * * *`, six-field cron), the others at
times hours away. In order, on each store:

1. the jobs are written to the store as store-only jobs (`jobd schedule`'s rows,
   built by the store's own row builder and inserted in bulk; see `build_store`),
   the window's last, once the others' time says when it can open;
2. `jobd run` starts; idle: CPU (every thread's, from schedstat) and RSS from
   shortly after start-up until the window, with nothing due;
3. the window: `burst` jobs due each second; due → queued from the store's
   `scheduled_for` and `queued_at`; the daemon's CPU, and its RSS sampled every
   half second;
4. a few seconds after it, the runs still queued are cancelled in the store
   (what is measured is the scheduling, not the machine's spawn rate), and
   `jobd list`, `jobd status` and a SIGHUP reload are timed over the jobs and
   their history.

Why store-only jobs and not a config file: a 100,000-job TOML file is 6 MB that
Python's tomllib alone reads in seconds, and every `jobd` command and every
reload would parse it; at that size jobs are made by programs (`jobd schedule`,
the HTTP API, the Python client), as pg_cron's are, and the config file holds
the settings. The reload then measures what it costs with 100,000 jobs in the
store. `jobd schedule` once per job (a process, a transaction and an audit row
each) is timed on a sample and its total extrapolated, instead of spending
minutes on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import resource
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    NONE,
    Latency,
    cpu_between,
    jobd_argv,
    log,
    ms,
    proc_rss_mib,
    proc_task_cpu,
)
from bench.jobd_side import JobdSetup, jobd_setup
from bench.report import table

CLI_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Size:
    jobs: int
    burst: int  # jobs due in each second of the window
    seconds: int  # the window's length
    idle: float  # the least idle window, seconds
    schedule_sample: int  # `jobd schedule` calls timed to extrapolate
    start: float = 15.0  # seconds allowed for the daemon's start-up
    settle: float = 5.0  # seconds after start-up before idle is measured
    after: float = 10.0  # seconds the window's fires are given to be queued after it


FULL = Size(jobs=100_000, burst=1000, seconds=60, idle=15.0, schedule_sample=10)
QUICK = Size(10_000, 200, 4, idle=2.0, schedule_sample=2, start=5.0, settle=1.0, after=2.0)


def cron_at(moment: datetime) -> str:
    """A daily six-field cron expression (seconds first) for this second of the day."""
    return f"{moment.second} {moment.minute} {moment.hour} * * *"


def window_jobs(size: Size, window: datetime) -> list[tuple[str, str]]:
    """(name, schedule) of BURST jobs for each second of the window."""
    jobs: list[tuple[str, str]] = []
    for second in range(size.seconds):
        at = cron_at(window + timedelta(seconds=second))
        jobs += [(f"w{second:02d}_{i:04d}", at) for i in range(size.burst)]
    return jobs


def other_jobs(size: Size, now: datetime) -> list[tuple[str, str]]:
    """(name, schedule) of the other jobs: daily, at 1,000 distinct times over
    20 hours from two hours on, so none falls due during the benchmark."""
    jobs = []
    # The `jobd schedule` sample made its jobs already: N in all.
    for i in range(size.jobs - size.burst * size.seconds - size.schedule_sample):
        slot = i % 1000
        at = now + timedelta(hours=2, minutes=slot * 1.2, seconds=slot % 60)
        jobs.append((f"d{i:06d}", cron_at(at)))
    return jobs


def build_store(setup: JobdSetup, jobs: list[tuple[str, str]]) -> float:
    """Write the jobs as store-only jobs in one transaction; seconds taken.

    Each row is what `jobd schedule NAME CRON -- true` writes (the spec parsed as
    the command parses it, the store's own row builder), without the audit row
    each call adds. Specs are parsed once per distinct schedule: only the name
    differs between jobs of one slot."""
    from jobd.core.config.parse import parse_job
    from jobd.core.model import Source
    from jobd.store import open_store
    from jobd.store.queries import NEW_JOB_COLUMNS

    started = time.perf_counter()
    store = open_store(setup.url)
    try:
        now = store.now()
        parsed: dict[str, Any] = {}
        first_fires: dict[Any, Any] = {}
        rows = []
        for name, cron in jobs:
            spec = parsed.get(cron)
            if spec is None:
                spec = parsed[cron] = parse_job(
                    name, {"schedule": cron, "command": ["true"]}, "bench", {}, source=Source.CLI
                )
            rows.append(store._job_row(dataclasses.replace(spec, name=name), now, first_fires))
        # The bare driver's bulk insert: peewee's SQL generation would take longer
        # than everything else here together. The rows are the store's JOB_INSERT
        # rows; the columns it leaves to their defaults keep them.
        names = ", ".join(f'"{c}"' for c in NEW_JOB_COLUMNS)
        with store.atomic():
            cursor = store.db.cursor()
            if setup.backend == "postgresql":
                from psycopg2.extras import execute_values

                execute_values(
                    cursor, f"INSERT INTO jobs ({names}) VALUES %s", rows, page_size=1000
                )
            else:
                marks = ", ".join("?" for _ in NEW_JOB_COLUMNS)
                cursor.executemany(f"INSERT INTO jobs ({names}) VALUES ({marks})", rows)
    finally:
        store.close()
    return time.perf_counter() - started


def time_schedule_calls(setup: JobdSetup, n: int) -> float:
    """Seconds per `jobd schedule NAME CRON -- true` (a process each), on a sample."""
    started = time.perf_counter()
    for i in range(n):
        subprocess.run(
            [*jobd_argv(), "schedule", f"sample{i:03d}", "0 4 1 1 *", "--", "true"],
            env=setup.env(),
            capture_output=True,
            check=True,
            timeout=CLI_TIMEOUT,
        )
    return (time.perf_counter() - started) / max(1, n)


def time_command(setup: JobdSetup, *args: str) -> tuple[float, float]:
    """Seconds for one `jobd ARGS` to finish, its output read through a pipe, and the
    CPU seconds it used (which depend less on other work on the machine)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [*jobd_argv(), *args], env=setup.env(), capture_output=True, timeout=CLI_TIMEOUT
    )
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"jobd {' '.join(args)} failed: {result.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return took, cpu


def time_reload(setup: JobdSetup) -> float:
    """Seconds from SIGHUP to the daemon's "config reloaded" line."""
    assert setup.proc is not None
    before = setup.log_path.read_text(errors="replace").count("config reloaded")
    started = time.perf_counter()
    setup.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + CLI_TIMEOUT
    while time.monotonic() < deadline:
        if setup.log_path.read_text(errors="replace").count("config reloaded") > before:
            return time.perf_counter() - started
        time.sleep(0.01)
    raise TimeoutError("no 'config reloaded' line after SIGHUP")


class RssSampler:
    """The daemon's RSS every `every` seconds, in a thread, as (monotonic, MiB)."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), proc_rss_mib(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.every)

    def between(self, start: float, end: float) -> list[float]:
        return [mib for at, mib in self.samples if start <= at <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def cancel_queued(setup: JobdSetup) -> None:
    """Cancel the runs still queued, in the store, and wait for the running ones."""
    sql = "UPDATE executions SET status = 'cancelled' WHERE status = 'queued'"
    if setup.backend == "sqlite":
        path = setup.url[len("sqlite:///") :]
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
            db.execute(sql)
    else:
        import psycopg2

        with contextlib.closing(psycopg2.connect(setup.url)) as db, db, db.cursor() as cur:
            cur.execute(sql)
    deadline = time.monotonic() + 60
    while setup.count("status = 'running'") and time.monotonic() < deadline:
        time.sleep(0.1)


def sleep_until(moment: datetime) -> None:
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        time.sleep(min(left, 0.5))


def measure_store(backend: str, size: Size) -> dict[str, Any]:
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    log(f"100,000 jobs: {name}, {size.jobs:,} jobs, {size.burst:,} due a second")
    with jobd_setup(backend) as setup:
        setup.write_config({})
        setup.apply()  # the schema, and the (empty) config applied
        per_schedule = time_schedule_calls(setup, size.schedule_sample)
        # The window opens after start-up, a settling pause and the idle window: its jobs are
        # written last, when how long the others took tells how long they take.
        others = other_jobs(size, datetime.now(UTC))
        built = build_store(setup, others)
        count = size.burst * size.seconds
        allowance = built / max(1, len(others)) * count * 1.5 + size.start + size.settle + size.idle
        window = (datetime.now(UTC) + timedelta(seconds=allowance)).replace(microsecond=0)
        built += build_store(setup, window_jobs(size, window))
        log(f"  {size.jobs:,} jobs built in {built:.1f}s; window at {window:%H:%M:%S}")
        setup.start()
        assert setup.proc is not None
        pid = setup.proc.pid
        rss = RssSampler(pid)
        try:
            time.sleep(size.settle)
            idle_from = time.monotonic()
            cpu_before = proc_task_cpu(pid)
            sleep_until(window - timedelta(seconds=1))
            idle_cpu = cpu_between(cpu_before, proc_task_cpu(pid))
            idle_to = time.monotonic()
            idle_rss = proc_rss_mib(pid)
            window_end = window + timedelta(seconds=size.seconds)
            window_from = time.monotonic() + 1
            cpu_before = proc_task_cpu(pid)
            sleep_until(window_end + timedelta(seconds=size.after))
            window_cpu = cpu_between(cpu_before, proc_task_cpu(pid))
            window_to = window_from + size.seconds
            rows = setup.query(
                "SELECT scheduled_for, queued_at, started_at FROM executions "
                "WHERE trigger = 'schedule'"
            )
            # What the machine has not spawned yet is not what is measured: the
            # runs still queued are cancelled, and the commands and the reload are
            # timed over a store of 100,000 jobs with their history.
            cancel_queued(setup)
            timings = {
                "list": time_command(setup, "list"),
                "status": time_command(setup, "status"),
                "reload (SIGHUP)": (time_reload(setup), math.nan),
            }
            log("  " + ", ".join(f"{k} {v[0]:.2f}s" for k, v in timings.items()))
            end_rss = proc_rss_mib(pid)
        finally:
            rss.stop()
        setup.stop()
    from bench.jobd_side import _epoch

    start, end = window.timestamp(), window_end.timestamp()
    delays = [
        _epoch(q) - _epoch(s)  # type: ignore[operator]
        for s, q, _started in rows
        if start <= _epoch(s) < end  # type: ignore[operator]
    ]
    # Runs the daemon started between the window's opening and the cancel.
    started = sum(1 for _s, _q, at in rows if at is not None and _epoch(at) >= start)
    during = rss.between(window_from, window_to)
    quarter = len(during) // 4
    result = {
        "system": f"jobd, {name}",
        "size": size,
        "built": built,
        "schedule_call": per_schedule,
        "timings": timings,
        "idle_s": idle_to - idle_from,
        "idle_cpu": idle_cpu,
        "idle_rss": idle_rss,
        "expected": size.burst * size.seconds,
        "fired": len(delays),
        "started": started,
        "window_cpu": window_cpu,
        "queued": Latency.of(delays),
        "rss_peak": max(during, default=float("nan")),
        # The first quarter warms up (allocator arenas, caches); a leak shows as
        # growth from the second quarter to the last.
        "rss_early": statistics.median(during[quarter : 2 * quarter]) if quarter else math.nan,
        "rss_late": statistics.median(during[3 * quarter :]) if quarter else math.nan,
        "rss_after": end_rss,
    }
    log(
        f"  idle {idle_cpu * 1000:.1f} CPU ms over {result['idle_s']:.0f}s, {idle_rss:.1f} MiB; "
        f"fired {len(delays):,}/{result['expected']:,}, due → queued p99 "
        f"{ms(result['queued'].p(99))} ms; RSS {result['rss_early']:.1f} → "
        f"{result['rss_late']:.1f} MiB"
    )
    return result


def measure(quick: bool, postgres: bool) -> list[dict[str, Any]]:
    size = QUICK if quick else FULL
    backends = ["sqlite", "postgresql"] if postgres else ["sqlite"]
    return [measure_store(backend, size) for backend in backends]


def seconds(timing: tuple[float, float]) -> str:
    return f"{timing[0]:.2f} ({timing[1]:.2f})"


def idle_cell(r: dict[str, Any]) -> str:
    cpu = per_minute(r["idle_cpu"], r["idle_s"])
    return NONE if math.isnan(cpu) else f"{cpu * 1000:.0f} (over {r['idle_s']:.0f} s)"


def per_minute(cpu: float, seconds: float) -> float:
    return cpu / seconds * 60 if seconds >= 1 else math.nan  # too short a window: none


def section(results: list[dict[str, Any]]) -> str:
    size: Size = results[0]["size"]
    rows = []
    for r in results:
        q: Latency = r["queued"]
        t = r["timings"]
        rows.append(
            [
                r["system"],
                idle_cell(r),
                f"{r['idle_rss']:.1f}",
                f"{r['fired']:,} / {r['expected']:,}",
                ms(q.p(50)),
                ms(q.p(99)),
                ms(q.max),
                f"{r['window_cpu']:.1f} ({r['window_cpu'] / max(1, r['fired']) * 1000:.2f})",
                f"{r['started']:,}",
                f"{r['rss_early']:.1f} → {r['rss_late']:.1f} (peak {r['rss_peak']:.1f})",
                *(seconds(t[key]) for key in ("list", "status")),
                f"{t['reload (SIGHUP)'][0]:.2f}",
                f"{r['idle_rss']:.1f} → {r['rss_after']:.1f}",
            ]
        )
    builds = "; ".join(
        f"{r['system']}: {r['built']:.1f} s in bulk, against about "
        f"{r['schedule_call'] * size.jobs / 60:,.0f} min for one `jobd schedule` per job "
        f"({r['schedule_call'] * 1000:,.0f} ms each, timed on {size.schedule_sample})"
        for r in results
    )
    return "\n\n".join(
        [
            f"## {size.jobs:,} jobs",
            f"One daemon at default settings over a store of {size.jobs:,} daily store-only "
            f"jobs: {size.burst:,} fall due in each second of a {size.seconds} s window "
            "(one six-field `S M H * * *` schedule per second), the rest hours away. "
            "*Idle*: CPU per minute (every thread's) and RSS with none due, from "
            f"{size.settle:g} s after start-up until the window. *Due → queued*: the store's "
            "`queued_at - scheduled_for` of every fire of the window; the daemon's CPU "
            "(every thread's, not its children's) from the window's opening until "
            f"{size.after:g} s after it, and the runs it started meanwhile. *RSS over the window*: "
            "medians of its second and last quarters, sampled every 0.5 s (the first "
            "quarter warms up), and its peak. The window's "
            f"runs (`true`) start as fast as the machine spawns them; {size.after:g} s after the "
            "window those still queued are cancelled in the store (what is measured is the "
            "scheduling), and then the commands are timed from the shell (output through "
            "a pipe; wall time, and the command's own CPU time, which other work on the "
            "machine disturbs less) over the jobs and their history, and the reload from "
            "SIGHUP to the daemon's `config reloaded` line.",
            table(
                [
                    "system",
                    "idle CPU ms/min (over)",
                    "idle RSS MiB",
                    "fired",
                    "due → queued p50 ms",
                    "p99",
                    "max",
                    "daemon CPU s over the window (ms per fire)",
                    "runs started",
                    "RSS over the window MiB",
                    "`list` s (CPU s)",
                    "`status` s (CPU s)",
                    "reload s",
                    "RSS idle → after the commands and reload MiB",
                ],
                rows,
            ),
            f"Building the store: {builds}. The window is {size.seconds} s rather than the "
            "10 minutes the goal names, so that the whole benchmark fits its 20 minutes; "
            "memory growth is judged between the window's second and last quarters, under "
            "steady load, and from idle to after the commands and the reload.",
        ]
    )


def check(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    checks = []
    for r in results:
        name = r["system"]
        jobs = f"{r['size'].jobs:,} jobs"
        cpu = per_minute(r["idle_cpu"], r["idle_s"])
        checks.append(
            (
                f"idle CPU ≈ 0 (≤ 100 ms/min) with {jobs}, {name}",
                cpu <= 0.1,
                f"{cpu * 1000:.0f} ms/min",
            )
        )
        checks.append(
            (
                f"idle RSS ≤ 100 MiB with {jobs}, {name}",
                r["idle_rss"] <= 100,
                f"{r['idle_rss']:.1f} MiB",
            )
        )
        p99 = r["queued"].p(99)
        ok = r["fired"] == r["expected"] and p99 <= 0.1
        checks.append(
            (
                f"due → queued p99 ≤ 100 ms at {r['size'].burst:,} due/s, {name}",
                ok,
                f"{ms(p99)} ms, {r['fired']:,} of {r['expected']:,} fired",
            )
        )
        slowest = max(wall for wall, _cpu in r["timings"].values())
        checks.append(
            (
                f"`list`, `status`, reload each < 2 s with {jobs}, {name}",
                slowest < 2,
                ", ".join(f"{k} {v[0]:.2f} s" for k, v in r["timings"].items()),
            )
        )
        growth = r["rss_late"] - r["rss_early"]
        checks.append(
            (
                f"memory does not grow under load (last quarter ≤ second + 2 MiB), {name}",
                growth <= 2,
                f"{growth:+.1f} MiB",
            )
        )
    return checks
