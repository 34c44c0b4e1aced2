"""What differs between SQLite and PostgreSQL, and nothing else.

The Store and its parts never ask which backend they are on: they call the
dialect. The SQL texts themselves are in jobd.store.queries; here is how each
backend runs them (placeholders, batching, statements held for the next round
trip), its locks, its wake-up, and the files a SQLite store keeps beside it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import peewee as pw

from jobd.core.timeutil import from_db
from jobd.store import files
from jobd.store import queries as q
from jobd.store.queries import Query
from jobd.store.urls import sqlite_path

BATCH = 500  # rows per statement or IN list in batched writes
MIGRATE_LOCK = zlib.crc32(b"jobd-migrate")


def in_list(sql: str, count: int, param: str) -> str:
    return sql.replace("{in}", ", ".join([param] * count))


class Dialect:
    """The statements both backends run alike; the subclasses say the rest."""

    name: str
    param: str

    def __init__(self, db: pw.Database, url: str) -> None:
        self.db = db
        self.url = url

    # -- running statements ----------------------------------------------------------

    def sql(self, query: Query) -> str:
        return query.text(self.name)

    def text(self, query: Query, doomed: Query | None = None, **lists: int) -> str:
        """The text of `query` with its `{doomed}` filled by that fragment (see
        queries.py) and each named IN list (`{in}`, `{final}`) with that many
        placeholders. The caller's parameters follow the statement's order."""
        sql = self.sql(query)
        if doomed is not None:
            sql = sql.replace("{doomed}", self.sql(doomed))
        for name, count in lists.items():
            sql = sql.replace("{" + name + "}", ", ".join([self.param] * count))
        return sql

    def run(self, query: Query, params: Sequence[Any] = ()) -> Any:
        """Execute through peewee's connection; returns the cursor."""
        return self.db.execute_sql(self.sql(query), params)

    def one(self, query: Query, params: Sequence[Any] = ()) -> Any:
        return self.run(query, params).fetchone()

    def all(self, query: Query, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.run(query, params).fetchall())

    def run_in(
        self,
        query: Query,
        values: Sequence[Any],
        before: Sequence[Any] = (),
        after: Sequence[Any] = (),
    ) -> list[Any]:
        """Rows of `query`, whose `{in}` is an IN list of `values`, run in chunks. The
        hot paths read hundreds of rows by key: straight through the driver, this is
        several times cheaper than building and iterating a query object."""
        rows: list[Any] = []
        for start in range(0, len(values), BATCH):
            chunk = list(values[start : start + BATCH])
            sql = in_list(self.sql(query), len(chunk), self.param)
            cursor = self.db.execute_sql(sql, [*before, *chunk, *after])
            if cursor.description is not None:
                rows += cursor.fetchall()
        return rows

    def later_in(self, query: Query, values: Sequence[Any], after: Sequence[Any] = ()) -> None:
        """As run_in, for a write whose result nobody reads (see later())."""
        for start in range(0, len(values), BATCH):
            chunk = list(values[start : start + BATCH])
            sql = in_list(self.sql(query), len(chunk), self.param)
            self._later(sql, [*chunk, *after])

    def later(self, query: Query, params: Sequence[Any] = ()) -> None:
        """A write inside a transaction whose result nobody reads."""
        self._later(self.sql(query), params)

    def _later(self, sql: str, params: Sequence[Any]) -> None:
        raise NotImplementedError

    def run_all_in(self, query: Query, values: Sequence[Any], after: Sequence[Any] = ()) -> list:
        """As run_in, in one statement: for a query whose LIMIT spans the whole list."""
        sql = in_list(self.sql(query), len(values), self.param)
        return list(self.db.execute_sql(sql, [*values, *after]).fetchall())

    def now(self) -> datetime:
        """The database's clock, aware UTC: the one clock all hosts share."""
        moment = from_db(self.one(q.CLOCK)[0])
        assert moment is not None
        return moment

    # -- what the subclasses decide --------------------------------------------------------

    def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many rows, a write whose results nobody reads: one
        call into the driver, not one per row."""
        raise NotImplementedError

    def insert_fires(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert runs (NEW_RUN_COLUMNS), ignoring a slot already recorded; how many were new."""
        raise NotImplementedError

    def end_runs(self, ends: Sequence[tuple[Any, ...]]) -> set[int]:
        """Record many ends (END_RUNS); the ids whose end was recorded. Rows are
        (id, instance, status, exit_code, signal, error, finished_at, duration_s)."""
        raise NotImplementedError

    def lock(self, key: int) -> None:
        """Inside a transaction: serialize it with others taking `key`."""

    def relax_commit(self) -> None:
        """This transaction's commit need not wait for the flush to disk."""

    def notify(self) -> None:
        """Wake the daemons listening on the database, now."""

    def notify_at_commit(self) -> None:
        """Wake the daemons listening on the database when this transaction commits."""

    @property
    def wakes_by_socket(self) -> bool:
        """Whether daemons are woken by a poke after commit (not by the database)."""
        return False

    def lock_jobs(self, names: Sequence[str]) -> None:
        """Inside a claim: serialize claimers of these exclusive jobs."""

    def running_jobs_and_clock(self, names: Sequence[str]) -> tuple[set[str], datetime]:
        """The jobs among `names` with a running run, and the store's clock."""
        rows = self.run_in(q.RUNNING_JOBS, names, before=("running",))
        return {row[0] for row in rows}, self.now()

    def claim_moment(self, now: datetime | None, store_now: Callable[[], datetime]) -> Any:
        """The instant a claim takes runs as due by: the caller's `now`, else the
        store's clock (None: read in the claim's statement itself)."""
        return now

    def advance_one_by_one(self, slots: int, jobs: int) -> bool:
        """Whether jobs' next fires move one UPDATE each rather than per slot."""
        return True

    def lease_ttl(self, ttl: float) -> Any:
        return ttl

    def limit_waits(self, seconds: float, stopping: Callable[[], bool]) -> None:
        """Bound every wait for the store (SQLite's busy timeout does already)."""

    def lock_dir(self) -> str | None:
        """Where the instances' liveness locks are (SQLite), else None."""
        return None

    def wake_dirs(self) -> tuple[str, ...]:
        """The directories of the daemons' wake sockets (SQLite), else none."""
        return ()

    def wake_dir(self) -> str | None:
        return None


class SqliteDialect(Dialect):
    name = "sqlite"
    param = "?"

    def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.db.cursor().executemany(self.sql(query), rows)

    def _later(self, sql: str, params: Sequence[Any]) -> None:
        self.db.execute_sql(sql, params)

    def insert_fires(self, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        cursor = self.db.cursor()
        cursor.executemany(self.sql(q.FIRES_INSERT), rows)
        return int(cursor.rowcount)

    def end_runs(self, ends: Sequence[tuple[Any, ...]]) -> set[int]:
        if not ends:
            return set()
        # This transaction took the write lock when it began, so the rows read
        # before are still as they were and every conditional UPDATE applies.
        self.db.cursor().executemany(
            self.sql(q.END_RUNS),
            [
                (st, code, sig, err, fin, dur, rid, inst)
                for rid, inst, st, code, sig, err, fin, dur in ends
            ],
        )
        return {row[0] for row in ends}

    @property
    def wakes_by_socket(self) -> bool:
        return True

    def claim_moment(self, now: datetime | None, store_now: Callable[[], datetime]) -> Any:
        # SQLite's clock is in-process: asking first costs no round trip.
        return now if now is not None else store_now()

    def advance_one_by_one(self, slots: int, jobs: int) -> bool:
        # Jobs fired together mostly move to the same slots (the same schedule):
        # one UPDATE per 500 of them then. (One writer at a time: an IN list
        # locks nothing here.)
        return slots * 4 > jobs

    def lease_ttl(self, ttl: float) -> Any:
        return f"{ttl:.3f}"

    def lock_dir(self) -> str | None:
        return files.instances_dir(sqlite_path(self.url))

    def wake_dir(self) -> str | None:
        return files.wake_dir(sqlite_path(self.url))

    def wake_dirs(self) -> tuple[str, ...]:
        path = sqlite_path(self.url)
        # A daemon not restarted since the companions moved listens in the old place.
        return (files.wake_dir(path), files.legacy_wake_dir(path))


class PostgresDialect(Dialect):
    name = "postgresql"
    param = "%s"

    def executemany(self, query: Query, rows: Sequence[Sequence[Any]]) -> None:
        # Up to a batch of them inside a transaction ride on its next round trip
        # (see pgwire).
        if not rows:
            return
        if len(rows) <= BATCH and self.db.in_transaction():
            self.db.hold(self.sql(query), rows)
            return
        from psycopg2.extras import execute_batch

        execute_batch(self.db.cursor(), self.sql(query), rows, page_size=BATCH)

    def _later(self, sql: str, params: Sequence[Any]) -> None:
        # Rides with the transaction's next statement: nothing waits for its answer.
        self.db.hold(sql, [tuple(params)])

    def insert_fires(self, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        from psycopg2.extras import execute_values

        returned = execute_values(
            self.db.cursor(), self.sql(q.FIRES_INSERT), rows, page_size=BATCH, fetch=True
        )
        return len(returned)

    def end_runs(self, ends: Sequence[tuple[Any, ...]]) -> set[int]:
        if not ends:
            return set()
        from psycopg2.extras import execute_values

        returned = execute_values(
            self.db.cursor(),
            self.sql(q.END_RUNS),
            ends,
            template=q.END_RUNS_ROW,
            page_size=BATCH,
            fetch=True,
        )
        return {row[0] for row in returned}

    def lock(self, key: int) -> None:
        self.run(q.ADVISORY_LOCK, (key,))

    def relax_commit(self) -> None:
        # Should the server crash before the flush, the runs and their jobs' next
        # fires are lost together, and the slots fire again. A claim of these
        # runs waits for its own flush, which writes this transaction's too: no
        # run starts from a fire that could still be lost.
        self.db.hold(self.sql(q.RELAXED_COMMIT))

    def notify(self) -> None:
        self.run(q.NOTIFY, (q.WAKE_CHANNEL,))

    def notify_at_commit(self) -> None:
        # PostgreSQL delivers a NOTIFY at commit, and only if the transaction
        # commits: it goes with the COMMIT, no round trip of its own.
        self.later(q.NOTIFY, (q.WAKE_CHANNEL,))

    def lock_jobs(self, names: Sequence[str]) -> None:
        # Its rows are not read: it goes with the next statement, still a statement
        # of its own whose snapshot (read committed) sees what the lock waited for.
        self.later(q.LOCK_JOBS, (list(names),))

    def running_jobs_and_clock(self, names: Sequence[str]) -> tuple[set[str], datetime]:
        clock, running = self.one(q.RUNNING_JOBS_AND_CLOCK, ("running", list(names)))
        moment = from_db(clock)
        assert moment is not None
        return set(running), moment

    def limit_waits(self, seconds: float, stopping: Callable[[], bool]) -> None:
        from jobd.store.pgwire import bound_waits

        bound_waits(seconds, stopping)
        self.db.limit_waits(seconds)


def dialect_for(backend: str, db: pw.Database, url: str) -> Dialect:
    return (SqliteDialect if backend == "sqlite" else PostgresDialect)(db, url)
