"""Store URLs → connected peewee databases, with each backend's specifics."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from urllib.parse import urlsplit, urlunsplit

import peewee as pw

from jobd.errors import StoreUnavailable, first_line
from jobd.store.drivers import orm_has_postgres
from jobd.store.files import check_store_files, missing_store
from jobd.store.urls import backend_of, mask_url, sqlite_path

SQLITE_BUSY_TIMEOUT_MS = 15_000


class SqliteStore(pw.SqliteDatabase):
    def rollback(self) -> None:
        # SQLite ends a transaction by itself on some errors ("database or disk is
        # full", I/O errors); a ROLLBACK after that fails with "no transaction is
        # active", and that error replaced the one the operator needs to see.
        if not self.is_closed() and not self.connection().in_transaction:
            return
        super().rollback()


def connect(url: str, create: bool = True) -> pw.Database:
    """`create`: make a SQLite store that does not exist yet (else StoreUnavailable)."""
    backend = backend_of(url)
    if backend == "sqlite":
        return _connect_sqlite(sqlite_path(url), url, create)
    return _connect_postgres(url)


def _connect_sqlite(path: str, url: str, create: bool = True) -> pw.Database:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise StoreUnavailable(f"store {url}: directory {directory} does not exist")
    check_store_files(path)
    # The database and its -wal/-shm hold job output and env-derived data: 0600.
    old_umask = os.umask(0o077)
    try:
        if not os.path.lexists(path):
            if not create:
                raise missing_store(path)
            try:
                flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                os.close(os.open(path, flags, 0o600))
            except FileExistsError:
                pass  # another process created it first
            except OSError as exc:
                raise StoreUnavailable(f"store {url}: cannot create: {exc.strerror}") from None
        db = SqliteStore(
            path,
            # journal_mode is set once the file is known to be a jobd store: the
            # switch to WAL rewrites the header of whatever database it is.
            pragmas={
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "synchronous": "normal",
                "foreign_keys": 0,
            },
            # Every write transaction takes the write lock up front, so a reader
            # never has to upgrade and fail with "database is locked".
            lock_type="IMMEDIATE",
            check_same_thread=False,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        _connect_waiting_for_writers(db, url)
    finally:
        os.umask(old_umask)
    return db


def _connect_waiting_for_writers(db: pw.SqliteDatabase, url: str) -> None:
    """Connect, retrying while another connection holds the write lock.

    Switching a new file to WAL needs a write lock, and SQLite refuses it at once
    instead of honouring the busy timeout; several processes creating the store
    together would otherwise see "database is locked".
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            db.connect(reuse_if_open=True)
            _refuse_foreign(db, url)
            db.execute_sql("PRAGMA journal_mode = wal")
            return
        except StoreUnavailable:
            db.close()
            raise
        except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
            with contextlib.suppress(Exception):
                db.close()
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise StoreUnavailable(f"store {url}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _refuse_foreign(db: pw.SqliteDatabase, url: str) -> None:
    """Another program's SQLite database is refused before anything is written to it."""
    tables = {
        row[0] for row in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if tables and "jobd_schema" not in tables:
        shown = ", ".join(sorted(tables)[:3])
        raise StoreUnavailable(
            f"store {url} is not a jobd store (it has other tables: {shown}); refusing to modify it"
        )


def _connect_postgres(url: str) -> pw.Database:
    # Here, not at the top: playhouse.db_url imports every backend's extensions and
    # their drivers, megabytes a daemon on SQLite never uses.
    from playhouse.db_url import connect as url_connect

    if not orm_has_postgres():
        raise StoreUnavailable(
            f"store {mask_url(url)}: this process loaded its store layer for SQLite only"
        )
    from jobd.store.pgwire import ReconnectingPostgres

    parts = urlsplit(url.replace("postgres://", "postgresql://", 1))
    db = url_connect(urlunsplit(parts._replace(scheme="postgresql")))
    params = dict(db.connect_params)
    params.setdefault("connect_timeout", 5)
    params.setdefault("application_name", "jobd")
    db = ReconnectingPostgres(db.database, **params)
    try:
        db.connect(reuse_if_open=True)
    except pw.OperationalError as exc:
        first = first_line(exc, "connection failed")
        raise StoreUnavailable(f"store {mask_url(url)}: {first}") from None
    return db
