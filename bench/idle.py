"""Idle cost: CPU seconds and memory of a scheduler with 10,000 jobs, none of them due.

All four schedulers (jobd on SQLite and on PostgreSQL, APScheduler with its
memory and its SQLite store) are started together, each with 10,000 `@yearly`
jobs; once all are ready and a few seconds have passed, each process's CPU time
(user + system, from /proc) is read at the start and the end of the window, and
its resident set size at the end. Idle processes do not disturb each other.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    APS_STORES,
    BENCH,
    cpu_between,
    ensure_aps_venv,
    log,
    proc_rss_mib,
    proc_task_cpu,
    proc_threads,
    stop_process,
)
from bench.jobd_side import JobdSetup, jobd_setup
from bench.report import table

JOBS = 10_000
SETTLE = 5.0


@contextlib.contextmanager
def aps_idle(store: str, n: int) -> Iterator[subprocess.Popen]:
    """An APScheduler process with n jobs; the caller waits for it with aps_ready()."""
    with tempfile.TemporaryDirectory(prefix="aps-bench-") as workdir:
        cfg = {"mode": "idle", "store": store, "n": n, "workdir": workdir}
        proc = subprocess.Popen(
            [str(ensure_aps_venv()), str(BENCH / "aps_worker.py"), json.dumps(cfg)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            yield proc
        finally:
            stop_process(proc)


def aps_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    if not proc.stdout.readline():
        raise RuntimeError("APScheduler idle worker exited before it was ready")


@dataclass
class Started:
    stack: contextlib.ExitStack
    pids: dict[str, int]
    jobs: int


def start_all(postgres: bool, n: int = JOBS) -> Started:
    """Every scheduler with n far-away jobs, set up side by side, all ready."""
    log(f"idle cost: starting schedulers with {n:,} jobs each")
    jobs = {f"y{i:05d}": {"schedule": "@yearly", "command": ["true"]} for i in range(n)}
    stack = contextlib.ExitStack()
    ready: dict[str, Callable[[], int]] = {}
    for backend in ["sqlite", "postgresql"] if postgres else ["sqlite"]:
        setup = stack.enter_context(jobd_setup(backend))

        def bring_up(setup: JobdSetup = setup) -> int:
            setup.write_config(jobs)
            setup.apply()
            setup.start()
            assert setup.proc is not None
            return setup.proc.pid

        ready[f"jobd, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}"] = bring_up
    for store, name in APS_STORES.items():
        proc = stack.enter_context(aps_idle(store, n))

        def wait(proc: subprocess.Popen = proc) -> int:
            aps_ready(proc)
            return proc.pid

        ready[f"APScheduler, {name}"] = wait
    try:
        with ThreadPoolExecutor(max_workers=len(ready)) as pool:
            futures = {name: pool.submit(func) for name, func in ready.items()}
            pids = {name: future.result() for name, future in futures.items()}
    except BaseException:
        stack.close()
        raise
    return Started(stack, pids, n)


def measure_window(started: Started, window: float) -> list[dict[str, Any]]:
    """CPU over `window` seconds after SETTLE, and memory at its end; stops them all."""
    with started.stack:
        pids = started.pids
        time.sleep(SETTLE)
        before = {name: proc_task_cpu(pid) for name, pid in pids.items()}
        time.sleep(window)
        results = [
            {
                "system": name,
                "cpu": cpu_between(before[name], proc_task_cpu(pid)),
                "rss": proc_rss_mib(pid),
                "peak": _peak_mib(pid),
                "threads": proc_threads(pid),
                "window": window,
                "jobs": started.jobs,
            }
            for name, pid in pids.items()
        ]
    for r in results:
        log(f"  {r['system']}: {r['cpu'] * 1000:.1f} CPU ms, {r['rss']:.1f} MiB")
    return results


def measure(window: float, postgres: bool, n: int = JOBS) -> list[dict[str, Any]]:
    return measure_window(start_all(postgres, n), window)


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def section(results: list[dict[str, Any]]) -> str:
    window = results[0]["window"]
    jobs = results[0].get("jobs", JOBS)
    rows = [
        [
            r["system"],
            f"{r['cpu'] * 1000:.1f}",
            f"{r['cpu'] / window * 100:.3f} %",
            f"{r['rss']:.1f}",
            f"{r['peak']:.1f}",
            r["threads"],
        ]
        for r in results
    ]
    return "\n\n".join(
        [
            f"## Idle cost: {jobs:,} jobs, none due",
            f"CPU time (every thread's, from /proc/PID/task/*/schedstat) over {window:.0f} s after "
            "start-up settled, resident memory at the end of the window and its peak since "
            f"start (jobd parses and applies the {jobs:,}-job config in a short-lived child "
            "process, whose memory is not the daemon's).",
            table(["system", "CPU ms", "CPU %", "RSS MiB", "peak RSS MiB", "threads"], rows),
        ]
    )


def check(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    by = {r["system"]: r for r in results}
    aps = by.get("APScheduler, MemoryJobStore")
    checks = []
    for name, r in by.items():
        if not name.startswith("jobd"):
            continue
        if aps:
            checks.append(
                (
                    f"idle CPU no more than APScheduler's (memory store), {name}",
                    r["cpu"] <= aps["cpu"],
                    f"{r['cpu'] * 1000:.1f} ms vs {aps['cpu'] * 1000:.1f} ms",
                )
            )
        checks.append(
            (
                f"idle RSS ≤ 40 MiB with {r.get('jobs', JOBS):,} jobs, {name}",
                r["rss"] <= 40,
                f"{r['rss']:.1f} MiB",
            )
        )
    return checks
