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

from jobd.core.timeutil import from_db
from jobd.store import queries as q
from jobd.store.part import Part
from jobd.store.queries import LEASE_NAME


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


class LeaseOps(Part):
    """The lease's statements (queries.py); mixed into Store."""

    _lease_row_seen = False

    def acquire_lease(self, holder: str, host: str, ttl: float) -> LeaseState:
        """Take the lease if it is free or expired, or renew it if `holder` has it.

        One UPDATE decides and computes the new expiry by the database's clock. When
        someone else holds it, their state is returned so a standby knows when to try
        again."""
        params = (holder, holder, holder, host, self.dialect.lease_ttl(ttl), LEASE_NAME, holder)
        # A renewal is the one UPDATE; the row is created (by whoever comes first)
        # only when it is not there yet, so a holder renews in one round trip.
        row = self.dialect.one(q.LEASE_TAKE, params)
        if row is None and not self._lease_row_seen:
            self.dialect.run(q.LEASE_CREATE, (LEASE_NAME,))
            row = self.dialect.one(q.LEASE_TAKE, params)
        self._lease_row_seen = True
        if row is None:
            return self.lease_state(holder)
        return self._state(row, holder)

    def lease_state(self, asking: str | None = None) -> LeaseState:
        """The lease and the database's clock, read together, without changing anything."""
        row = self.dialect.one(q.LEASE_STATE, (LEASE_NAME,))
        if row is None:
            row = (0, None, None, self.dialect.one(q.NOW)[0])
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
        self.dialect.run(q.LEASE_RELEASE, (LEASE_NAME, holder))

    def check_epoch(self, epoch: int) -> datetime:
        """Inside a write transaction: raise LeaseLost unless `epoch` is current and
        unexpired; returns the store's clock as the check read it. On PostgreSQL
        the row lock makes a concurrent takeover wait for this transaction (or this
        check wait for the takeover, and then fail)."""
        row = self.dialect.one(q.LEASE_CHECK, (LEASE_NAME,))
        if row is None or int(row[0]) != epoch or not row[1]:
            current = "none" if row is None else row[0]
            raise LeaseLost(f"lease epoch {epoch} is no longer current (now {current})")
        moment = from_db(row[2])
        assert moment is not None
        return moment
