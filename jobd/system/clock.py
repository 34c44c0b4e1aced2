"""The one place that reads time.

`JOBD_TEST_CLOCK_OFFSET` (seconds, may be negative or fractional) shifts the wall
clock as this process sees it. It exists so that tests can play a host whose
clock is wrong without changing the machine's; it never moves the monotonic
clock, which is what lease step-down is measured on.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

CLOCK_OFFSET_ENV = "JOBD_TEST_CLOCK_OFFSET"

# A wall clock that moved this much more or less than the monotonic clock
# between two looks was stepped (by hand, by NTP, by a VM resume), not slewed.
JUMP_THRESHOLD = 1.0


class Clock:
    def __init__(self, offset: float = 0.0) -> None:
        self.offset = timedelta(seconds=offset)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Clock:
        value = (os.environ if environ is None else environ).get(CLOCK_OFFSET_ENV, "")
        try:
            return cls(float(value) if value.strip() else 0.0)
        except ValueError:
            raise ValueError(f"{CLOCK_OFFSET_ENV}={value!r} is not a number of seconds") from None

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

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


def nap(seconds: float) -> None:
    """A short sleep that a stepped wall clock cannot break: some clock shims (and
    kernels, around a clock step) answer nanosleep with EINVAL, and a failed nap
    only means the caller looks again sooner."""
    with contextlib.suppress(OSError):
        time.sleep(seconds)
