"""Driving a real `jobd run` process: a generated config, a store, the daemon, its rows.

The daemon runs exactly as an operator runs it (`jobd run --config FILE`, its log
on stderr at the default level); the benchmark reads the store with the bare
driver afterwards, so measuring never goes through the code it measures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import jobd_argv, log, postgres_schema, stop_process, wait_for_line

READY = "started: instance"
BASH = shutil.which("bash") or "/bin/bash"


def stamp_command(path: Path) -> list[str]:
    """A job that writes its execution id and its own start time (bash's $EPOCHREALTIME,
    read inside the child, so no second process is spawned) to `path`."""
    return [BASH, "-c", f'echo "$JOBD_EXECUTION_ID $EPOCHREALTIME" >> {path}']


def toml_value(value: Any) -> str:
    return json.dumps(value)  # TOML basic strings, arrays and numbers read like JSON


@dataclass
class JobdSetup:
    backend: str  # sqlite | postgresql
    workdir: Path
    url: str
    settings: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "jobd.toml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "jobd.log"

    def write_config(self, jobs: dict[str, dict[str, Any]]) -> None:
        lines = ["[jobd]", f"store = {toml_value(self.url)}"]
        lines += [f"{key} = {toml_value(value)}" for key, value in self.settings.items()]
        for name, job in jobs.items():
            lines.append(f"\n[jobs.{name}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in job.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBD_", "NOTIFY_"))}
        env["JOBD_CONFIG"] = str(self.config_path)
        return env

    def apply(self) -> float:
        """`jobd run --once`: put the config's jobs into the store. Seconds taken."""
        started = time.perf_counter()
        result = subprocess.run(
            [*jobd_argv(), "run", "--once"], env=self.env(), capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RuntimeError(f"jobd run --once failed:\n{result.stderr[-3000:]}")
        return time.perf_counter() - started

    def start(self, timeout: float = 120) -> float:
        """Start the daemon and wait for its readiness line. Seconds taken."""
        started = time.perf_counter()
        self.log_file = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*jobd_argv(), "run"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        wait_for_line(self.log_path, READY, timeout, self.proc)
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.log_file.close()
            self.proc = None

    # -- reading the store with the bare driver ----------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.url[len("sqlite:///") :], timeout=30)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        import psycopg2

        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                return cur.fetchall()
        finally:
            conn.close()

    def executions(self) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT id, job, status, scheduled_for, queued_at, started_at, finished_at "
            "FROM executions ORDER BY id"
        )
        keys = ("id", "job", "status", "scheduled_for", "queued_at", "started_at", "finished_at")
        result = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            for key in keys[3:]:
                item[key] = _epoch(item[key])
            result.append(item)
        return result

    def count(self, where: str = "1=1") -> int:
        return int(self.query(f"SELECT count(*) FROM executions WHERE {where}")[0][0])


def _epoch(value: Any) -> float | None:
    """A naive-UTC datetime (or SQLite text) from the store as Unix seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@contextlib.contextmanager
def jobd_setup(backend: str, settings: dict[str, Any] | None = None) -> Iterator[JobdSetup]:
    """A work directory and an empty store on `backend`; the daemon is stopped at the end."""
    workdir = Path(tempfile.mkdtemp(prefix=f"jobd-bench-{backend}-"))
    try:
        if backend == "sqlite":
            setup = JobdSetup(backend, workdir, f"sqlite:///{workdir / 'jobd.db'}", settings or {})
            try:
                yield setup
            finally:
                setup.stop()
        else:
            with postgres_schema() as url:
                setup = JobdSetup(backend, workdir, url, settings or {})
                try:
                    yield setup
                finally:
                    setup.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def read_stamps(path: Path) -> dict[int, float]:
    """Execution id → the child's own start time, from the stamp file."""
    stamps: dict[int, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                stamps[int(parts[0])] = float(parts[1])
    return stamps


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def wait_for_stamps(path: Path, expected: int, not_before: float, quiet: float = 10.0) -> int:
    """Wait until `expected` stamps are in, or none came for `quiet` seconds after
    `not_before` (a wall-clock time). Returns how many arrived."""
    last, last_change = -1, time.time()
    while True:
        now = time.time()
        seen = count_lines(path)
        if seen >= expected:
            return seen
        if seen != last:
            last, last_change = seen, now
        elif now > not_before and now - max(last_change, not_before) > quiet:
            log(f"  only {seen} of {expected} runs started; giving up waiting")
            return seen
        time.sleep(0.1)


def wait_until_settled(setup: JobdSetup, timeout: float = 60) -> None:
    """Until no run is queued or running (the last outcomes reach the store in batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if setup.count("status IN ('queued', 'running')") == 0:
            return
        time.sleep(0.2)
    log("  runs still queued or running after the deadline")
