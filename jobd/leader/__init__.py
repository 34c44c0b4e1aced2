"""Leader guards: only the leader turns schedules into queued runs.

Two flavours behind one small interface. The guard only saves work: the unique
(job, scheduled_for) key in the store is what makes a second leader harmless,
and the table lease's epoch is what keeps a deposed one from writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Term:
    """One spell of leadership, read once so a write uses the term it checked."""

    since: datetime  # when it began (UTC), for the catchup rule
    epoch: int | None  # the fencing token, when the guard has one


class LeaderGuard(Protocol):
    name: str

    def poll(self) -> bool:
        """Try to become or stay leader; True while this instance leads. Never blocks long."""
        ...

    def term(self) -> Term | None:
        """The current term, or None when not leading (checked against the clock now)."""
        ...

    @property
    def leading(self) -> bool: ...

    def step_down(self, reason: str) -> None:
        """Stop leading at once: the store said a newer leader exists."""
        ...

    def next_poll_in(self) -> float:
        """Seconds until poll() should be called again."""
        ...

    def release(self) -> None: ...
