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


def aps_precision(seconds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aps-bench-") as workdir:
        out = run_aps(
            {"mode": "precision", "store": "memory", "seconds": seconds, "workdir": workdir}
        )
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


def section(results: list[dict[str, Any]], seconds: int) -> str:
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
            f"{seconds} s of a `* * * * * *` job; milliseconds from the due second to the "
            "start as the job itself sees it (jobd: inside the child process; APScheduler: "
            "the job function).",
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
            p50 = r["started"].p(50)
            checks.append(
                (f"single-job due→started p50 ≤ 5 ms, {r['system']}", p50 <= 0.005, f"{ms(p50)} ms")
            )
    return checks
