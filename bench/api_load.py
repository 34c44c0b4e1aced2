"""The HTTP API under load, per backend (issue 20's speed targets).

    python bench/api_load.py              # 200 requests/s for 30 s; 1,000,000 runs listed
    python bench/api_load.py --quick      # 10 s windows; 200,000 runs listed
    python -m bench --only api            # the same, into BENCHMARKS.md and its targets

One daemon with `[api] listen` on a loopback port, per backend:

1. trigger → started: N triggers of a job whose child stamps its own start,
   one at a time, through `POST /v1/jobs/poke/trigger` and through `jobd
   trigger poke` (a whole CLI process). Both are given end to end (from sending
   the request, or spawning the CLI, to the child's clock) and from the run's
   `queued_at` to the child's clock: the second is the wake-up path the target
   compares (an HTTP trigger wakes the runners as the CLI's does);
2. a one-second `tick` job's lateness, quiet, for the window;
3. the same while a bounded load generator (keep-alive connections, requests
   sent on a fixed schedule, never more in flight than its threads) POSTs
   `/v1/jobs/noop/trigger` at the rate: its latencies and errors, and the tick's.

Then `jobd serve` (no daemon) on another store filled with ROWS runs in one
INSERT ... SELECT (the statement of bench/cli_latency.py), and `GET
/v1/executions?limit=10` (and `&job=job_042`) one request at a time.

A plain script, not a test: figures depend on the machine and what else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Latency,
    jobd_argv,
    log,
    ms,
    postgres_available,
    postgres_schema,
    stop_process,
)
from bench.jobd_side import jobd_setup, read_stamps, stamp_command
from bench.report import table

SERVING = re.compile(r"serving the API on http://([0-9.]+):([0-9]+)/v1")
THREADS = 16  # the load generator's connections
BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# Targets (issue 20).
TRIGGER_P99_S = 0.020
WAKE_MARGIN_S = 0.005
LIST_P99_S = 0.010
TICK_MARGIN_S = 0.002


def serving_address(log_path: Path, proc: subprocess.Popen, timeout: float = 60) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = SERVING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1), int(match.group(2))
        if proc.poll() is not None:
            raise RuntimeError(f"the API did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("the API did not start in time")


def make_token(env: dict[str, str], *store: str) -> str:
    made = subprocess.run(
        [*jobd_argv(), *store, "token", "create", f"bench-{time.monotonic_ns()}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


# -- trigger → started -------------------------------------------------------------------


def wait_stamp(stamps: Path, known: set[int], timeout: float = 10) -> tuple[int, float] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = {k: v for k, v in read_stamps(stamps).items() if k not in known}
        if fresh:
            run_id = min(fresh)
            return run_id, fresh[run_id]
        time.sleep(0.0005)
    return None


def trigger_to_started(
    setup: Any, host: str, port: int, token: str, stamps: Path, count: int
) -> dict[str, Latency]:
    """One trigger at a time over HTTP, then through the CLI; see the docstring."""
    queued = {r["id"]: r["queued_at"] for r in setup.executions()}
    known = set(read_stamps(stamps))
    sent: dict[str, dict[int, float]] = {"http": {}, "cli": {}}
    started: dict[int, float] = {}
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": "0"}
    for way in ("http", "cli"):
        for _ in range(count):
            at = time.time()
            if way == "http":
                conn.request("POST", "/v1/jobs/poke/trigger", headers=headers)
                response = conn.getresponse()
                response.read()
            else:
                subprocess.run(
                    [*jobd_argv(), "trigger", "poke"], env=setup.env(), capture_output=True
                )
            got = wait_stamp(stamps, known)
            if got is None:
                continue
            run_id, stamp = got
            known.add(run_id)
            sent[way][run_id] = at
            started[run_id] = stamp
            time.sleep(0.05)  # apart, so each is a trigger on a quiet daemon
    conn.close()
    queued = {r["id"]: r["queued_at"] for r in setup.executions()}
    result = {}
    for way, ids in sent.items():
        result[f"{way} end to end"] = Latency.of([started[i] - at for i, at in ids.items()])
        result[f"{way} queued"] = Latency.of(
            [started[i] - queued[i] for i in ids if queued.get(i) is not None]
        )
    return result


# -- the tick, quiet and under load -------------------------------------------------------


def tick_lateness(setup: Any, stamps: Path, since: float, until: float) -> Latency:
    """The tick's start lateness in the window: the child's own clock minus its slot."""
    started = read_stamps(stamps)
    rows = [
        r
        for r in setup.executions()
        if r["job"] == "tick" and r["scheduled_for"] and since <= r["scheduled_for"] < until
    ]
    return Latency.of([started[r["id"]] - r["scheduled_for"] for r in rows if r["id"] in started])


def load(host: str, port: int, token: str, rate: float, seconds: float) -> dict[str, Any]:
    """POST triggers on a fixed schedule from THREADS keep-alive connections."""
    interval = 1.0 / rate
    total = int(rate * seconds)
    begin = time.monotonic() + 0.2
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_index = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        headers = {"Authorization": f"Bearer {token}", "Content-Length": "0"}
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= total:
                break
            delay = begin + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            try:
                conn.request("POST", "/v1/jobs/noop/trigger", headers=headers)
                response = conn.getresponse()
                response.read()
                took = time.perf_counter() - sent
                with lock:
                    if response.status == 201:
                        latencies.append(took)
                    else:
                        errors.append(str(response.status))
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    achieved = len(latencies) / max(time.monotonic() - begin, 1e-9)
    return {"latency": Latency.of(latencies), "errors": errors, "rate": achieved}


def daemon_part(backend: str, rate: float, seconds: int, pokes: int) -> dict[str, Any]:
    with jobd_setup(backend, {"max_concurrent": 8}) as setup:
        ticks = setup.workdir / "ticks"
        pokes_file = setup.workdir / "pokes"
        setup.write_config(
            {
                "tick": {"schedule": "* * * * * *", "command": stamp_command(ticks)},
                "poke": {"command": stamp_command(pokes_file)},
                "noop": {"command": ["true"]},
            }
        )
        with setup.config_path.open("a") as config:
            config.write('\n[api]\nlisten = "127.0.0.1:0"\nthreads = 8\n')
        setup.apply()
        token = make_token(setup.env())
        setup.start()
        assert setup.proc is not None
        host, port = serving_address(setup.log_path, setup.proc)
        time.sleep(2)  # past the first slots, which may fall during start-up
        wake = trigger_to_started(setup, host, port, token, pokes_file, pokes)
        quiet_from = time.time()
        time.sleep(seconds)
        quiet_to = loaded_from = time.time()
        result = load(host, port, token, rate, seconds)
        loaded_to = time.time()
        time.sleep(2)  # the last ticks start and stamp
        setup.stop()
        quiet = tick_lateness(setup, ticks, quiet_from, quiet_to)
        loaded = tick_lateness(setup, ticks, loaded_from, loaded_to)
    return {"quiet": quiet, "loaded": loaded, "wake": wake, **result}


# -- listing a big history ----------------------------------------------------------------


@contextlib.contextmanager
def filled_store(backend: str, rows: int) -> Iterator[str]:
    from bench.cli_latency import fill

    if backend == "sqlite":
        workdir = Path(tempfile.mkdtemp(prefix="jobd-bench-api-"))
        try:
            url = f"sqlite:///{workdir / 'jobd.db'}"
            log(f"  filling {backend} with {rows:,} runs: {fill(url, backend, rows):.1f}s")
            yield url
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        with postgres_schema() as url:
            log(f"  filling {backend} with {rows:,} runs: {fill(url, backend, rows):.1f}s")
            yield url


def listing_part(backend: str, rows: int, requests: int) -> dict[str, Latency]:
    with filled_store(backend, rows) as url:
        workdir = Path(tempfile.mkdtemp(prefix="jobd-bench-serve-"))
        config = workdir / "jobd.toml"
        config.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
        env["JOBD_CONFIG"] = str(config)
        token = make_token(env, "--store", url)
        log_path = workdir / "serve.log"
        with log_path.open("w") as log_file:
            proc = subprocess.Popen(
                [*jobd_argv(), "--store", url, "serve", "--listen", "127.0.0.1:0"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            host, port = serving_address(log_path, proc)
            conn = http.client.HTTPConnection(host, port, timeout=30)
            headers = {"Authorization": f"Bearer {token}"}
            result = {}
            for label, path in (
                ("newest 10", "/v1/executions?limit=10"),
                ("newest 10 of one job", "/v1/executions?limit=10&job=job_042"),
            ):
                took = []
                for index in range(requests + 20):
                    sent = time.perf_counter()
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    if index >= 20:  # the first ones warm the caches
                        took.append(time.perf_counter() - sent)
                    if response.status != 200 or len(json.loads(body)["items"]) != 10:
                        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
                result[label] = Latency.of(took)
            conn.close()
        finally:
            stop_process(proc)
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# -- the part -----------------------------------------------------------------------------


def measure(quick: bool, postgres: bool, rate: float = 200.0) -> dict[str, Any]:
    seconds = 10 if quick else 30
    rows = 200_000 if quick else 1_000_000
    pokes = 10 if quick else 30
    requests = 200 if quick else 1000
    backends = ["sqlite"] + (["postgresql"] if postgres else [])
    results: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "rows": rows,
        "pokes": pokes,
        "requests": requests,
        "load_before": os.getloadavg()[0],
        "backends": {},
    }
    for backend in backends:
        log(f"api: {backend}, trigger → started, then {rate:g} requests/s for {seconds} s")
        got = daemon_part(backend, rate, seconds, pokes)
        log(f"api: {backend}, GET /v1/executions over {rows:,} runs")
        got["listing"] = listing_part(backend, rows, requests)
        results["backends"][backend] = got
    return results


def section(results: dict[str, Any]) -> str:
    rate, seconds = results["rate"], results["seconds"]
    parts = [
        "## HTTP API",
        f"Issue 20's targets, per store (load average before: {results['load_before']:.1f}). "
        "All figures in ms.",
        f"**Triggers at {rate:g} requests/s for {seconds} s** (`POST /v1/jobs/noop/trigger`, "
        f"{THREADS} keep-alive loopback connections, requests sent on a fixed schedule), and "
        "a one-second `tick` job's start lateness (the child's own clock minus its slot) "
        "without and with that load:",
    ]
    rows = []
    for backend, got in results["backends"].items():
        lat, quiet, loaded = got["latency"], got["quiet"], got["loaded"]
        rows.append(
            [
                BACKENDS[backend],
                f"{got['rate']:.0f}/s",
                ms(lat.p(50)),
                ms(lat.p(99)),
                len(got["errors"]),
                ms(quiet.p(50)),
                ms(loaded.p(50)),
                ms(quiet.p(99)),
                ms(loaded.p(99)),
            ]
        )
    parts.append(
        table(
            [
                "store",
                "achieved",
                "trigger p50",
                "trigger p99",
                "errors",
                "tick p50, quiet",
                "tick p50, loaded",
                "tick p99, quiet",
                "tick p99, loaded",
            ],
            rows,
        )
    )
    parts.append(
        f"**Trigger → started**, {results['pokes']} triggers one at a time each way: end to "
        "end (from sending the request, or spawning `jobd trigger`, to the child's clock) "
        "and from the run's `queued_at` to the child's clock (the wake-up path):"
    )
    rows = []
    for backend, got in results["backends"].items():
        wake = got["wake"]
        rows.append(
            [
                BACKENDS[backend],
                ms(wake["http end to end"].p(50)),
                ms(wake["cli end to end"].p(50)),
                ms(wake["http queued"].p(50)),
                ms(wake["cli queued"].p(50)),
            ]
        )
    parts.append(
        table(
            [
                "store",
                "HTTP, end to end p50",
                "CLI, end to end p50",
                "HTTP, queued → started p50",
                "CLI, queued → started p50",
            ],
            rows,
        )
    )
    parts.append(
        f"**Listing a big history**: `jobd serve` on a store of {results['rows']:,} runs "
        f"over 100 jobs, {results['requests']} requests one at a time on one keep-alive "
        "connection (after 20 to warm up):"
    )
    rows = []
    for backend, got in results["backends"].items():
        for label, lat in got["listing"].items():
            rows.append([BACKENDS[backend], label, ms(lat.p(50)), ms(lat.p(99)), ms(lat.max)])
    parts.append(table(["store", "GET /v1/executions", "p50", "p99", "max"], rows))
    return "\n\n".join(parts)


def check(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The targets this part covers: (what, met, figures)."""
    checks = []
    rate, seconds, rows = results["rate"], results["seconds"], results["rows"]
    for backend, got in results["backends"].items():
        name = BACKENDS[backend]
        p99, errors = got["latency"].p(99), len(got["errors"])
        checks.append(
            (
                f"API trigger at {rate:g}/s for {seconds} s: p99 ≤ 20 ms and 0 errors, {name}",
                p99 <= TRIGGER_P99_S and errors == 0,
                f"{ms(p99)} ms, {errors} errors",
            )
        )
        wake = got["wake"]
        ours, cli = wake["http queued"].p(50), wake["cli queued"].p(50)
        checks.append(
            (
                f"HTTP trigger → started p50 within 5 ms of the CLI's (queued → started), {name}",
                ours <= cli + WAKE_MARGIN_S,
                f"{ms(ours)} ms vs {ms(cli)} ms",
            )
        )
        listing = got["listing"]["newest 10"].p(99)
        checks.append(
            (
                f"GET /v1/executions?limit=10 p99 ≤ 10 ms with {rows:,} runs, {name}",
                listing <= LIST_P99_S,
                f"{ms(listing)} ms",
            )
        )
        quiet, loaded = got["quiet"].p(50), got["loaded"].p(50)
        checks.append(
            (
                f"tick start p50 under API load ≤ 2 ms worse than without, {name}",
                loaded <= quiet + TICK_MARGIN_S,
                f"{ms(loaded)} ms vs {ms(quiet)} ms",
            )
        )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s windows, 200,000 runs")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    postgres = not args.no_postgres and postgres_available()
    results = measure(args.quick, postgres, args.rate)
    print(section(results).split("\n\n", 1)[1])
    print()
    for what, ok, figures in check(results):
        print(f"{'met   ' if ok else 'MISSED'} {what}: {figures}")


if __name__ == "__main__":
    main()
