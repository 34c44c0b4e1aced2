"""How long `jobd executions` takes as a whole process, against the bare driver.

    python bench/cli_latency.py                 # 1,000,000 runs over 100 jobs
    python bench/cli_latency.py --rows 200000
    python bench/cli_latency.py --quick         # 50,000 runs, 5 timings each

Fills a SQLite store (and, when reachable, a fresh PostgreSQL schema at
$JOBD_TEST_POSTGRES_DSN) through jobd's own migrations, generating the rows in
the database itself (a recursive CTE, generate_series), then times two
commands as separate processes, the way a person or a script runs them:

    jobd executions --limit 10
    jobd executions --job job_042 --limit 10

with the store named by $JOBD_STORE (and the second once more with the store
named in a jobd.toml), against a baseline process on the same interpreter
that only imports the driver (sqlite3, psycopg2), runs the same query and
prints the rows. jobd's own bytecode is compiled first, as pip does. Each
figure is the median of N runs, the two processes alternating. Targets: jobd
at most 2x the baseline on SQLite and 2.5x on PostgreSQL.

A plain script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

JOBS = 100
TARGETS = {"sqlite": 2.0, "postgresql": 2.5}
COLUMNS = (
    "id, job, trigger, scheduled_for, queued_at, started_at, finished_at, duration_s, status, "
    "exit_code, signal, attempt, error, instance, host, pid, triggered_by"
)
BASELINE = {
    "sqlite": (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "rows = conn.execute(sys.argv[2], sys.argv[3:]).fetchall()\n"
        "print('\\n'.join(map(repr, rows)))\n"
    ),
    "postgresql": (
        "import psycopg2, sys\n"
        "conn = psycopg2.connect(sys.argv[1])\n"
        "cur = conn.cursor()\n"
        "cur.execute(sys.argv[2].replace('?', '%s'), sys.argv[3:])\n"
        "print('\\n'.join(map(repr, cur.fetchall())))\n"
    ),
}

# One statement per backend that makes `rows` runs: job_000..job_099 round robin,
# one a minute going back from now, mostly succeeded, some failed or timed out.
FILL_SQLITE = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
INSERT INTO executions (job, trigger, scheduled_for, queued_at, not_before, started_at,
    finished_at, duration_s, status, exit_code, attempt, instance, host, pid,
    cancel_requested, log, log_bytes)
SELECT printf('job_%03d', i % {jobs}), 'schedule', t, t, t, t,
       strftime('%Y-%m-%d %H:%M:%f', t, '+2 seconds'), 2.0,
       CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'timed_out' ELSE 'succeeded' END,
       CASE WHEN i % 50 = 0 THEN 1 WHEN i % 97 = 0 THEN NULL ELSE 0 END,
       1, 'bench', 'bench-host', 1000 + i % 30000, 0, 'done\n', 5
FROM (SELECT i, strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%d minutes', {rows} - i)) AS t
      FROM n)
"""
FILL_POSTGRES = """
INSERT INTO executions (job, trigger, scheduled_for, queued_at, not_before, started_at,
    finished_at, duration_s, status, exit_code, attempt, instance, host, pid,
    cancel_requested, log, log_bytes)
SELECT 'job_' || lpad((i % {jobs})::text, 3, '0'), 'schedule', t, t, t, t,
       t + interval '2 seconds', 2.0,
       CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'timed_out' ELSE 'succeeded' END,
       CASE WHEN i % 50 = 0 THEN 1 WHEN i % 97 = 0 THEN NULL ELSE 0 END,
       1, 'bench', 'bench-host', 1000 + i % 30000, false, E'done\\n', 5
FROM (SELECT i, (now() AT TIME ZONE 'utc') - make_interval(mins => {rows} - i) AS t
      FROM generate_series(1, {rows}) AS i) AS s
"""


def fill(url: str, backend: str, rows: int) -> float:
    """Create the schema with jobd's migrations, then the jobs and runs. Seconds taken."""
    from jobd.core.config.parse import parse_job
    from jobd.core.model import Source
    from jobd.store import open_store

    started = time.perf_counter()
    store = open_store(url)
    now = store.now()
    with store.atomic():
        for number in range(JOBS):
            spec = parse_job(
                f"job_{number:03d}",
                {"schedule": "* * * * *", "command": ["true"]},
                "bench",
                {},
                source=Source.CLI,
            )
            store.upsert_cli_job(spec, now)
    template = FILL_SQLITE if backend == "sqlite" else FILL_POSTGRES
    with store.atomic():
        # The raw cursor, without parameters: psycopg2 would read `%` as placeholders.
        store.db.connection().cursor().execute(template.format(rows=rows, jobs=JOBS))
    store.db.execute_sql("ANALYZE")
    store.close()
    return time.perf_counter() - started


def jobd_argv() -> list[str]:
    script = Path(sys.executable).with_name("jobd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobd"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or not result.stdout:
        sys.exit(f"failed: {' '.join(argv)}\n{result.stderr.decode()}")
    return elapsed


def compare(
    jobd_cmd: list[str], base_cmd: list[str], env: dict[str, str], runs: int
) -> tuple[float, float]:
    timed(jobd_cmd, env)  # warm the page cache and the .pyc files
    timed(base_cmd, env)
    ours, theirs = [], []
    for _ in range(runs):
        ours.append(timed(jobd_cmd, env))
        theirs.append(timed(base_cmd, env))
    return statistics.median(ours), statistics.median(theirs)


def bench(
    backend: str, url: str, target: str, env: dict[str, str], runs: int, workdir: Path
) -> list[list]:
    """Rows of the result table for one backend."""
    query = f"SELECT {COLUMNS} FROM executions"
    # The store as a deployment names it: $JOBD_STORE, or `[jobd] store` in the
    # config file (which then has to be found and read too).
    config = workdir / f"{backend}.toml"
    config.write_text(f'[jobd]\nstore = "{url}"\n')
    by_env = {**env, "JOBD_STORE": url}
    by_file = {**env, "JOBD_CONFIG": str(config)}
    latest = f"{query} ORDER BY id DESC LIMIT 10"
    one_job = f"{query} WHERE job = ? ORDER BY id DESC LIMIT 10"
    cases = [
        ("executions --limit 10", [], latest, [], by_env),
        ("executions --job job_042 --limit 10", ["--job", "job_042"], one_job, ["job_042"], by_env),
        ("  the same, store in jobd.toml", ["--job", "job_042"], one_job, ["job_042"], by_file),
    ]
    rows = []
    for label, extra, sql, params, case_env in cases:
        ours, base = compare(
            [*jobd_argv(), "executions", *extra, "--limit", "10"],
            [sys.executable, "-c", BASELINE[backend], target, sql, *params],
            case_env,
            runs,
        )
        ratio = ours / base
        ok = "ok" if ratio <= TARGETS[backend] else "SLOW"
        rows.append(
            [backend, label, f"{base * 1000:.1f}", f"{ours * 1000:.1f}", f"{ratio:.2f}x",
             f"<= {TARGETS[backend]}x", ok]
        )  # fmt: skip
    return rows


def postgres_schema(dsn: str) -> tuple[str, str] | None:
    try:
        import psycopg2

        conn = psycopg2.connect(dsn, connect_timeout=3)
    except Exception as exc:
        print(f"PostgreSQL at {dsn} unreachable, skipped: {exc}".strip(), file=sys.stderr)
        return None
    schema = f"jobd_bench_{uuid.uuid4().hex[:8]}"
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    conn.close()
    sep = "&" if "?" in dsn else "?"
    return schema, f"{dsn}{sep}options=-csearch_path%3D{schema}"


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="runs to create")
    parser.add_argument("--runs", type=int, default=10, help="timings per command")
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 5 timings")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.runs = min(args.rows, 50_000), min(args.runs, 5)
    dsn = os.environ.get("JOBD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    # pip compiles an installed jobd's bytecode; a checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile every module on every start.
    import compileall

    import jobd

    compileall.compile_dir(str(Path(jobd.__file__).parent), quiet=1)
    workdir = Path(tempfile.mkdtemp(prefix="jobd-bench-"))
    config = workdir / "jobd.toml"
    config.write_text("")
    env = {**os.environ, "JOBD_CONFIG": str(config)}
    env.pop("NO_COLOR", None)
    table = []
    try:
        db = workdir / "jobd.db"
        url = f"sqlite:///{db}"
        print(f"filling SQLite with {args.rows:,} runs ...", file=sys.stderr)
        print(f"  {fill(url, 'sqlite', args.rows):.1f}s", file=sys.stderr)
        table += bench("sqlite", url, str(db), env, args.runs, workdir)
        pg = postgres_schema(dsn)
        if pg is not None:
            schema, pg_url = pg
            try:
                print(f"filling PostgreSQL with {args.rows:,} runs ...", file=sys.stderr)
                print(f"  {fill(pg_url, 'postgresql', args.rows):.1f}s", file=sys.stderr)
                table += bench("postgresql", pg_url, pg_url, env, args.runs, workdir)
            finally:
                drop_schema(dsn, schema)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    headers = ["backend", "command", "baseline ms", "jobd ms", "ratio", "target", ""]
    widths = [max(len(str(r[i])) for r in [headers, *table]) for i in range(len(headers))]
    print(f"{args.rows:,} runs over {JOBS} jobs; median of {args.runs} processes each")
    for row in [headers, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if any(row[-1] != "ok" for row in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
