"""`leader = file`: an flock on a file beside the SQLite database (one host),
in its private companion directory (jobd.store.files), never through a link.

The kernel drops the lock the instant its holder dies, so a standby blocked on it
in a thread takes over within milliseconds.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from jobd.errors import ConfigError
from jobd.leader import Term
from jobd.store.files import open_companion, private_dir


class FileLeader:
    name = "file"

    def __init__(self, lock_path: str, on_change: Callable[[], None]) -> None:
        self.lock_path = lock_path
        self.on_change = on_change
        self._fd: int | None = None
        self._since: datetime | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._waiter: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self._since is not None

    def term(self) -> Term | None:
        since = self._since
        return Term(since, None) if since is not None else None

    def step_down(self, reason: str) -> None:
        self.release()
        self._closed.clear()

    def poll(self) -> bool:
        if self.leading:
            return True
        with self._lock:
            if self._fd is None:
                private_dir(os.path.dirname(self.lock_path))
                self._fd = open_companion(self.lock_path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._start_waiter()
                return False
            self._became_leader()
            return True

    def _became_leader(self) -> None:
        self._since = datetime.now(UTC)
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def _start_waiter(self) -> None:
        if self._waiter is not None and self._waiter.is_alive():
            return

        def wait_for_lock() -> None:
            try:
                fd = open_companion(self.lock_path, os.O_RDWR | os.O_CREAT)
            except (OSError, ConfigError):
                return  # poll() opened it a moment ago; it will say what changed
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the leader dies or releases
            except OSError:
                os.close(fd)
                return
            with self._lock:
                if self._closed.is_set():
                    os.close(fd)
                    return
                if self._fd is not None:
                    os.close(self._fd)
                self._fd = fd
                self._became_leader()
            self.on_change()

        self._waiter = threading.Thread(target=wait_for_lock, name="leader-wait", daemon=True)
        self._waiter.start()

    def next_poll_in(self) -> float:
        return 3600.0  # the waiter thread wakes the loop; nothing to renew

    def release(self) -> None:
        self._closed.set()
        with self._lock:
            if self._fd is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._fd)
                    self._fd = None
            self._since = None
