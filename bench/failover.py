"""How long does failover take? Kill the leader again and again and measure.

    python bench/failover.py [--kills 20] [--lease-ttl 5s] [--daemons 3]
                             [--backend postgresql|sqlite] [--no-write]

Starts a few `jobd run` daemons on one fresh store with a job firing every
second (each run lasts two seconds, so the leader is usually running one).
Then, repeatedly: SIGKILL the current leader, measure the time from its death
to the next enqueue by a new leader, and to the moment its running run is
marked abandoned; restart the killed daemon; wait a moment so the next kill
lands at a different point of the renewal cycle. Prints min/median/max and
updates the "Failover" section of BENCHMARKS.md (the rest of the file is kept).

PostgreSQL comes from $JOBD_BENCH_POSTGRES_DSN (default: the local server); a
schema is created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobd.core.durations import parse_duration
from jobd.store import open_store
from jobd.store.admin import leader_lease
from jobd.system.hooks import HOST

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
SECTION = "## Failover"
POLL = 0.01
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

JOBS = """
[jobs.tick]
schedule = "* * * * * *"
shell = "sleep 2"
overlap = "allow"
catchup = "all"
retries = 1
retry_delay = "1s"
"""


@dataclass
class Daemon:
    popen: subprocess.Popen
    log: Path

    def started(self) -> bool:
        return "started:" in self.log.read_text(errors="replace")


@dataclass
class Kill:
    to_enqueue: float
    to_abandoned: float | None


@dataclass
class Bench:
    url: str
    workdir: Path
    ttl: float
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.config = self.workdir / "jobd.toml"
        settings = {
            "store": self.url,
            "leader": "table",
            "lease_ttl": duration_text(self.ttl),
            "kill_grace": "1s",
            "shutdown_grace": "2s",
            "max_concurrent": 8,
        }
        body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        self.config.write_text(f"[jobd]\n{body}\n{JOBS}")
        self.store = open_store(self.url, hooks=HOST)

    def start(self) -> Daemon:
        log = self.workdir / f"jobd-{len(self.daemons)}.log"
        env = {**os.environ, "JOBD_STORE": self.url}
        with open(log, "w") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "jobd", "--config", str(self.config), "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        daemon = Daemon(popen, log)
        self.daemons.append(daemon)
        wait(daemon.started, 30, f"daemon did not start; see {log}")
        return daemon

    def leader(self) -> tuple[Daemon, str, int] | None:
        lease = leader_lease(self.store, self.store.now())
        if not lease or not lease["holder"] or lease["expired"]:
            return None
        pids = {i["id"]: i["pid"] for i in self.store.instances()}
        pid = pids.get(lease["holder"])
        for daemon in self.daemons:
            if daemon.popen.pid == pid and daemon.popen.poll() is None:
                return daemon, lease["holder"], lease["epoch"]
        return None

    def running_on(self, instance: str) -> list[int]:
        runs = self.store.executions(status=["running"], limit=None)
        return [r.id for r in runs if r.instance == instance]

    def first_of_epoch_after(self, epoch: int) -> bool:
        E = self.store.m.Execution
        return E.select().where(E.epoch > epoch).exists()

    def abandoned(self, run_ids: list[int]) -> bool:
        return all(self.store.execution(i).status == "abandoned" for i in run_ids)

    def kill_leader(self) -> Kill:
        found = wait(self.leader, 30, "no leader")
        daemon, instance, epoch = found
        # Kill while it is running something, so there is a run to abandon.
        running = wait(lambda: self.running_on(instance), 10, "") or []
        daemon.popen.send_signal(signal.SIGKILL)
        died = time.monotonic()
        daemon.popen.wait()
        # Both are watched in one loop: each is timed when it is first seen, whichever
        # comes first.
        to_enqueue: float | None = None
        to_abandoned: float | None = None
        deadline = died + 60
        while to_enqueue is None or (running and to_abandoned is None):
            if to_enqueue is None and self.first_of_epoch_after(epoch):
                to_enqueue = time.monotonic() - died
            if running and to_abandoned is None and self.abandoned(running):
                to_abandoned = time.monotonic() - died
            if time.monotonic() > deadline:
                what = "no new leader fired" if to_enqueue is None else "runs not abandoned"
                raise SystemExit(f"failover bench: {what}")
            time.sleep(POLL)
        assert to_enqueue is not None
        self.daemons.remove(daemon)
        self.start()
        return Kill(to_enqueue, to_abandoned)

    def missing_slots(self, since: datetime) -> tuple[int, int]:
        """(slots missing, slots fired twice) among the fires after `since`, up to 3 s ago."""
        E = self.store.m.Execution
        rows = E.select(E.scheduled_for).where(E.job == "tick", E.scheduled_for.is_null(False))
        seconds = [int(r.scheduled_for.replace(tzinfo=UTC).timestamp()) for r in rows]
        end = int(self.store.now().timestamp()) - 3
        wanted = set(range(int(since.timestamp()) + 1, end + 1))
        got = [s for s in seconds if s in wanted]
        return len(wanted - set(got)), len(got) - len(set(got))

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.popen.poll() is None:
                daemon.popen.send_signal(signal.SIGTERM)
        for daemon in self.daemons:
            try:
                daemon.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.popen.kill()
        self.store.close()


def wait(condition: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            if message:
                raise SystemExit(f"failover bench: {message}")
            return None
        time.sleep(POLL)


@contextlib.contextmanager
def store_url(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'jobd.db'}"
        return
    import psycopg2

    dsn = os.environ.get("JOBD_BENCH_POSTGRES_DSN", DEFAULT_DSN)
    schema = f"jobd_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def duration_text(seconds: float) -> str:
    """As a config would say it: 5s, 1500ms."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f} s"


def server_version(url: str) -> str:
    if not url.startswith("postgres"):
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    store = open_store(url, migrate_schema=False)
    try:
        version = store.db.execute_sql("SHOW server_version").fetchone()[0]
    finally:
        store.close()
    return f"PostgreSQL {version.split()[0]}"


def update_benchmarks(row: dict[str, str], about: str) -> None:
    """Replace this backend and lease_ttl's row in the Failover section; keep the rest."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    start = text.find(SECTION + "\n")
    if start == -1:
        before, old, after = text.rstrip("\n") + "\n\n", "", ""
    else:
        end = text.find("\n## ", start + len(SECTION))
        before = text[:start]
        old = text[start : end + 1 if end != -1 else len(text)]
        after = text[end + 1 :] if end != -1 else ""
    columns = [
        "backend",
        "lease_ttl",
        "kills",
        "death → next enqueue",
        "death → abandoned",
        "slots",
        "measured",
    ]
    rows: dict[tuple[str, str], list[str]] = {}
    for line in old.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        header_or_rule = cells[0] in ("backend", "---", "")
        if line.startswith("|") and len(cells) == len(columns) and not header_or_rule:
            rows[(cells[0], cells[1])] = cells
    rows[(row["backend"], row["lease_ttl"])] = [row[c] for c in columns]
    lines = [
        SECTION,
        "",
        "`python bench/failover.py --kills N --lease-ttl T --backend B` runs three",
        "daemons with a job firing every second, SIGKILLs the leader N times",
        "(restarting it each time) and measures, from the leader's death: the next",
        "enqueue by a new leader, and the marking of the dead leader's running run as",
        "`abandoned`. Times are min / median / max. `slots` counts missing or",
        "duplicated fires over the whole run (it must be 0 missing, 0 twice).",
        "",
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(cells) + " |" for _key, cells in sorted(rows.items())),
        "",
        about,
        "",
    ]
    BENCHMARKS.write_text(before + "\n".join(lines) + ("\n" + after if after else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease-ttl", default="5s")
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--no-write", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = parser.parse_args()
    ttl = parse_duration(args.lease_ttl)
    workdir = Path(tempfile.mkdtemp(prefix="jobd-failover-"))
    kills: list[Kill] = []
    try:
        with store_url(args.backend, workdir) as url:
            bench = Bench(url, workdir, ttl)
            try:
                for _ in range(args.daemons):
                    bench.start()
                since = bench.store.now()
                for number in range(1, args.kills + 1):
                    time.sleep(random.uniform(1.0, 1.0 + ttl / 3))
                    kill = bench.kill_leader()
                    kills.append(kill)
                    abandoned = f"{kill.to_abandoned:.2f}s" if kill.to_abandoned else "n/a"
                    print(
                        f"kill {number:>3}: next enqueue after {kill.to_enqueue:.2f}s, "
                        f"run abandoned after {abandoned}",
                        flush=True,
                    )
                time.sleep(4)
                missing, twice = bench.missing_slots(since)
                version = server_version(url)
            finally:
                bench.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    enqueue = [k.to_enqueue for k in kills]
    abandoned = [k.to_abandoned for k in kills if k.to_abandoned is not None]
    print(f"\nlease_ttl {duration_text(ttl)}, {args.backend}, {len(kills)} kills")
    print(f"  leader death → next enqueue:  {summary(enqueue)}  (min / median / max)")
    print(f"  leader death → run abandoned: {summary(abandoned)}  ({len(abandoned)} runs)")
    print(f"  slots missing: {missing}, fired twice: {twice}")
    if not args.no_write:
        row = {
            "backend": args.backend,
            "lease_ttl": duration_text(ttl),
            "kills": str(len(kills)),
            "death → next enqueue": summary(enqueue),
            "death → abandoned": summary(abandoned),
            "slots": f"{missing} missing, {twice} twice",
            "measured": f"{datetime.now(UTC):%Y-%m-%d}, {version}",
        }
        about = (
            f"Daemons and database on one machine ({os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}): these are jobd's own delays, without a network."
        )
        update_benchmarks(row, about)
        print(f"updated {BENCHMARKS.relative_to(ROOT)}")
    return 0 if missing == 0 and twice == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
