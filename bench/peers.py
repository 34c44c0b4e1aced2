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
bench/.venv-celery), made on first use; none is ever a jobd dependency. This
module runs the part and writes its section; bench/peer_systems.py drives each
system, bench/probes.py reads their processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH,
    NONE,
    TIMES,
    Latency,
    cpu_between,
    ensure_venv,
    log,
    ms,
    proc_rss_mib,
)
from bench.peer_systems import (
    CELERY,
    CONCURRENCY,
    PROCRASTINATE,
    REDIS_URL,
    Celery,
    Jobd,
    Procrastinate,
    System,
    floor_every_second,
    floor_spawn,
)
from bench.probes import precision_delays, read_times, span_rate
from bench.report import table

DEFAULT_MAX_CONCURRENT = 4  # jobd's default (SPEC: max_concurrent = 4)
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
            return cls(300, 200, 0, 5, 1000, 3, 10, False)
        return cls(1000, 2000, 1000, 40, 10_000, 60, 60, True)


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
    part_began, load_before = time.monotonic(), os.getloadavg()[0]
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
    for system in chosen:
        system.close()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["run"] = (
        f"This part took {time.monotonic() - part_began:.0f} s, ending {when}; "
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
        with tempfile.TemporaryDirectory(prefix="spawn-floor-") as workdir:
            stamps = Path(workdir) / "tick"
            floor_every_second(sizes.precision_s, stamps)
            precision[FLOOR] = Latency.of(precision_delays(read_times(stamps)))
        log(f"  {FLOOR}: every second, p50 {ms(precision[FLOOR].p(50))} ms")
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
            "the due second to the child's start (the floor: a bare loop sleeping to each "
            "second and spawning the command). Measured during the idle window below. "
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
            floor = out["precision"].get(FLOOR)
            beside = f" (spawn floor {ms(floor.p(50))} ms)" if floor else ""
            checks.append(
                (
                    f"every-second job p50 ≤ 3 ms by the child's clock, jobd, {store}",
                    lat.p(50) <= 0.003,
                    f"{ms(lat.p(50))} ms{beside}",
                )
            )
    return checks


if __name__ == "__main__":  # a look at this part alone: python -m bench.peers [--quick]
    from bench.common import postgres_available

    result = measure("--quick" in sys.argv, postgres_available())
    print(section(result))
    for what, ok, figures in check(result):
        print(f"{'ok  ' if ok else 'MISS'} {what}: {figures}")
