"""Leader guards: only the leader turns schedules into queued runs.

Two flavours behind one small interface. The guard only saves work: the unique
(job, scheduled_for) key in the store is what makes a second leader harmless.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class LeaderGuard(Protocol):
    name: str

    def poll(self) -> bool:
        """Try to become or stay leader; True while this instance leads. Never blocks long."""
        ...

    @property
    def leading(self) -> bool: ...

    @property
    def since(self) -> datetime | None:
        """When this instance began to lead (UTC), for the catchup rule."""
        ...

    @property
    def epoch(self) -> int | None:
        """The fencing token of the current term, when the guard has one."""
        ...

    def next_poll_in(self) -> float:
        """Seconds until poll() should be called again."""
        ...

    def release(self) -> None: ...
