"""Fire latency: K jobs all due in the same second.

jobd: K jobs with the 6-field schedule `S M H * * *` of one second a little
ahead, each running `bash -c 'echo "$JOBD_EXECUTION_ID $EPOCHREALTIME" >> F'`,
`max_concurrent = K` so the spawn rate, not the concurrency cap, is measured.
due→queued is the run's `queued_at` in the store; due→started is the child's own
clock as it starts (after fork, exec and bash's start-up), and the store's
`started_at` (the claim) is shown beside it.

APScheduler: the same K cron jobs, a function that notes time.time() as it
starts; due→queued is the hand-over to the thread pool. Runs dropped by the
default misfire_grace_time (1 s) are counted as never run.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import APS_STORES, NONE, TIMES, Latency, log, ms, ratio, run_aps
from bench.jobd_side import (
    jobd_setup,
    read_stamps,
    stamp_command,
    wait_for_stamps,
    wait_until_settled,
)
from bench.report import table


def slot_schedule(due: float) -> str:
    at = time.gmtime(due)
    return f"{at.tm_sec} {at.tm_min} {at.tm_hour} * * *"


def jobd_fire(backend: str, k: int, lead: float) -> dict[str, Any]:
    for _attempt in range(3):
        result = _jobd_fire_once(backend, k, lead)
        if result is not None:
            return result
        lead *= 2
        log(f"  set-up took longer than the lead; again with {lead:.0f}s")
    raise RuntimeError("jobd set-up never finished before the due second")


def _jobd_fire_once(backend: str, k: int, lead: float) -> dict[str, Any] | None:
    settings = {"max_concurrent": k}
    with jobd_setup(backend, settings) as setup:
        starts = setup.workdir / "starts"
        due = float(math.ceil(time.time() + lead))
        command = stamp_command(starts)
        schedule = slot_schedule(due)
        setup.write_config(
            {f"j{i:05d}": {"schedule": schedule, "command": command} for i in range(k)}
        )
        apply_s = setup.apply()
        start_s = setup.start()
        if time.time() > due - 0.3:
            return None
        log(f"  jobd/{backend} K={k}: applied in {apply_s:.1f}s, ready in {start_s:.1f}s")
        seen = wait_for_stamps(starts, k, due, quiet=10)
        wait_until_settled(setup)
        rows = [r for r in setup.executions() if r["scheduled_for"] == due]
        stamps = read_stamps(starts)
        setup.stop()
    return {
        "system": f"jobd, {'SQLite' if backend == 'sqlite' else 'PostgreSQL'}",
        "k": k,
        "queued": Latency.of([r["queued_at"] - due for r in rows]),
        "claimed": Latency.of([r["started_at"] - due for r in rows if r["started_at"]]),
        "started": Latency.of([stamps[r["id"]] - due for r in rows if r["id"] in stamps]),
        "lost": k - len(rows),
        "never_ran": k - sum(1 for r in rows if r["id"] in stamps),
        "stamps_seen": seen,
    }


def aps_fire(store: str, k: int, lead: float) -> dict[str, Any]:
    for _attempt in range(3):
        with tempfile.TemporaryDirectory(prefix="aps-bench-") as workdir:
            due = float(math.ceil(time.time() + lead))
            out = run_aps({"mode": "fire", "k": k, "store": store, "due": due, "workdir": workdir})
        if out.get("error") != "lead":
            break
        lead = max(lead * 2, out["setup_s"] * 1.5 + 2)
        log(f"  set-up took longer than the lead; again with {lead:.0f}s")
    log(f"  APScheduler/{store} K={k}: set up in {out['setup_s']:.1f}s")
    return {
        "system": f"APScheduler, {APS_STORES[store]}",
        "k": k,
        "queued": Latency.of(out["queued"]),
        "claimed": None,
        "started": Latency.of(out["started"]),
        "lost": 0,
        "never_ran": k - out["ran"],
        "missed": out["missed"],
    }


def spawn_floor(k: int) -> dict[str, Any]:
    """No scheduler: one Python loop spawning the same K children, as fast as it can,
    the way jobd spawns them. Its start times bound what any process-based
    scheduler can do on this machine."""
    import os
    import subprocess

    with tempfile.TemporaryDirectory(prefix="spawn-floor-") as workdir:
        starts = Path(workdir) / "starts"
        command = stamp_command(starts)
        base = dict(os.environ)
        began = time.time()
        procs = []
        for i in range(k):
            procs.append(
                subprocess.Popen(
                    command,
                    env={**base, "JOBD_EXECUTION_ID": str(i)},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            )
        for proc in procs:
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        stamps = read_stamps(starts)
    return {
        "system": "no scheduler: a loop spawning K children",
        "k": k,
        "queued": Latency.of([]),
        "claimed": None,
        "started": Latency.of([t - began for t in stamps.values()]),
        "lost": 0,
        "never_ran": k - len(stamps),
    }


def measure(ks: list[int], postgres: bool) -> list[dict[str, Any]]:
    results = []
    for k in ks:
        # Seconds from choosing the due second to the scheduler being ready for it
        # (config applied, daemon started); a guess too short is retried, longer.
        log(f"fire latency, K={k}")
        results.append(jobd_fire("sqlite", k, 2.5 + k / 1500))
        if postgres:
            results.append(jobd_fire("postgresql", k, 3 + k / 1000))
        results.append(aps_fire("memory", k, 1.5 + k / 5000))
        results.append(aps_fire("sqlite", k, 2 + k / 600))
        if k <= 1000:
            results.append(spawn_floor(k))
    return results


def section(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        q, s, c = r["queued"], r["started"], r["claimed"]
        rows.append(
            [
                r["system"],
                f"{r['k']:,}",
                ms(q.p(50)),
                ms(q.p(99)),
                ms(c.p(50)) if c else NONE,
                ms(c.p(99)) if c else NONE,
                ms(s.p(50)),
                ms(s.p(95)),
                ms(s.p(99)),
                ms(s.max),
                r["lost"],
                r["never_ran"],
            ]
        )
    headers = [
        "system",
        "K",
        "queued p50",
        "queued p99",
        "claimed p50",
        "claimed p99",
        "started p50",
        "started p95",
        "started p99",
        "started max",
        "fires lost",
        "never ran",
    ]
    ratios = []
    for k in sorted({r["k"] for r in results}):
        by = {r["system"]: r for r in results if r["k"] == k}
        ours = by.get("jobd, SQLite")
        for name, theirs in by.items():
            if not name.startswith("APScheduler") or ours is None:
                continue
            ratios.append(
                [
                    f"jobd, SQLite vs {name}",
                    f"{k:,}",
                    ratio(theirs["queued"].p(99), ours["queued"].p(99)),
                    ratio(theirs["started"].p(50), ours["started"].p(50)),
                    ratio(theirs["started"].p(99), ours["started"].p(99)),
                ]
            )
    return "\n\n".join(
        [
            "## Fire latency: K jobs due in the same second",
            "Milliseconds after the due second. *queued*: jobd's `queued_at` in the store; "
            "APScheduler's hand-over to its thread pool. *claimed*: jobd's `started_at` "
            "(the claim, just before the spawn). *started*: the job's own clock as it "
            "begins — for jobd inside the child process (`$EPOCHREALTIME` in bash, after "
            "fork and exec), for APScheduler at the top of the job function (no process). "
            "*never ran* includes APScheduler's runs dropped by the default "
            "`misfire_grace_time` of 1 s. jobd runs with `max_concurrent = K`. The last "
            "row is no scheduler at all: one Python loop spawning the same K children "
            "(times from the loop's start), the floor for any scheduler whose jobs are "
            "processes on this machine.",
            table(headers, rows),
            f"Ratios (APScheduler ÷ jobd; above 1{TIMES} jobd is faster):",
            table(["comparison", "K", "queued p99", "started p50", "started p99"], ratios),
        ]
    )


def check(results: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The targets this part covers: (what, met, figures)."""
    checks = []
    by = {(r["system"], r["k"]): r for r in results}
    for (system, k), r in by.items():
        if system.startswith("jobd") and k >= 10_000:
            checks.append(
                (f"0 fires lost at K={k:,}, {system}", r["lost"] == 0, f"{r['lost']} lost")
            )
    ours = by.get(("jobd, SQLite", 1000))
    theirs = by.get(("APScheduler, SQLAlchemy (SQLite)", 1000))
    if ours and theirs:
        aps = theirs["started"].p(99)
        for label, key in (("recorded start", "claimed"), ("the child's own clock", "started")):
            p99 = ours[key].p(99)
            factor = aps / max(p99, 1e-9)
            checks.append(
                (
                    "due→started p99 at K=1,000 on SQLite ≥10x lower than APScheduler's "
                    f"SQLite store ({label})",
                    factor >= 10,
                    f"{ms(p99)} ms vs {ms(aps)} ms ({factor:.1f}{TIMES})",
                )
            )
    big = by.get(("jobd, SQLite", 10_000))
    if big:
        p99 = big["queued"].p(99)
        checks.append(
            ("due→queued p99 at K=10,000 under 1 s on SQLite", p99 < 1.0, f"{ms(p99)} ms")
        )
    return checks


if __name__ == "__main__":  # a quick look at one part: python -m bench.fire
    import sys

    from bench.common import postgres_available

    ks = [int(a) for a in sys.argv[1:]] or [1000]
    out = measure(ks, postgres_available())
    print(section(out))
    for what, ok, figures in check(out):
        print(f"{'ok  ' if ok else 'MISS'} {what}: {figures}")
