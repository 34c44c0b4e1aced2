"""Single-job precision: one job every second; how late does each run start?

jobd: `* * * * * *` running the stamp command (the child's own clock, as in the
fire-latency part). APScheduler: a `second="*"` cron job with a function that
notes its start, MemoryJobStore.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.common import NONE, Latency, log, ms, ratio, run_aps
from bench.jobd_side import jobd_setup, read_stamps, stamp_command, wait_until_settled
from bench.report import table


def jobd_precision(backend: str, seconds: int) -> dict[str, Any]:
    with jobd_setup(backend) as setup:
        starts = setup.workdir / "starts"
        setup.write_config({"tick": {"schedule": "* * * * * *", "command": stamp_command(starts)}})
        setup.apply()
        setup.start()
        time.sleep(seconds)
        setup.stop()  # lets the last run finish and be recorded
        wait_until_settled(setup, timeout=10)
        rows = [r for r in setup.executions() if r["scheduled_for"] is not None]
        stamps = read_stamps(starts)
    rows = rows[1:]  # the first slot may fall while the daemon is still starting
    return {
        "system": f"jobd, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}",
        "queued": Latency.of([r["queued_at"] - r["scheduled_for"] for r in rows]),
        "claimed": Latency.of(
            [r["started_at"] - r["scheduled_for"] for r in rows if r["started_at"]]
        ),
        "started": Latency.of(
            [stamps[r["id"]] - r["scheduled_for"] for r in rows if r["id"] in stamps]
        ),
        "runs": len(rows),
    }


def aps_precision(seconds: int, offset: float = 0.5) -> dict[str, Any]:
    """APScheduler's slots fall `offset` into each second, so that it can run beside
    a jobd being measured (whose cron slots are whole seconds) without either
    delaying the other."""
    with tempfile.TemporaryDirectory(prefix="aps-bench-") as workdir:
        cfg = {"mode": "precision", "store": "memory", "seconds": seconds, "offset": offset}
        out = run_aps({**cfg, "workdir": workdir})
    return {
        "system": "APScheduler, MemoryJobStore",
        "queued": None,
        "claimed": None,
        "started": Latency.of(out["started"]),
        "runs": len(out["started"]),
    }


def measure(seconds: int, postgres: bool) -> list[dict[str, Any]]:
    log(f"single-job precision, {seconds}s each")
    results = [jobd_precision("sqlite", seconds)]
    if postgres:
        results.append(jobd_precision("postgresql", seconds))
    results.append(aps_precision(seconds))
    return results


def with_idle(
    seconds: int, window: float, postgres: bool, alongside: bool, jobs: int = 10_000
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Precision and idle cost in one stretch of wall time: APScheduler's precision
    (half a second off jobd's slots, a function call in its own process) runs
    during the idle window, beside the idle schedulers. jobd, whose targets these
    are, runs alone afterwards on each store, so that no other scheduler's
    start, stop or store traffic is in its figures (one full run measured 11 ms
    on PostgreSQL beside them and 6 ms alone). A quick run (`alongside`)
    measures jobd during the window too, to save time."""
    from concurrent.futures import ThreadPoolExecutor

    from bench import idle

    log(f"single-job precision ({seconds}s) with the idle cost ({window:.0f}s window)")
    backends = ["sqlite", "postgresql"] if postgres else ["sqlite"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        started = idle.start_all(postgres, jobs)  # every idle scheduler ready
        aps = pool.submit(aps_precision, seconds)
        beside = [pool.submit(jobd_precision, b, seconds) for b in backends if alongside]
        idle_results = idle.measure_window(started, window)
        results = [f.result() for f in beside]
        aps_result = aps.result()
    if not alongside:
        results = [jobd_precision(b, seconds) for b in backends]
    return [*results, aps_result], idle_results


def section(results: list[dict[str, Any]], seconds: int, side_by_side: bool = False) -> str:
    rows = []
    for r in results:
        q, c, s = r["queued"], r["claimed"], r["started"]
        rows.append(
            [
                r["system"],
                r["runs"],
                ms(q.p(50)) if q else NONE,
                ms(c.p(50)) if c else NONE,
                ms(s.p(50)),
                ms(s.p(99)),
                ms(s.max),
            ]
        )
    ours = results[0]["started"]
    theirs = results[-1]["started"]
    return "\n\n".join(
        [
            "## Single-job precision: one job every second",
            f"{seconds} s of a `* * * * * *` job; milliseconds from the due second. "
            "*queued* and *claimed* are jobd's `queued_at` and `started_at` in the store "
            "(SQLite keeps milliseconds); *started* is the start as the job itself sees it "
            "(jobd: inside the child process, after fork, exec and bash's start-up; "
            "APScheduler: the job function, whose slots are set half a second off jobd's "
            "so the two never compete for the CPU). APScheduler is measured during the "
            "idle-cost window; "
            + (
                "in this quick run jobd too, on both stores at the same instants."
                if side_by_side
                else "jobd alone afterwards, on each store in turn."
            ),
            table(
                [
                    "system",
                    "runs",
                    "queued p50",
                    "claimed p50",
                    "started p50",
                    "started p99",
                    "max",
                ],
                rows,
            ),
            f"APScheduler ÷ jobd (SQLite), started p50: {ratio(theirs.p(50), ours.p(50))}; "
            f"p99: {ratio(theirs.p(99), ours.p(99))}.",
        ]
    )


def check(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    checks = []
    for r in results:
        if r["system"].startswith("jobd"):
            for label, key in (("recorded start", "claimed"), ("the child's own clock", "started")):
                p50 = r[key].p(50)
                checks.append(
                    (
                        f"single-job due→started p50 ≤ 5 ms, {r['system']} ({label})",
                        p50 <= 0.005,
                        f"{ms(p50)} ms",
                    )
                )
    return checks
