"""The one place that reads time.

`JOBD_TEST_CLOCK_OFFSET` (seconds, may be negative or fractional) shifts the wall
clock as this process sees it. It exists so that tests can play a host whose
clock is wrong without changing the machine's; it never moves the monotonic
clock, which is what lease step-down is measured on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

CLOCK_OFFSET_ENV = "JOBD_TEST_CLOCK_OFFSET"


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
