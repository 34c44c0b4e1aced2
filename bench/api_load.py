"""The HTTP API under load: trigger latency at a fixed rate, and the daemon's
fire precision with and without that load.

    python bench/api_load.py            # 200 requests/s for 30 s, per backend
    python bench/api_load.py --quick    # 10 s windows

A daemon with `[api] listen` serves the API on a loopback port and fires a
one-second `tick` job whose child stamps its own start. First a quiet window
measures the tick's start lateness; then a bounded load generator (keep-alive
connections, requests sent on a fixed schedule, never more in flight than its
threads) POSTs /v1/jobs/noop/trigger at the rate while the tick is measured
again. Targets (issue 20): trigger p99 <= 20 ms with 0 errors; the tick's p50
lateness under load no more than 2 ms worse than without.

A plain script, not a test: figures depend on the machine and what else runs.
"""

from __future__ import annotations

import argparse
import http.client
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Latency,
    jobd_argv,
    log,
    ms,
    postgres_available,
)
from bench.jobd_side import jobd_setup, read_stamps, stamp_command

SERVING = re.compile(r"serving the API on http://([0-9.]+):([0-9]+)/v1")
THREADS = 16


def tick_lateness(setup: Any, stamps: Path, since: float, until: float) -> tuple[Latency, Latency]:
    """Of the ticks slotted in the window: fire lateness (queued minus slot: the
    planner's work) and start lateness (the child's own clock minus the slot,
    which also waits for a free execution slot among the triggered runs)."""
    started = read_stamps(stamps)
    rows = [
        r
        for r in setup.executions()
        if r["job"] == "tick" and r["scheduled_for"] and since <= r["scheduled_for"] < until
    ]
    fired = Latency.of([r["queued_at"] - r["scheduled_for"] for r in rows])
    return fired, Latency.of(
        [started[r["id"]] - r["scheduled_for"] for r in rows if r["id"] in started]
    )


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
            due = begin + index * interval
            delay = due - time.monotonic()
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


def measure(backend: str, rate: float, seconds: int) -> dict[str, Any]:
    with jobd_setup(backend, {"max_concurrent": 8}) as setup:
        stamps = setup.workdir / "starts"
        setup.write_config(
            {
                "tick": {"schedule": "* * * * * *", "command": stamp_command(stamps)},
                "noop": {"command": ["true"]},
            }
        )
        with setup.config_path.open("a") as config:
            config.write('\n[api]\nlisten = "127.0.0.1:0"\nthreads = 8\n')
        setup.apply()
        made = subprocess.run(
            [*jobd_argv(), "token", "create", "bench"],
            env=setup.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        token = made.stdout.strip()
        setup.start()
        match = None
        while match is None:
            match = SERVING.search(setup.log_path.read_text())
            time.sleep(0.05)
        host, port = match.group(1), int(match.group(2))
        time.sleep(2)  # past the first slots, which may fall during start-up
        quiet_from = time.time()
        time.sleep(seconds)
        quiet_to = loaded_from = time.time()
        result = load(host, port, token, rate, seconds)
        loaded_to = time.time()
        time.sleep(2)  # the last ticks start and stamp
        setup.stop()
        quiet = tick_lateness(setup, stamps, quiet_from, quiet_to)
        loaded = tick_lateness(setup, stamps, loaded_from, loaded_to)
    return {"backend": backend, "quiet": quiet, "loaded": loaded, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s windows")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    seconds = 10 if args.quick else 30
    backends = ["sqlite"] + ([] if args.no_postgres or not postgres_available() else ["postgresql"])
    import os

    load_before = os.getloadavg()
    rows = []
    for backend in backends:
        log(f"api load: {backend}, {args.rate:g} requests/s for {seconds} s")
        got = measure(backend, args.rate, seconds)
        lat, (quiet_fire, quiet), (fire, loaded) = got["latency"], got["quiet"], got["loaded"]
        rows.append(
            f"| {backend} | {got['rate']:.0f}/s | {ms(lat.p(50))} | {ms(lat.p(99))} | "
            f"{len(got['errors'])} | {ms(quiet_fire.p(50))} / {ms(quiet.p(50))} | "
            f"{ms(fire.p(50))} / {ms(loaded.p(50))} | {ms(fire.p(99))} / {ms(loaded.p(99))} |"
        )
    print(
        f"POST /v1/jobs/noop/trigger at {args.rate:g} requests/s for {seconds} s "
        f"({THREADS} keep-alive connections), and a one-second tick job's start lateness "
        "without and with that load (ms; fired: queued minus slot; started: the "
        "child's clock minus the slot). Load average before: "
        f"{load_before[0]:.1f}.\n"
    )
    print(
        "| store | achieved | trigger p50 | trigger p99 | errors | tick fired/started p50, "
        "quiet | p50, loaded | p99, loaded |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
