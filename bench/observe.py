"""Observability costs: a metrics scrape of a large store, and failure → webhook latency.

    .venv/bin/python -m bench.observe [--jobs 10000] [--runs 1000000] [--failures 50]

1. Scrape: a SQLite store with `--jobs` jobs and `--runs` finished runs spread
   over them; jobd.observe.metrics.render() timed 20 times (p50, max), and the number
   of statements it sent (target: two, p50 ≤ 50 ms).
2. Notify: a real daemon and a local HTTP receiver; `--failures` manual runs of
   a job that fails, one after another; latency from the run's recorded end to
   the webhook's arrival (target p50 ≤ 50 ms). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import http.server
import json
import sqlite3
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import log, percentile
from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Trigger
from jobd.store import open_store
from jobd.store.reader import Reader
from jobd.system.hooks import HOST


def scrape_cost(directory: Path, jobs: int, runs: int) -> dict[str, Any]:
    import jobd.observe.metrics

    url = f"sqlite:///{directory}/scrape.db"
    store = open_store(url, hooks=HOST)
    text = "".join(
        f'[jobs.j{i}]\ncommand = ["true"]\nschedule = "{i % 60} * * * *"\n' for i in range(jobs)
    )
    log(f"scrape: applying {jobs} jobs")
    store.apply_config(parse_config(text), store.now())
    store.close()
    log(f"scrape: inserting {runs} runs")
    conn = sqlite3.connect(f"{directory}/scrape.db")
    per_job = max(1, runs // jobs)
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
        "INSERT INTO executions (job, trigger, scheduled_for, queued_at, not_before, "
        "started_at, finished_at, duration_s, status, attempt, cancel_requested, log, log_bytes) "
        "SELECT 'j' || (i % ?), 'schedule', datetime('2026-01-01', '+' || i || ' seconds'), "
        "'2026-01-01', '2026-01-01', '2026-01-01', '2026-01-01 00:00:01', 1.0, "
        "CASE WHEN i % 7 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 0, '', 0 FROM n",
        (per_job * jobs - 1, jobs),
    )
    conn.commit()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    jobd.observe.metrics._instance = None  # no daemon in this process: the store's gauges
    reader = Reader(conn, "sqlite")
    took = []
    for _ in range(20):
        statements.clear()
        start = time.perf_counter()
        body = jobd.observe.metrics.render(reader)
        took.append((time.perf_counter() - start) * 1000)
    conn.close()
    return {
        "jobs": jobs,
        "runs": per_job * jobs,
        "statements": len(statements),
        "scrape_ms_p50": round(percentile(took, 50), 2),
        "scrape_ms_max": round(max(took), 2),
        "bytes": len(body),
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


def notify_latency(directory: Path, failures: int) -> dict[str, Any]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"sqlite:///{directory}/notify.db"
    config = directory / "jobd.toml"
    config.write_text(
        f'[jobd]\nnotify = ["ops"]\n[notify.ops]\ntype = "webhook"\n'
        f'url = "http://127.0.0.1:{httpd.server_address[1]}/hook"\n'
        '[jobs.broken]\nshell = "exit 1"\n'
    )
    daemon = subprocess.Popen(
        [".venv/bin/python", "-m", "jobd", "--config", str(config), "--store", url, "run"],
        stderr=subprocess.DEVNULL,
    )
    try:
        store = open_store(url, hooks=HOST)
        deadline = time.monotonic() + 30
        while store.job("broken") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = []
        for _ in range(failures):
            seen = len(_Receiver.arrivals)
            run_id = store.enqueue(
                NewRun("broken", Trigger.MANUAL, not_before=store.now(), triggered_by="bench")
            )
            while len(_Receiver.arrivals) == seen and time.monotonic() < deadline + 600:
                time.sleep(0.001)
            got, at = _Receiver.arrivals[-1]
            run = store.execution(run_id)
            assert got == run_id and run is not None and run.finished_at is not None
            ended = run.finished_at.astimezone(UTC).timestamp()
            latencies.append((at - ended) * 1000)
        store.close()
    finally:
        daemon.terminate()
        daemon.wait(30)
        httpd.shutdown()
    return {
        "failures": failures,
        "webhook_ms_p50": round(percentile(latencies, 50), 2),
        "webhook_ms_p99": round(percentile(latencies, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--failures", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **notify_latency(Path(tmp), args.failures),
            **scrape_cost(Path(tmp), args.jobs, args.runs),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
