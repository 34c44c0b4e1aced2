"""Sustained throughput: how many queued runs a daemon executes and records per second.

jobd: N manual runs of a job running `true` (overlap = allow) are put in the
store before the daemon starts; the daemon (max_concurrent = MAX_CONCURRENT)
then runs them all. The rate is N over the span from the first claim to the last
recorded end, both read from the store; the wall time from starting `jobd run`
to seeing every run final is shown too.

APScheduler: N date-trigger jobs due at the same instant (misfire_grace_time =
None so that none is dropped), once as an in-process function and once as a
function that runs `true` in a child process, like jobd's jobs.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.common import APS_STORES, NONE, TIMES, log, proc_cpu_seconds, run_aps
from bench.jobd_side import jobd_setup
from bench.report import table

MAX_CONCURRENT = 256


def insert_queued(url: str, job: str, n: int, delay: float = 0.0) -> None:
    """N queued manual runs, through jobd's own store code, in one transaction; with
    `delay`, not to start before that many seconds from now."""
    from datetime import timedelta

    from jobd.core.model import NewRun, Trigger
    from jobd.store import open_store

    store = open_store(url)
    try:
        now = store.now()
        run = NewRun(job=job, trigger=Trigger.MANUAL, not_before=now + timedelta(seconds=delay))
        with store.atomic():
            for _ in range(n):
                store.insert_run(run, now)
    finally:
        store.close()


def jobd_throughput(backend: str, n: int) -> dict[str, Any]:
    with jobd_setup(backend, {"max_concurrent": MAX_CONCURRENT}) as setup:
        setup.write_config({"t": {"command": ["true"], "overlap": "allow"}})
        setup.apply()
        insert_queued(setup.url, "t", n)
        began = time.perf_counter()
        setup.start()
        deadline = time.monotonic() + max(120, n / 50)
        while setup.count("status IN ('queued', 'running')") and time.monotonic() < deadline:
            time.sleep(0.05)
        wall = time.perf_counter() - began
        first, last = setup.query("SELECT min(started_at), max(finished_at) FROM executions")[0]
        succeeded = setup.count("status = 'succeeded'")
        assert setup.proc is not None
        cpu = proc_cpu_seconds(setup.proc.pid)  # the daemon's own threads, not its children
        setup.stop()
    from bench.jobd_side import _epoch

    span = (_epoch(last) or 0) - (_epoch(first) or 0)
    return {
        "system": f"jobd, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}",
        "job": "process (`true`)",
        "n": n,
        "done": succeeded,
        "rate": succeeded / span if span > 0 else 0.0,
        "wall_rate": succeeded / wall,
        "cpu_ms": cpu / max(1, succeeded) * 1000,
    }


def aps_throughput(store: str, job: str, n: int) -> dict[str, Any]:
    lead = 2 + n / 2000 if store == "memory" else 3 + n / 300
    for _attempt in range(3):
        with tempfile.TemporaryDirectory(prefix="aps-bench-") as workdir:
            due = time.time() + lead
            out = run_aps(
                {
                    "mode": "throughput",
                    "store": store,
                    "job": job,
                    "n": n,
                    "due": due,
                    "workdir": workdir,
                }
            )
        if out.get("error") != "lead":
            break
        lead *= 2
    return {
        "system": f"APScheduler, {APS_STORES[store]}",
        "job": "process (`true`)" if job == "process" else "in-process function",
        "n": n,
        "done": out["n"],
        "rate": out["n"] / out["seconds"] if out["seconds"] > 0 else 0.0,
        "wall_rate": out["n"] / out["from_due"] if out["from_due"] > 0 else 0.0,
    }


def measure(n: int, postgres: bool) -> list[dict[str, Any]]:
    log(f"sustained throughput, N={n}")
    results = [jobd_throughput("sqlite", n)]
    if postgres:
        results.append(jobd_throughput("postgresql", n))
    results.append(aps_throughput("memory", "process", n))
    results.append(aps_throughput("memory", "function", n))
    results.append(aps_throughput("sqlite", "function", n))
    for r in results:
        log(f"  {r['system']}, {r['job']}: {r['rate']:.0f} runs/s")
    return results


def section(results: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["system"],
            r["job"],
            f"{r['n']:,}",
            f"{r['done']:,}",
            f"{r['rate']:,.0f}",
            f"{r['wall_rate']:,.0f}",
            f"{r['cpu_ms']:.2f}" if "cpu_ms" in r else NONE,
        ]
        for r in results
    ]
    ours = results[0]["rate"]
    ratios = [
        f"jobd (SQLite) ÷ {r['system']}, {r['job']}: {ours / r['rate']:.2f}{TIMES}"
        for r in results
        if r["system"].startswith("APScheduler") and r["rate"]
    ]
    return "\n\n".join(
        [
            "## Sustained throughput",
            f"Runs per second, executed and recorded. jobd: N queued manual runs of a job "
            f'running `true` (`overlap = "allow"`, `max_concurrent = {MAX_CONCURRENT}`), '
            "inserted before the daemon starts; *rate* is N over first claim → last recorded "
            "end (from the store), *wall* counts from starting `jobd run` until every run "
            "is final. APScheduler: N jobs due at the same instant, `misfire_grace_time = "
            "None`; *rate* is first start → last end, *wall* counts from the due instant. "
            "*CPU ms/run*: the jobd daemon's own CPU time (all its threads, not the jobs) "
            "per run, which depends far less on other load on the machine than the rates.",
            table(
                ["system", "job", "N", "done", "rate (runs/s)", "wall (runs/s)", "CPU ms/run"],
                rows,
            ),
            "; ".join(ratios) + ".",
        ]
    )


def check(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    goals = {"jobd, SQLite": 1000, "jobd, PostgreSQL": 500}
    return [
        (
            f"sustained ≥ {goals[r['system']]:,} runs/s, {r['system']}",
            r["rate"] >= goals[r["system"]],
            f"{r['rate']:,.0f} runs/s",
        )
        for r in results
        if r["system"] in goals
    ]
