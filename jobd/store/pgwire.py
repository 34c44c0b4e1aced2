"""PostgreSQL connections that spend fewer round trips per transaction.

Every statement is a round trip to the server; a fire or a claim is a
transaction of a handful of them, and on a quiet server the waits add up to most
of a job's start latency. Two kinds of statement need no answer of their own:
the BEGIN, and writes whose results nobody reads (a job's next fire, a NOTIFY).
They are held back and sent in front of the next statement, or of the COMMIT,
in one simple-query message: PostgreSQL runs them in order and stops at the
first error, so the transaction means the same, and an error still ends it.

Imported only when a PostgreSQL store is opened (it needs psycopg2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import peewee as pw
import psycopg2.extensions
from playhouse.shortcuts import ReconnectMixin

# A connection that answered this recently is taken to be alive, and its BEGIN
# rides on the next statement. One idle for longer gets its BEGIN sent alone, so
# that a connection the server dropped meanwhile is found, and replaced, before
# the transaction holds anything (inside one, a lost connection is an error).
PROVEN_ALIVE_S = 1.0
BEGIN = b"BEGIN"


class HoldingCursor(psycopg2.extensions.cursor):
    """Sends its connection's held statements in front of its own."""

    connection: HoldingConnection

    def execute(self, query: Any, vars: Any = None) -> None:
        held = self.connection.held
        if held:
            # The held statements are already bound; so is this one, then, since
            # psycopg2 would otherwise read the %s of their literals as parameters.
            statement = self.mogrify(query, vars)
            query, vars = b";\n".join([*held, statement]), None
            held.clear()
        super().execute(query, vars)
        self.connection.answered_at = time.monotonic()

    def executemany(self, query: Any, vars_list: Any) -> None:
        held = self.connection.held
        if held:
            joined = b";\n".join(held)
            held.clear()
            super().execute(joined)
        super().executemany(query, vars_list)
        self.connection.answered_at = time.monotonic()


class HoldingConnection(psycopg2.extensions.connection):
    """A psycopg2 connection with statements held for its next round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: list[bytes] = []
        self.answered_at = time.monotonic()
        self.cursor_factory = HoldingCursor

    def hold(self, sql: str, rows: Sequence[Any]) -> None:
        cursor = self.cursor()
        self.held += [cursor.mogrify(sql, params) for params in rows]

    @property
    def begin_held(self) -> bool:
        return bool(self.held) and self.held[0] == BEGIN


class ReconnectingPostgres(ReconnectMixin, pw.PostgresqlDatabase):
    """Reconnects once when the server dropped the connection outside a transaction;
    holds back the BEGIN and answerless writes of its transactions (see above)."""

    reconnect_errors = (
        (pw.OperationalError, "server closed the connection"),
        (pw.OperationalError, "terminating connection"),
        (pw.OperationalError, "connection not open"),
        (pw.InterfaceError, "connection already closed"),
        (pw.OperationalError, "could not connect"),
        (pw.OperationalError, "connection refused"),
    )

    def __init__(self, database: str, **params: Any) -> None:
        super().__init__(database, connection_factory=HoldingConnection, **params)

    def _connection(self) -> HoldingConnection:
        if self.is_closed():
            self.connect()
        return self._state.conn  # type: ignore[no-any-return]

    def begin(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs or self.is_closed():
            super().begin(*args, **kwargs)
            return
        conn = self._connection()
        if time.monotonic() - conn.answered_at > PROVEN_ALIVE_S:
            super().begin()
            return
        conn.held.append(BEGIN)

    def hold(self, sql: str, rows: Sequence[Any] = ((),)) -> None:
        """Send `sql`, once per row of parameters, with this transaction's next
        statement or its COMMIT. For writes whose result nobody reads; an error in
        one ends the transaction at that later statement."""
        if not self.in_transaction():
            raise pw.InterfaceError("a held statement needs a transaction")
        self._connection().hold(sql, rows)

    def commit(self) -> None:
        conn = self._connection()
        if conn.held == [BEGIN]:
            conn.held.clear()  # nothing was sent: there is nothing to commit
            return
        super().commit()

    def rollback(self) -> None:
        if self.is_closed():
            super().rollback()
            return
        conn = self._connection()
        never_began = conn.begin_held
        conn.held.clear()
        # A connection found closed took its transaction with it; a ROLLBACK would
        # only replace the error that says why with "connection already closed".
        if not never_began and not conn.closed:
            super().rollback()
