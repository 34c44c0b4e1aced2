"""What every benchmark part shares: paths, statistics, process probes, PostgreSQL schemas.

Runs under the project venv. Nothing here imports APScheduler: that lives in its
own venv (bench/.venv-aps) and is driven through bench/aps_worker.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
APS_VENV = BENCH / ".venv-aps"
APS_REQUIREMENTS = ["apscheduler==3.11.*", "sqlalchemy", "croniter", "cronsim"]
POSTGRES_DSN = os.environ.get("JOBD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
NONE = "\u2013"  # an en dash: no figure
TIMES = "\u00d7"  # the multiplication sign of "12.3x"
APS_STORES = {"memory": "MemoryJobStore", "sqlite": "SQLAlchemy (SQLite)"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- statistics -------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    """Latencies in seconds, summarised as p50/p95/p99/max."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Latency:
        return cls(tuple(values))

    @property
    def count(self) -> int:
        return len(self.values)

    def p(self, q: float) -> float:
        return percentile(self.values, q)

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.p(50),
            "p95": self.p(95),
            "p99": self.p(99),
            "max": self.max,
            "n": self.count,
        }


def ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return NONE
    value = seconds * 1000
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(theirs: float | None, ours: float | None) -> str:
    """How many times smaller ours is than theirs ('12.3x'), for lower-is-better figures."""
    if theirs is None or ours is None or math.isnan(theirs) or math.isnan(ours):
        return NONE
    if ours <= 0:
        return "∞"
    return f"{theirs / ours:,.1f}{TIMES}"


# -- processes ------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def proc_task_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each live thread, from schedstat (nanoseconds): an idle scheduler
    uses less than /proc/PID/stat's 10 ms ticks can show."""
    times: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[task.name] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return times


def cpu_between(before: dict[str, float], after: dict[str, float]) -> float:
    """CPU used between two proc_task_cpu readings, by the threads alive at the end
    (a thread that ended in between takes its share with it)."""
    return sum(value - before.get(tid, 0.0) for tid, value in after.items())


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def wait_for_line(path: Path, needle: str, timeout: float, proc: subprocess.Popen | None) -> None:
    """Wait until `needle` appears in the file (a process's log), with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if needle in path.read_text(errors="replace"):
                return
        if proc is not None and proc.poll() is not None:
            tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
            raise RuntimeError(f"process exited ({proc.returncode}) before {needle!r}:\n{tail}")
        time.sleep(0.02)
    tail = path.read_text(errors="replace")[-2000:] if path.exists() else ""
    raise TimeoutError(f"{needle!r} not seen in {path} within {timeout}s:\n{tail}")


def stop_process(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the APScheduler side ----------------------------------------------------------------


def ensure_venv(venv: Path, requirements: Sequence[str]) -> Path:
    """A comparison's own virtualenv (never a jobd dependency), made on first use and
    remade when its requirements change. Returns its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".bench-requirements"
    want = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    log(f"creating {venv.relative_to(ROOT)} with {', '.join(requirements)}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(want)
    return python


def ensure_aps_venv() -> Path:
    """bench/.venv-aps with APScheduler 3.11, made on first use."""
    return ensure_venv(APS_VENV, APS_REQUIREMENTS)


def run_aps(scenario: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run one scenario in the APScheduler venv; its result is the JSON it prints last."""
    result = subprocess.run(
        [str(ensure_aps_venv()), str(BENCH / "aps_worker.py"), json.dumps(scenario)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"aps_worker {scenario.get('mode')} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def aps_version() -> str:
    out = subprocess.run(
        [str(ensure_aps_venv()), "-c", "import apscheduler; print(apscheduler.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


# -- PostgreSQL schemas ----------------------------------------------------------------


def postgres_available() -> bool:
    try:
        import psycopg2

        psycopg2.connect(POSTGRES_DSN, connect_timeout=3).close()
    except Exception as exc:
        log(f"PostgreSQL at {POSTGRES_DSN} unreachable, its rows are skipped: {exc}")
        return False
    return True


@contextlib.contextmanager
def postgres_schema(prefix: str = "jobd_bench") -> Iterator[str]:
    """A fresh schema for one measurement, dropped afterwards; yields its store URL."""
    import psycopg2

    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(POSTGRES_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in POSTGRES_DSN else "?"
        yield f"{POSTGRES_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with conn.cursor() as cur:
            # Every daemon of the measurement has exited by now; never wait forever.
            cur.execute("SET lock_timeout = '30s'")
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


def jobd_argv() -> list[str]:
    script = Path(sys.executable).with_name("jobd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobd"]
