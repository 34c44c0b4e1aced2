"""Signals set flags, nothing more; the loop acts on them between ticks.

SIGTERM and SIGINT ask for a graceful stop (as systemd expects); a second one
skips the grace period. SIGHUP asks for a config reload. Previous handlers are
restored on exit.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any


class SignalFlags:
    def __init__(self, on_signal: Callable[[], None] = lambda: None) -> None:
        self.stop_requests = 0
        self.reload_requested = False
        self.on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Install (again, e.g. after a DaemonContext replaced SIGTERM's) the handlers;
        restore() puts back the ones found at the first install."""
        for sig, handler in (
            (signal.SIGTERM, self._stop),
            (signal.SIGINT, self._stop),
            (signal.SIGHUP, self._reload),
        ):
            self._previous.setdefault(sig, signal.signal(sig, handler))

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requests += 1
        self.on_signal()

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True
        self.on_signal()
