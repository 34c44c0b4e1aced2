"""The one place that reads time."""

from __future__ import annotations

import time
from datetime import UTC, datetime

# A wall clock that moved this much more or less than the monotonic clock
# between two looks was stepped (by hand, by NTP, by a VM resume), not slewed.
JUMP_THRESHOLD = 1.0


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class JumpDetector:
    """Notices wall-clock steps by comparing the wall clock with the monotonic one."""

    def __init__(self, threshold: float = JUMP_THRESHOLD) -> None:
        self.threshold = threshold
        self._last: tuple[datetime, float] | None = None

    def check(self, wall: datetime, monotonic: float) -> float | None:
        """Seconds the wall clock jumped since the last check (negative: back), or None."""
        last, self._last = self._last, (wall, monotonic)
        if last is None:
            return None
        jump = (wall - last[0]).total_seconds() - (monotonic - last[1])
        return jump if abs(jump) >= self.threshold else None
