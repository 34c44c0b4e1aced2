"""`python -m jobd.runs.kinds.sql NAME`: runs a `sql` job's statement in a child process.

The statement, the database URL and the timeout come in through the environment
(JOBD_SQL, JOBD_SQL_DATABASE, JOBD_SQL_TIMEOUT), never the command line, which
any local user can read in /proc. The job's name is in argv only so `ps` shows it.

Output, which becomes the run's log: the server's notices, the first
SQL_ROWS_SHOWN rows and the row count. On an error the last line is
`error: SQLSTATE <code>: <message>` (SQLite: its error name instead of a
SQLSTATE) and the exit status is 1; the runner makes that line the run's error.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jobd.core.config.kinds import fill_placeholders
from jobd.core.masking import Masker
from jobd.core.model import SQL_ROWS_SHOWN
from jobd.core.urls import postgres_url_problem, url_passwords
from jobd.errors import first_line
from jobd.runs.childlog import fail

CELL_CHARS = 200  # one value, in the log
CONNECT_TIMEOUT = 10


def cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "…"


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], total: int | None) -> None:
    """The first rows, psql-like, then the count; `total` None: count while reading."""
    print(" | ".join(columns))
    print("-+-".join("-" * max(1, len(c)) for c in columns))
    shown = counted = 0
    for row in rows:
        counted += 1
        if shown < SQL_ROWS_SHOWN:
            print(" | ".join(cell(v) for v in row))
            shown += 1
        elif total is not None:
            break  # the driver knows the count already; stop reading
    count = counted if total is None else total
    if count > shown:
        print(f"… {count - shown} more row{'s' if count - shown != 1 else ''} not shown")
    print(f"({count} row{'s' if count != 1 else ''})", flush=True)


def run_postgres(url: str, statement: str, timeout: float, mask: Masker) -> int:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras

    # Waiting in Python, so a signal can interrupt a running statement: wait_select
    # turns KeyboardInterrupt into a cancel request, and the server stops it.
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        conn = psycopg2.connect(
            url, connect_timeout=CONNECT_TIMEOUT, application_name="jobd sql job"
        )
    except psycopg2.Error as exc:
        first = first_line(exc, "connection failed")
        return fail(f"cannot connect: {first}", mask)
    conn.autocommit = True  # as pg_cron: no transaction left open, VACUUM works
    try:
        with conn.cursor() as cur:
            if timeout > 0:
                # The server stops the statement itself when the run times out.
                limit = f"{math.ceil(timeout * 1000)}ms"
                cur.execute("SELECT set_config('statement_timeout', %s, false)", (limit,))
            try:
                cur.execute(statement)
            except psycopg2.Error as exc:
                print_notices(conn.notices, mask)
                for line in (exc.pgerror or "").strip().splitlines()[1:]:
                    print(mask(line))  # LINE, DETAIL, HINT, CONTEXT
                message = exc.diag.message_primary or str(exc).strip() or type(exc).__name__
                return fail(f"SQLSTATE {exc.pgcode or '?????'}: {message}", mask)
            print_notices(conn.notices, mask)
            if cur.description is not None:
                columns = [d.name for d in cur.description]
                print_rows(columns, iter(cur.fetchone, None), cur.rowcount)
            print(cur.statusmessage, flush=True)
    finally:
        conn.close()
    return 0


def print_notices(notices: list[str], mask: Masker) -> None:
    for notice in notices:
        print(mask(notice.rstrip()))
    notices.clear()


def run_sqlite(path: str, statement: str) -> int:
    import sqlite3

    if not Path(path).is_file():
        return fail(f"no SQLite database at {path}")
    try:
        conn = sqlite3.connect(Path(path).as_uri() + "?mode=rw", uri=True, timeout=15)
    except sqlite3.Error as exc:
        return fail(f"cannot open {path}: {exc}")
    conn.isolation_level = None  # autocommit, as on PostgreSQL
    try:
        try:
            cur = conn.execute(statement)
        except sqlite3.ProgrammingError as exc:
            if "one statement at a time" not in str(exc):
                return fail(f"SQLite: {exc}")
            conn.executescript(statement)  # several statements: a script, without rows
            print("script executed", flush=True)
            return 0
        if cur.description is not None:
            print_rows([d[0] for d in cur.description], cur, None)
        else:
            print(f"({max(cur.rowcount, 0)} rows changed)", flush=True)
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        return fail(f"{name}: {exc}")
    finally:
        conn.close()
    return 0


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # see run_postgres
    statement = os.environ.get("JOBD_SQL", "")
    url = os.environ.get("JOBD_SQL_DATABASE", "")
    timeout = float(os.environ.get("JOBD_SQL_TIMEOUT") or 0)
    if not url:
        return fail(
            'no database: set `database` (a URL, a [databases] name, or "store" for '
            "jobd's own PostgreSQL store)"
        )
    try:
        url, secrets = fill_placeholders(url, os.environ)
    except KeyError as exc:
        return fail(f"database: ${{{exc.args[0]}}} is not set in the job's environment")
    if url.startswith("sqlite:///"):
        return run_sqlite(url[len("sqlite:///") :], statement)
    masker = Masker([*secrets, *url_passwords(url)], url_passwords=True)
    problem = postgres_url_problem(url)
    if problem is not None:  # once filled in: libpq would quote it whole
        return fail(f"database: {problem}", masker)
    return run_postgres(url, statement, timeout, masker)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # SIGTERM outside a statement: the run was stopped
        sys.exit(128 + signal.SIGTERM)
