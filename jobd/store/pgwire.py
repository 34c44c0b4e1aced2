"""PostgreSQL connections that spend fewer round trips per transaction.

Every statement is a round trip to the server; a fire or a claim is a
transaction of a handful of them, and on a quiet server the waits add up to most
of a job's start latency. Two kinds of statement need no answer of their own:
the BEGIN, and writes whose results nobody reads (a job's next fire, a NOTIFY).
They are held back and sent in front of the next statement, or of the COMMIT,
in one simple-query message: PostgreSQL runs them in order and stops at the
first error, so the transaction means the same, and an error still ends it.

The daemon also bounds every wait for the server (`bound_waits`): a connection
whose server or network stalls without closing (no RST, no FIN) would otherwise
block the loop for as long as TCP retransmits, with signals unanswered.

Imported only when a PostgreSQL store is opened (it needs psycopg2).
"""

from __future__ import annotations

import contextlib
import math
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

import peewee as pw
import psycopg2
import psycopg2.extensions
from playhouse.shortcuts import ReconnectMixin

# A connection that answered this recently is taken to be alive, and its BEGIN
# rides on the next statement. One idle for longer gets its BEGIN sent alone, so
# that a connection the server dropped meanwhile is found, and replaced, before
# the transaction holds anything (inside one, a lost connection is an error).
PROVEN_ALIVE_S = 1.0
BEGIN = b"BEGIN"
POLL_OK = psycopg2.extensions.POLL_OK
POLL_READ = psycopg2.extensions.POLL_READ
# Once the daemon is asked to stop, a store that does not answer gets this long
# per round trip, so that a stall cannot eat the shutdown grace of its runs.
STOPPING_WAIT_S = 1.0
# How often a wait looks at the stop flag: a signal interrupts select(), but
# Python retries it (PEP 475) until its own timeout.
WAIT_SLICE_S = 0.25


class _WaitLimits:
    """The process's bound on one wait for the server, and who says we are stopping."""

    seconds: float | None = None
    stopping: Callable[[], bool] = staticmethod(lambda: False)


_limits = _WaitLimits()


def _bounded_wait(conn: Any) -> None:
    """psycopg2's wait callback: the driver runs non-blocking and waits here, for a
    connect or a statement's answer, at most the process's limit. A timeout closes
    the connection (psycopg2 does, when a wait callback fails), so the next use
    reconnects instead of reading a late answer to an old question.

    On the hot path (an answer within WAIT_SLICE_S) it costs a poll and a select
    per round trip; the clock and the stop flag are read only once a slice passes."""
    started = time.monotonic()
    while True:
        state = conn.poll()
        if state == POLL_OK:
            return
        fd = conn.fileno()  # a connect that tries another address has another socket
        if state == POLL_READ:
            ready = select.select([fd], [], [], WAIT_SLICE_S)[0]
        else:
            ready = select.select([], [fd], [], WAIT_SLICE_S)[1]
        if ready:
            continue
        bound = _limits.seconds
        if _limits.stopping():
            bound = STOPPING_WAIT_S if bound is None else min(bound, STOPPING_WAIT_S)
        if bound is not None and time.monotonic() - started >= bound:
            raise psycopg2.OperationalError(f"the store did not answer within {bound:g}s")


def bound_waits(seconds: float, stopping: Callable[[], bool]) -> None:
    """Bound every wait of this process for a PostgreSQL server by `seconds` (and by
    STOPPING_WAIT_S once `stopping()`): connects, statements, LISTEN set-up. For the
    daemon only: a one-shot command may wait for a long statement."""
    _limits.seconds = seconds
    _limits.stopping = stopping
    psycopg2.extensions.set_wait_callback(_bounded_wait)


def liveness_params(seconds: float, params: dict[str, Any]) -> dict[str, Any]:
    """Connection parameters with which the kernel notices a peer that vanished (a
    host down, a cut without RST) within about `seconds`, idle or not: keepalives
    and tcp_user_timeout, merged into `params` (the URL's own values win)."""
    whole = max(1, math.ceil(seconds))
    return {
        # (A connect is bounded by bound_waits too: libpq ignores connect_timeout
        # when psycopg2 drives it through a wait callback.)
        "keepalives": 1,
        "keepalives_idle": whole,
        "keepalives_interval": max(1, whole // 3),
        "keepalives_count": 3,
        "tcp_user_timeout": whole * 1000,
        **params,
    }


def session_limits(seconds: float) -> str:
    """Session settings for a daemon's connection (sent with SET, not the startup
    `options`, which connection poolers such as PgBouncer refuse):

    - statement_timeout: a statement stuck on a lock gives up with a clean error
      instead of holding the loop;
    - idle_in_transaction_session_timeout: a jobd that stalls inside a transaction
      (paused, or cut off behind a network that still holds the connection) has
      the server end it, so its row locks do not stop the other instances.
    """
    ms = max(1, int(seconds * 1000))
    return f"SET statement_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms * 2}"


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
        self.session_sql: str | None = None  # see limit_waits

    def limit_waits(self, seconds: float) -> None:
        """Make this database's connections notice a stalled server or network within
        about `seconds` (see liveness_params and session_limits). Connections open
        now keep their settings until they are replaced."""
        self.connect_params = liveness_params(seconds, self.connect_params)
        self.session_sql = session_limits(seconds)
        # peewee connects under one lock for all threads, though each thread has
        # its own connection: behind a frozen server, N threads reconnecting
        # would wait N bounded waits in turn (the API's workers did, 55 s for 12).
        # The lock guards only the thread's own state and a server version that
        # every connect sets alike.
        self._lock = contextlib.nullcontext()

    def _initialize_connection(self, conn: Any) -> None:
        if self.session_sql:
            with conn.cursor() as cursor:
                cursor.execute(self.session_sql)

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
