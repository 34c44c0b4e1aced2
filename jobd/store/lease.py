"""The leader lease: one row, timed by the database's clock, with a fencing epoch.

Every decision about the lease (is it free, expired, ours; when does it expire)
is made by the database in the one UPDATE that takes or renews it, so hosts
whose clocks disagree still agree on who leads. The epoch grows by one whenever
the holder changes; a fire is written only while its leader's epoch is still
current and unexpired (`check_epoch`, in the same transaction as the write).
The lease is rows, not session state: it survives a dropped connection, and a
holder whose connection died simply fails to renew.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw

from jobd.core.timeutil import from_db
from jobd.store.schema import Models

LEASE_NAME = "scheduler"


class LeaseLost(Exception):
    """The fencing check failed: a newer leader exists, so this write must not happen."""


@dataclass(frozen=True)
class LeaseState:
    """The lease as one statement saw it, by the database's clock."""

    held: bool  # the asking instance holds it now
    epoch: int
    holder: str | None
    expires_at: datetime | None
    db_now: datetime

    @property
    def seconds_left(self) -> float:
        """How long until the lease can be taken by someone else (0: now)."""
        if self.holder is None or self.expires_at is None:
            return 0.0
        return max(0.0, (self.expires_at - self.db_now).total_seconds())


class LeaseOps:
    """Lease statements for both backends; mixed into Store."""

    db: pw.Database
    backend: str
    m: Models
    _lease_row_seen = False

    def _p(self) -> str:
        return "%s" if self.backend == "postgresql" else "?"

    def _db_now_sql(self) -> str:
        """The transaction's clock: fixed while it lasts on PostgreSQL, for the
        statement on SQLite."""
        if self.backend == "postgresql":
            return "(now() AT TIME ZONE 'utc')"
        # 'now' is fixed for the whole statement, like PostgreSQL's now().
        return "strftime('%Y-%m-%d %H:%M:%f', 'now')"

    def _clock_sql(self) -> str:
        """The clock read where the statement is evaluated (after any lock wait)."""
        if self.backend == "postgresql":
            return "(clock_timestamp() AT TIME ZONE 'utc')"
        return self._db_now_sql()

    def acquire_lease(self, holder: str, host: str, ttl: float) -> LeaseState:
        """Take the lease if it is free or expired, or renew it if `holder` has it.

        One UPDATE decides and computes the new expiry by the database's clock. When
        someone else holds it, their state is returned so a standby knows when to try
        again."""
        p, now_sql = self._p(), self._db_now_sql()
        if self.backend == "postgresql":
            expires_sql = f"({now_sql} + {p} * interval '1 second')"
            ttl_param: Any = ttl
        else:
            expires_sql = f"strftime('%Y-%m-%d %H:%M:%f', 'now', '+' || {p} || ' seconds')"
            ttl_param = f"{ttl:.3f}"

        def take() -> Any:
            return self.db.execute_sql(
                f"UPDATE leader_lease SET "
                f"epoch = CASE WHEN holder = {p} THEN epoch ELSE epoch + 1 END, "
                f"acquired_at = CASE WHEN holder = {p} THEN acquired_at ELSE {now_sql} END, "
                f"holder = {p}, host = {p}, expires_at = {expires_sql} "
                f"WHERE name = {p} AND (holder = {p} OR holder IS NULL OR expires_at < {now_sql}) "
                f"RETURNING epoch, holder, expires_at, {now_sql}",
                (holder, holder, holder, host, ttl_param, LEASE_NAME, holder),
            ).fetchone()

        # A renewal is the one UPDATE; the row is created (by whoever comes first)
        # only when it is not there yet, so a holder renews in one round trip.
        row = take()
        if row is None and not self._lease_row_seen:
            self.m.Lease.insert(name=LEASE_NAME, epoch=0).on_conflict_ignore().execute()
            row = take()
        self._lease_row_seen = True
        if row is None:
            return self.lease_state(holder)
        return self._state(row, holder)

    def lease_state(self, asking: str | None = None) -> LeaseState:
        """The lease and the database's clock, read together, without changing anything."""
        row = self.db.execute_sql(
            f"SELECT epoch, holder, expires_at, {self._db_now_sql()} FROM leader_lease "
            f"WHERE name = {self._p()}",
            (LEASE_NAME,),
        ).fetchone()
        if row is None:
            now = self.db.execute_sql(f"SELECT {self._db_now_sql()}").fetchone()[0]
            row = (0, None, None, now)
        return self._state(row, asking)

    @staticmethod
    def _state(row: Any, asking: str | None) -> LeaseState:
        db_now = from_db(row[3])
        assert db_now is not None
        expires = from_db(row[2])
        held = asking is not None and row[1] == asking and expires is not None and expires > db_now
        return LeaseState(held, int(row[0]), row[1], expires, db_now)

    def release_lease(self, holder: str) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait it out."""
        Lease = self.m.Lease
        Lease.update(holder=None, expires_at=None).where(
            Lease.name == LEASE_NAME, Lease.holder == holder
        ).execute()

    def check_epoch(self, epoch: int) -> datetime:
        """Inside a write transaction: raise LeaseLost unless `epoch` is current and
        unexpired; returns the store's clock as the check read it. On PostgreSQL
        the row lock makes a concurrent takeover wait for this transaction (or this
        check wait for the takeover, and then fail)."""
        # The clock, not the transaction's start: judged when the row lock is ours.
        lock = " FOR UPDATE" if self.backend == "postgresql" else ""
        clock = self._clock_sql()
        row = self.db.execute_sql(
            f"SELECT epoch, expires_at > {clock}, {clock} FROM leader_lease "
            f"WHERE name = {self._p()}{lock}",
            (LEASE_NAME,),
        ).fetchone()
        if row is None or int(row[0]) != epoch or not row[1]:
            current = "none" if row is None else row[0]
            raise LeaseLost(f"lease epoch {epoch} is no longer current (now {current})")
        moment = from_db(row[2])
        assert moment is not None
        return moment
