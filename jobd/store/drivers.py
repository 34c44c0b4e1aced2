"""Which database drivers the ORM loads.

peewee imports psycopg2 (and with it ssl) whenever it is installed, whatever the
backend: about 6 MiB of a SQLite daemon's memory for a driver it never calls. A
`jobd` command opens one store for its whole life, so when that store is SQLite
the ORM is loaded with the PostgreSQL drivers hidden. Other processes (tests, code
that embeds jobd) may open both kinds of store, and load peewee as it comes.
"""

from __future__ import annotations

import importlib
import sys

POSTGRES_DRIVERS = ("psycopg2", "psycopg", "psycopg2cffi")

# Set by jobd.cli.main(): this process is one command, and it opens one store.
one_store_process = False


def load_orm(backend: str) -> None:
    """Import peewee for a store of `backend`, before anything else imports it."""
    if not one_store_process or backend != "sqlite" or "peewee" in sys.modules:
        return
    hidden = [name for name in POSTGRES_DRIVERS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        importlib.import_module("peewee")
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def orm_has_postgres() -> bool:
    """False when load_orm() hid the drivers from peewee in this process."""
    import peewee

    return peewee.psycopg2 is not None or peewee.psycopg is not None
