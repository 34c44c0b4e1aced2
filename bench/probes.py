"""Process probes for the peers part: a process tree's CPU, the PostgreSQL backends
and Redis server serving it, and waiting on the job children's own start times.

Every job in the peers part is `sh -c 'date +%s.%N >> FILE'`: the stamps are the
child's own clock, one line per start.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    POSTGRES_DSN,
    cpu_between,
    log,
    proc_task_cpu,
)
from bench.jobd_side import count_lines


def work_command(path: Path) -> list[str]:
    """Every system's job: a child that writes its own clock to `path`."""
    return ["sh", "-c", f"date +%s.%N >> {path}"]


def read_times(path: Path) -> list[float]:
    times = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().split():
            with contextlib.suppress(ValueError):
                times.append(float(line))
    return sorted(times)


def span_rate(times: Sequence[float]) -> float:
    """Runs per second between the first and the last child start."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def precision_delays(times: Sequence[float], skip: int = 2) -> list[float]:
    """Delays of an every-second job's runs after their due second (the whole second
    each child start falls in; every delay here is well under a second). The first
    `skip` runs may fall while the scheduler is still starting."""
    return [t - math.floor(t) for t in sorted(times)[skip:]]


def process_tree(pid: int) -> list[int]:
    """The process and its descendants that are not job children (`sh`, `date`):
    Celery's prefork pool, not the commands it runs."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            comm = Path(f"/proc/{current}/comm").read_text().strip()
        except OSError:
            continue
        if current != pid and comm in ("sh", "date", "bash"):
            continue
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def tree_cpu(pids: Sequence[int]) -> dict[str, float]:
    """Per-thread CPU seconds of several processes (thread ids are unique system-wide)."""
    times: dict[str, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            times.update(proc_task_cpu(pid))
    return times


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets a process holds."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def postgres_backends(pids: Sequence[int]) -> list[int]:
    """The PostgreSQL backends serving these processes' connections."""
    import psycopg2

    ports = sorted(set().union(*(local_ports(pid) for pid in pids)))
    if not ports:
        return []
    conn = psycopg2.connect(POSTGRES_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def redis_server_pid() -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "redis-server":
                    return int(proc.name)
    return None


@dataclass
class Watched:
    """A system's own processes, and the store or broker processes serving it."""

    pids: Callable[[], list[int]]
    store: Callable[[list[int]], list[int]] = lambda _pids: []

    def reading(self) -> tuple[dict[str, float], dict[str, float]]:
        own = self.pids()
        return tree_cpu(own), tree_cpu(self.store(own))


def wait_stamps(
    path: Path, expected: int, watched: Watched | None, quiet: float, deadline: float
) -> dict[str, Any]:
    """Wait for `expected` child starts; with `watched`, its CPU between the first start
    and the last (so start-up and shut-down are not counted)."""
    first_own = first_store = None
    seen_at_first = 0
    last, last_change = -1, time.monotonic()
    while True:
        seen = count_lines(path)
        now = time.monotonic()
        if seen and first_own is None and watched is not None:
            first_own, first_store = watched.reading()
            seen_at_first = seen
        if seen >= expected:
            break
        if seen != last:
            last, last_change = seen, now
        elif (seen and now - last_change > quiet) or now > deadline:
            log(f"  only {seen} of {expected} runs started; giving up waiting")
            break
        time.sleep(0.01)
    result: dict[str, Any] = {"seen": seen}
    if watched is not None and first_own is not None and first_store is not None:
        own, store = watched.reading()
        runs = max(1, seen - seen_at_first)
        result["cpu_ms"] = cpu_between(first_own, own) / runs * 1000
        result["store_cpu_ms"] = cpu_between(first_store, store) / runs * 1000
    return result
