"""The store: every fact jobd keeps, behind one small API.

Store is a facade over its parts, one module per concern: jobs and fires
(jobs.py), runs (runs.py), instances and lost runs (instances.py), the leader
lease (lease.py). Every statement is named in queries.py; what differs between
SQLite and PostgreSQL is in dialect.py, and nothing here asks which backend it
is on. Transactions are short and explicit. On SQLite they begin IMMEDIATE (see
connect.py); on PostgreSQL claims use FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import peewee as pw

from jobd.core.timeutil import from_db, to_db
from jobd.errors import StoreUnavailable, first_line
from jobd.store import queries as q
from jobd.store.connect import backend_of, connect, mask_url
from jobd.store.dialect import MIGRATE_LOCK, dialect_for
from jobd.store.instances import HostHooks, InstancesPart
from jobd.store.jobs import ApplyReport, DueJobs, JobRecord, JobsPart
from jobd.store.lease import LeaseLost, LeaseOps, LeaseState
from jobd.store.migrations import SCHEMA_VERSION, migrate
from jobd.store.runs import RunsPart
from jobd.store.schema import build_models
from jobd.store.specs import SpecCache

STORE_ERRORS = (pw.OperationalError, pw.InterfaceError, sqlite3.OperationalError)


class Store(JobsPart, RunsPart, InstancesPart, LeaseOps):
    def __init__(self, db: pw.Database, url: str, hooks: HostHooks | None = None) -> None:
        self.db = db
        self.url = url
        self.backend = backend_of(url)
        self.dialect = dialect_for(self.backend, db, url)
        self.hooks = hooks or HostHooks()
        self.m = build_models(db)  # the schema, for migrations (and tests' set-ups)
        self.specs = SpecCache()  # parsed specs, forgotten by the daemon after each tick
        # A wake-up owed to the daemons once the enclosing transaction commits (SQLite).
        self._wake_owed = False

    # -- lifecycle ---------------------------------------------------------

    def migrate(self) -> int:
        return migrate(self.db, self.m, mask_url(self.url), self._migration_lock)

    def _migration_lock(self) -> None:
        self.dialect.lock(MIGRATE_LOCK)

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        try:
            with self.db.atomic():
                yield
        except BaseException:
            if not self.db.in_transaction():
                self._wake_owed = False  # rolled back: nothing changed
            raise
        if self._wake_owed and not self.db.in_transaction():
            self._wake_owed = False
            self._wake_after_commit()

    def now(self) -> datetime:
        """The database's clock, aware UTC: the one clock all hosts share.

        On PostgreSQL this is clock_timestamp(), not now(): see queries.py."""
        return self.dialect.now()

    def limit_waits(self, seconds: float, stopping: Callable[[], bool]) -> None:
        """For the daemon: no wait for the store lasts more than about `seconds`
        (`stopping()`: much less), so a stalled PostgreSQL server or network is
        noticed, and signals are answered, instead of blocking the loop. SQLite is
        a local file, whose waits its busy timeout bounds."""
        self.dialect.limit_waits(seconds, stopping)
        self.reset_connection()  # the next connection carries the settings

    def reset_connection(self) -> None:
        """Drop a connection that may be broken; the next query reconnects."""
        with suppress(Exception):
            self.db.close()

    # -- waking daemons --------------------------------------------------------

    def wake_dir(self) -> str | None:
        """SQLite: a directory of per-daemon sockets beside the database."""
        return self.dialect.wake_dir()

    def wake_daemons(self) -> None:
        """Tell running daemons that there is new work, so they need not poll."""
        self.dialect.notify()
        self._wake_after_commit()

    @contextmanager
    def _moving_fires(self) -> Iterator[list[bool]]:
        """A transaction that can move jobs' next fires (pause, resume, schedule,
        unschedule, applying a config): the daemons are woken when it commits, so a
        daemon asleep until its next known fire learns of an earlier one at once.

        The caller may append False to the yielded list when it changed nothing."""
        changed: list[bool] = []
        with self.atomic():
            yield changed
            if all(changed):
                self._wake_in_transaction()
                # Read by atomic() once the outermost transaction has committed:
                # a daemon woken before that would read the jobs as they were.
                self._wake_owed = self.dialect.wakes_by_socket

    def _wake_in_transaction(self) -> None:
        self.dialect.notify_at_commit()

    def _wake_after_commit(self) -> None:
        directories = self.dialect.wake_dirs()
        if directories:
            self.hooks.wake(directories)

    # -- audit ------------------------------------------------------------------

    def audit(
        self,
        action: str,
        actor: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        text = json.dumps(detail, sort_keys=True) if detail else None
        self.dialect.run(q.AUDIT, (to_db(self.now()), action, actor, target, text))

    def audit_events(
        self, limit: int = 20, targets: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; with `targets`, only the events about these (an API tenant's jobs)."""
        if targets is None:
            rows = self.dialect.all(q.AUDIT_EVENTS, (limit,))
        elif not targets:
            return []
        else:
            rows = self.dialect.run_all_in(q.AUDIT_EVENTS_OF, list(targets), after=(limit,))
        events = []
        for row in rows:
            event = dict(zip(q.AUDIT_COLUMNS, row, strict=True))
            event["at"] = from_db(event["at"])
            event["detail"] = json.loads(event["detail"]) if event["detail"] else None
            events.append(event)
        return events

    # -- API tokens (jobd.ops.tokens) -------------------------------------------

    def _token_rows(self, query: q.Query, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(zip(q.TOKEN_COLUMNS, r, strict=True)) for r in self.dialect.all(query, params)]

    def tokens(self) -> list[dict[str, Any]]:
        """Every API token's row (TOKEN_COLUMNS), by name."""
        return self._token_rows(q.TOKENS)

    def token(self, name: str | None = None, key_id: str | None = None) -> dict[str, Any] | None:
        """The token with this name, or this key id."""
        rows = (
            self._token_rows(q.TOKEN, (name,))
            if name
            else self._token_rows(q.TOKEN_BY_KEY, (key_id,))
        )
        return rows[0] if rows else None

    def add_token(self, row: dict[str, Any]) -> None:
        self.dialect.run(q.TOKEN_INSERT, [row[c] for c in q.TOKEN_COLUMNS])

    def delete_token(self, name: str) -> bool:
        """Whether there was one to delete."""
        return bool(self.dialect.run(q.TOKEN_DELETE, (name,)).rowcount)


def open_store(
    url: str, migrate_schema: bool = True, create: bool = True, hooks: HostHooks | None = None
) -> Store:
    """Connect, check the schema, and migrate it forward. Raises StoreUnavailable.

    `create`: make a SQLite store that does not exist yet; commands that only read
    pass False, so that they never leave an empty store where one vanished.
    `hooks`: what the store asks of its host (jobd.system.hooks.HOST for the real
    ones: wake-up pokes, liveness locks)."""
    db = connect(url, create)
    store = Store(db, url, hooks)
    try:
        if migrate_schema:
            store.migrate()
    except StoreUnavailable:
        store.close()
        raise
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        store.close()
        first = first_line(exc, "database error")
        raise StoreUnavailable(f"store {mask_url(url)}: {first}") from None
    return store


__all__ = [
    "STORE_ERRORS",
    "ApplyReport",
    "DueJobs",
    "HostHooks",
    "JobRecord",
    "LeaseLost",
    "LeaseState",
    "Store",
    "open_store",
]
