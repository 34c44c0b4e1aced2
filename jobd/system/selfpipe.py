"""A self-pipe: any thread (or a signal handler) pokes it, a selector loop wakes.

The daemon's waker and the run supervisor each sleep in a selector that other
threads must be able to interrupt; both use one of these.
"""

from __future__ import annotations

import contextlib
import os
import selectors
from typing import Any


class SelfPipe:
    def __init__(self, selector: selectors.BaseSelector, data: Any) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        selector.register(self.read_fd, selectors.EVENT_READ, data)

    def poke(self) -> None:
        """From any thread: wake the selector. A full pipe is already a wake-up."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.write_fd, b"w")

    def drain(self) -> None:
        """In the selector's thread, once woken: take every poke so far."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 4096):
                pass

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)
