"""`leader = table`: a lease row with a fencing epoch, timed by the database's clock.

The holder renews every ttl/3. A holder that cannot renew stops leading at
ttl − margin after its last successful renewal, measured on its own monotonic
clock, so it has stepped down before any standby can take the expired lease.
Every enqueue carries the epoch, and the store rejects a stale one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime

from jobd.model import MAX_CLOCK_SKEW_WARN
from jobd.store import STORE_ERRORS, Store

log = logging.getLogger("jobd")


class TableLeader:
    name = "table"

    def __init__(self, store: Store, instance: str, host: str, ttl: float, max_skew: float) -> None:
        self.store = store
        self.instance = instance
        self.host = host
        self.ttl = ttl
        self.max_skew = max_skew
        self.margin = max(0.2, ttl / 5)
        self.clock_skew: float | None = None
        self._epoch: int | None = None
        self._since: datetime | None = None
        self._valid_until = 0.0  # monotonic
        self._last_poll = 0.0

    @property
    def leading(self) -> bool:
        if self._since is not None and time.monotonic() >= self._valid_until:
            log.warning("lease not renewed in time; stepping down", extra={"action": "leader.lost"})
            self._since = None
            self._epoch = None
        return self._since is not None

    @property
    def since(self) -> datetime | None:
        return self._since if self.leading else None

    @property
    def epoch(self) -> int | None:
        return self._epoch if self.leading else None

    def poll(self) -> bool:
        self._last_poll = time.monotonic()
        sent = time.monotonic()
        try:
            result = self.store.acquire_lease(self.instance, self.host, self.ttl)
        except STORE_ERRORS:
            return self.leading  # keep leading until the lease runs out on our clock
        self.clock_skew = (datetime.now(UTC) - result[1]).total_seconds() if result else None
        if result is not None and abs(self.clock_skew or 0.0) > self.max_skew:
            log.error(
                "clock differs from the store's by %.1fs (limit %.0fs); refusing to lead",
                self.clock_skew,
                self.max_skew,
                extra={"action": "leader.clock_skew"},
            )
            self.store.release_lease(self.instance)
            self._since = self._epoch = None
            return False
        if result is not None and abs(self.clock_skew or 0.0) > MAX_CLOCK_SKEW_WARN:
            log.warning(
                "clock differs from the store's by %.1fs",
                self.clock_skew,
                extra={"action": "leader.clock_skew"},
            )
        if result is None:
            if self._since is not None:
                log.warning("lease taken by another instance", extra={"action": "leader.lost"})
            self._since = self._epoch = None
            return False
        epoch, db_now = result
        if self._epoch != epoch:
            self._since = db_now
            self._epoch = epoch
        self._valid_until = sent + self.ttl - self.margin
        return True

    def next_poll_in(self) -> float:
        interval = self.ttl / 3 if self.leading else min(self.ttl / 3, 1.0)
        return max(0.0, self._last_poll + interval - time.monotonic())

    def release(self) -> None:
        if self._since is not None:
            with contextlib.suppress(STORE_ERRORS):
                self.store.release_lease(self.instance)
        self._since = self._epoch = None
