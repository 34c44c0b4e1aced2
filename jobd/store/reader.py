"""Read-only history queries over the bare DB-API driver, for one-shot commands.

`jobd executions` and `jobd show` are typed at a prompt and run by scripts in
loops. Importing peewee (which imports psycopg2 whatever the backend) and
building the models costs several times the query itself, so these commands
read through this module instead: the driver only (sqlite3 or psycopg2), one
connection, a few statements that use the indexes schema.py declares. The
statements are the Store's own, named in queries.py (a history page is
queries.runs_page for both); this module only runs them. Writes, and every
other read, go through Store. bench/cli_latency.py measures the gain.

The reader trusts only a store at the schema version the statements are
written for: open_reader() returns None for any other version (or a missing
database), and the caller opens the full Store, which migrates an older store
or refuses a newer one, then tries again. Tests check the column lists against
model.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobd.core.records import DETAIL_KEYS, RUN_KEYS
from jobd.core.timeutil import from_db, to_db
from jobd.errors import StoreUnavailable, first_line
from jobd.store import queries as q
from jobd.store.queries import SCHEMA_VERSION, STATE_COLUMNS, Query, runs_page

__all__ = ["SCHEMA_VERSION", "STATE_COLUMNS", "Reader"]

_TIMES = frozenset(
    ("scheduled_for", "queued_at", "started_at", "finished_at", "not_before", "at", "next_fire_at")
)


class Reader:
    """A DB-API connection and the history queries; rows are dicts, times aware UTC."""

    def __init__(self, conn: Any, backend: str, owned: bool = True) -> None:
        self.conn = conn
        self.backend = backend
        self._owned = owned
        self._data_version: int | None = None

    @classmethod
    def over(cls, store: Any) -> Reader:
        """Read through an open Store's connection (peewee runs it in autocommit)."""
        return cls(store.db.connection(), store.backend, owned=False)

    def close(self) -> None:
        if self._owned:
            self.conn.close()

    # -- plumbing ------------------------------------------------------------

    def _query(self, query: Query | str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a named query (queries.py), or of a text already in this
        backend's placeholders."""
        sql = query.text(self.backend) if isinstance(query, Query) else query
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql, tuple(params))
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def _rows(
        self, columns: Sequence[str], query: Query | str, params: Sequence[Any]
    ) -> list[dict]:
        return [self._row(columns, values) for values in self._query(query, params)]

    @staticmethod
    def _row(columns: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
        row = dict(zip(columns, values, strict=True))
        for key in _TIMES.intersection(row):
            row[key] = from_db(row[key])
        if "cancel_requested" in row:
            row["cancel_requested"] = bool(row["cancel_requested"])
        return row

    def schema_version(self) -> int:
        """The store's version; 0 when it has no schema table yet."""
        try:
            rows = self._query(q.SCHEMA_VERSION_READ)
        except Exception as exc:
            if _missing_table(exc):
                return 0
            raise
        return int(rows[0][0] or 0)

    def changed(self) -> bool:
        """Whether the store may have changed since the last call.

        On SQLite `PRAGMA data_version` moves when another connection commits,
        without reading a page, so a waiting command can check it every few
        milliseconds. PostgreSQL has no such counter on a plain connection; the
        caller polls at its interval instead.
        """
        if self.backend != "sqlite":
            return True
        version = self._query(q.DATA_VERSION)[0][0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    # -- jobs ----------------------------------------------------------------

    def job_exists(self, name: str) -> bool:
        """Whether the store knows the job, removed or not: its history stays readable."""
        return bool(self._query(q.JOB_EXISTS, (name,)))

    def job_names(self) -> list[str]:
        return [r[0] for r in self._query(q.JOB_NAMES)]

    # -- executions ----------------------------------------------------------

    def executions(
        self,
        job: str | None = None,
        statuses: Sequence[str] = (),
        since: datetime | None = None,
        limit: int | None = 10,
        before: int | None = None,
        jobs: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first. With a job, the (job, id) index serves filter and order.

        `before` is a page's cursor: only ids below it, so that runs queued
        meanwhile never shift a page. `jobs` keeps only these jobs' runs."""
        filters: list[tuple[str, Any]] = []
        if job is not None:
            filters.append(("job", job))
        if jobs is not None:
            if not jobs:
                return []
            filters.append(("jobs", list(jobs)))
        if before is not None:
            filters.append(("before", before))
        if statuses:
            filters.append(("statuses", list(statuses)))
        if since is not None:
            filters.append(("since", _param(to_db(since), self.backend)))
        sql, params = runs_page(self.backend, RUN_KEYS, filters, limit)
        return self._rows(RUN_KEYS, sql, params)

    def execution(self, run_id: int, with_log: bool = True) -> dict[str, Any] | None:
        columns = RUN_KEYS + DETAIL_KEYS
        if not with_log:
            columns = tuple(c for c in columns if c != "log")
        sql, params = runs_page(self.backend, columns, [("run", run_id)], None)
        rows = self._rows(columns, sql, params)
        return rows[0] if rows else None

    def run_state(self, run_id: int) -> dict[str, Any] | None:
        rows = self._rows(STATE_COLUMNS, q.RUN_STATE, (run_id,))
        return rows[0] if rows else None

    def log(self, run_id: int) -> tuple[str, int]:
        """The kept tail and the total bytes of output seen, read together."""
        rows = self._query(q.RUN_LOG, (run_id,))
        if not rows:
            return "", 0
        return rows[0][0] or "", int(rows[0][1] or 0)


def _param(value: datetime | None, backend: str) -> Any:
    # peewee writes SQLite datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text;
    # comparing with the same text keeps the comparison lexical and exact.
    if backend == "sqlite" and value is not None:
        return str(value)
    return value


def _missing_table(exc: Exception) -> bool:
    text = str(exc).lower()
    return "no such table" in text or "does not exist" in text


def open_reader(url: str) -> Reader | None:
    """A reader on the store at `url`, or None when the full Store must open it first.

    Raises StoreUnavailable when the database cannot be reached at all.
    """
    from jobd.store.urls import backend_of, mask_url, sqlite_path

    backend = backend_of(url)
    if backend == "sqlite":
        path = sqlite_path(url)
        if not os.path.isfile(path):
            return None  # the full Store says there is none, or creates it
        from jobd.store.files import check_store_files

        check_store_files(path)
        import sqlite3

        try:
            conn = sqlite3.connect(path, timeout=15.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 15000")
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"store {url}: {exc}") from None
        errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
    else:
        import psycopg2

        try:
            conn = psycopg2.connect(url, connect_timeout=5, application_name="jobd")
        except psycopg2.Error as exc:
            first = first_line(exc, "connection failed")
            raise StoreUnavailable(f"store {mask_url(url)}: {first}") from None
        conn.autocommit = True
        errors = (psycopg2.DatabaseError,)
    reader = Reader(conn, backend)
    try:
        version = reader.schema_version()
    except errors as exc:
        reader.close()
        first = first_line(exc, "database error")
        raise StoreUnavailable(f"store {mask_url(url)}: {first}") from None
    if version != SCHEMA_VERSION:
        reader.close()
        return None
    return reader
