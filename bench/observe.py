"""Observability costs: a metrics scrape of a large store, and failure → webhook latency.

    python -m bench --only observe             # part of bench/run
    .venv/bin/python -m bench.observe [--quick] [--jobs N] [--runs N] [--failures N]

1. Scrape: a store with `--jobs` jobs and `--runs` finished runs spread over
   them (one in seven failed), on SQLite and PostgreSQL; the store's side of a
   scrape (jobd.observe.metrics.render() without a daemon in the process, as
   `jobd metrics` and a leader's /metrics read it) timed SCRAPES times: p50 and
   p99 wall time, p50 CPU time of this process, and the statements it sent,
   counted on the connection. Targets: two statements, p50 ≤ 50 ms.
2. Notify: a real daemon per store and a local HTTP receiver; `--failures`
   manual runs of a job that fails, one after another; latency from the run's
   recorded end to the webhook's arrival (target p50 ≤ 50 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

from bench.common import (
    NONE,
    jobd_argv,
    log,
    percentile,
    postgres_available,
    postgres_schema,
)
from bench.report import table
from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Trigger
from jobd.store import open_store
from jobd.store.reader import Reader
from jobd.system.hooks import HOST

SCRAPES = 30
BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# Finished runs, spread round-robin over the jobs, one in seven failed; the
# store's trigger records each job's latest success as the rows go in.
RUNS_SQL = {
    "sqlite": (
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO executions (job, trigger, scheduled_for, queued_at, not_before, "
        "started_at, finished_at, duration_s, status, attempt, cancel_requested, log, log_bytes) "
        "SELECT 'j' || (i % ?), 'schedule', datetime('2026-01-01', '+' || i || ' seconds'), "
        "'2026-01-01', '2026-01-01', '2026-01-01', "
        "datetime('2026-01-01', '+' || (i + 1) || ' seconds'), 1.0, "
        "CASE WHEN i % 7 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 0, '', 0 FROM n"
    ),
    "postgresql": (
        "INSERT INTO executions (job, trigger, scheduled_for, queued_at, not_before, "
        "started_at, finished_at, duration_s, status, attempt, cancel_requested, log, log_bytes) "
        "SELECT 'j' || (i %% %s), 'schedule', timestamp '2026-01-01' + i * interval '1 second', "
        "timestamp '2026-01-01', timestamp '2026-01-01', timestamp '2026-01-01', "
        "timestamp '2026-01-01' + (i + 1) * interval '1 second', 1.0, "
        "CASE WHEN i %% 7 = 0 THEN 'failed' ELSE 'succeeded' END, 1, false, '', 0 "
        "FROM generate_series(0, %s) i"
    ),
}


@contextlib.contextmanager
def store_url(backend: str, directory: Path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory}/{name}.db"
    else:
        with postgres_schema("jobd_bench_observe") as url:
            yield url


def fill(url: str, backend: str, jobs: int, runs: int) -> None:
    store = open_store(url, hooks=HOST)
    text = "".join(
        f'[jobs.j{i}]\ncommand = ["true"]\nschedule = "{i % 60} * * * *"\n' for i in range(jobs)
    )
    log(f"scrape, {BACKENDS[backend]}: applying {jobs:,} jobs")
    store.apply_config(parse_config(text), store.now())
    store.close()
    log(f"scrape, {BACKENDS[backend]}: inserting {runs:,} runs")
    conn = connect(url, backend)
    cursor = conn.cursor()
    cursor.execute(RUNS_SQL[backend], (runs - 1, jobs) if backend == "sqlite" else (jobs, runs - 1))
    if backend == "postgresql":
        cursor.execute("ANALYZE")  # as autovacuum would after such an insert
    else:
        conn.commit()
    conn.close()


def connect(url: str, backend: str) -> Any:
    if backend == "sqlite":
        return sqlite3.connect(url.removeprefix("sqlite:///"))
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def counting(conn: Any, backend: str, statements: list[str]) -> Any:
    """Count the statements sent on `conn`: SQLite's trace hook, or a cursor class."""
    if backend == "sqlite":
        conn.set_trace_callback(statements.append)
        return conn
    import psycopg2.extensions

    class Counting(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            statements.append(query)
            return super().execute(query, vars)

    conn.cursor_factory = Counting
    return conn


def scrape_cost(backend: str, directory: Path, jobs: int, runs: int) -> dict[str, Any]:
    import jobd.observe.metrics

    jobd.observe.metrics._instance = None  # no daemon in this process: the store's gauges
    with store_url(backend, directory, "scrape") as url:
        fill(url, backend, jobs, runs)
        statements: list[str] = []
        conn = counting(connect(url, backend), backend, statements)
        reader = Reader(conn, backend)
        jobd.observe.metrics.render(reader)  # the first read warms the caches
        took, cpu, fresh, sent = [], [], [], set()
        for _ in range(SCRAPES):
            statements.clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            body = jobd.observe.metrics.render(reader)
            took.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            sent.add(len(statements))
        for _ in range(SCRAPES // 3):  # as if every job's row had changed since the last
            jobd.observe.metrics._written = {}
            start = time.perf_counter()
            jobd.observe.metrics.render(reader)
            fresh.append((time.perf_counter() - start) * 1000)
        conn.close()
    return {
        "backend": backend,
        "jobs": jobs,
        "runs": runs,
        "statements": max(sent),
        "p50": percentile(took, 50),
        "p99": percentile(took, 99),
        "cpu_p50": percentile(cpu, 50),
        "fresh_p50": percentile(fresh, 50),
        "kib": len(body) / 1024,
    }


class _Receiver(http.server.BaseHTTPRequestHandler):
    arrivals: list[tuple[int, float]] = []

    def do_POST(self) -> None:
        at = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.arrivals.append((json.loads(body)["run"]["id"], at))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def notify_latency(backend: str, directory: Path, failures: int) -> dict[str, Any]:
    _Receiver.arrivals = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    config = directory / f"notify-{backend}.toml"
    config.write_text(
        f'[jobd]\nnotify = ["ops"]\n[notify.ops]\ntype = "webhook"\n'
        f'url = "http://127.0.0.1:{httpd.server_address[1]}/hook"\n'
        '[jobs.broken]\nshell = "exit 1"\n'
    )
    log(f"notify, {BACKENDS[backend]}: {failures} failures")
    with store_url(backend, directory, "notify") as url:
        daemon = subprocess.Popen(
            [*jobd_argv(), "--config", str(config), "--store", url, "run"],
            stderr=subprocess.DEVNULL,
        )
        try:
            latencies = failures_told(url, failures)
        finally:
            daemon.terminate()
            daemon.wait(30)
            httpd.shutdown()
    return {
        "backend": backend,
        "failures": failures,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def failures_told(url: str, failures: int) -> list[float]:
    """Milliseconds from each failed run's recorded end to its webhook's arrival."""
    deadline = time.monotonic() + 60
    store = None
    while store is None or store.job("broken") is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not apply its config within 60 s")
        with contextlib.suppress(Exception):
            store = store or open_store(url, hooks=HOST)
        time.sleep(0.05)
    latencies = []
    for _ in range(failures):
        seen = len(_Receiver.arrivals)
        run_id = store.enqueue(
            NewRun("broken", Trigger.MANUAL, not_before=store.now(), triggered_by="bench")
        )
        deadline = time.monotonic() + 60
        while len(_Receiver.arrivals) == seen:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no webhook for run {run_id} within 60 s")
            time.sleep(0.001)
        got, at = _Receiver.arrivals[-1]
        run = store.execution(run_id)
        assert got == run_id and run is not None and run.finished_at is not None
        latencies.append((at - run.finished_at.astimezone(UTC).timestamp()) * 1000)
    store.close()
    return latencies


def measure(quick: bool, postgres: bool, **sizes: int) -> dict[str, Any]:
    jobs = sizes.get("jobs") or (1000 if quick else 10_000)
    runs = sizes.get("runs") or (100_000 if quick else 1_000_000)
    failures = sizes.get("failures") or (10 if quick else 50)
    backends = ["sqlite", "postgresql"] if postgres else ["sqlite"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="jobd-bench-observe-") as tmp:
        scrapes = [scrape_cost(b, Path(tmp), jobs, runs) for b in backends]
        notifies = [notify_latency(b, Path(tmp), failures) for b in backends]
    return {
        "scrapes": scrapes,
        "notifies": notifies,
        "load": (load_before, os.getloadavg()[0]),
    }


def section(results: dict[str, Any]) -> str:
    scrape_rows = [
        [
            BACKENDS[r["backend"]],
            f"{r['jobs']:,}",
            f"{r['runs']:,}",
            r["statements"],
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['cpu_p50']:.1f}",
            f"{r['fresh_p50']:.1f}",
            f"{r['kib']:,.0f}",
        ]
        for r in results["scrapes"]
    ]
    notify_rows = [
        [BACKENDS[r["backend"]], r["failures"], f"{r['p50']:.1f}", f"{r['p99']:.1f}"]
        for r in results["notifies"]
    ] or [[NONE, NONE, NONE, NONE]]
    before, after = results["load"]
    return "\n\n".join(
        [
            "## Metrics scrape and failure notifications",
            "*Scrape*: the store's side of one Prometheus scrape (what `jobd metrics` "
            "prints and a leading daemon adds to its own metrics on /metrics), read "
            f"{SCRAPES} times over one connection after a first read, from a store of "
            "N jobs and M finished runs (one in seven failed). *Statements* are counted "
            "on the connection; *CPU* is this process's CPU time (the driver and the "
            "text), which other load on the machine changes far less than the wall "
            "time. Each job's last success comes from `job_successes`, which a trigger "
            "keeps, so the history's size does not enter. Between these scrapes no job "
            "changed, so each job's lines are reused; *all new* is the p50 of scrapes "
            "that format every line again, as after every job's row changed.",
            table(
                [
                    "store",
                    "jobs",
                    "runs",
                    "statements",
                    "p50 (ms)",
                    "p99 (ms)",
                    "CPU p50 (ms)",
                    "all new p50 (ms)",
                    "text (KiB)",
                ],
                scrape_rows,
            ),
            "*Notify*: a real daemon, a job that fails, a webhook channel to a local "
            "HTTP receiver; manual runs one after another, each measured from the "
            "run's recorded end (`finished_at`) to the webhook's arrival.",
            table(["store", "failures", "p50 (ms)", "p99 (ms)"], notify_rows),
            f"Load average (1 min) before → after this part: {before:.2f} → {after:.2f}.",
        ]
    )


def check(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    checks = []
    for r in results["scrapes"]:
        where = f"{r['jobs']:,} jobs, {r['runs']:,} runs, {BACKENDS[r['backend']]}"
        checks.append(
            (
                f"a scrape at {where}: ≤ 2 statements, p50 ≤ 50 ms",
                r["statements"] <= 2 and r["p50"] <= 50,
                f"{r['statements']} statements, {r['p50']:.1f} ms",
            )
        )
    for r in results["notifies"]:
        checks.append(
            (
                f"failure → webhook received p50 ≤ 50 ms, {BACKENDS[r['backend']]}",
                r["p50"] <= 50,
                f"{r['p50']:.1f} ms",
            )
        )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, 100,000 runs")
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--failures", type=int, default=0)
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    postgres = not args.no_postgres and postgres_available()
    results = measure(args.quick, postgres, jobs=args.jobs, runs=args.runs, failures=args.failures)
    print(section(results))
    for what, ok, figures in check(results):
        log(f"{'ok  ' if ok else 'MISS'} {what}: {figures}")


if __name__ == "__main__":
    main()
