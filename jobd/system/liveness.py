"""Which jobd processes on a SQLite store are alive: an flock each one holds.

A SQLite store lives on one host, so every jobd process that owns runs (a daemon,
`jobd trigger --local`) holds an exclusive flock on `<database>.d/instances/<id>`
(see jobd.store.files) for its whole life. The kernel drops it the instant the
process dies, however it dies: a checker that can take the lock knows the
instance is gone, at once and without waiting for a heartbeat to go stale, and a
daemon blocked on another's lock in a thread learns of its death with no polling
at all. An idle daemon therefore writes nothing and wakes for nothing. Instances
without a lock file (another store's processes, an older jobd) are judged by
their heartbeat.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from jobd.core.model import Presence, presence_by_heartbeat


class LockState(enum.Enum):
    HELD = "held"  # alive
    FREE = "free"  # its process is gone
    MISSING = "missing"  # no lock file: judge it by its heartbeat


def _path(directory: str, instance: str) -> str:
    return os.path.join(directory, instance)


def lock_state(directory: str, instance: str) -> LockState:
    try:
        fd = os.open(_path(directory, instance), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return LockState.MISSING
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return LockState.HELD
    except OSError:
        return LockState.MISSING
    finally:
        os.close(fd)  # also drops the shared lock, if we took it
    return LockState.FREE


def presence(
    lock_dir: str | None, instance: str, heartbeat_at: datetime | None, ttl: float, now: datetime
) -> Presence:
    """The one place that decides whether an instance that has not stopped is
    still there: by its lock where it has one, else by its heartbeat."""
    state = lock_state(lock_dir, instance) if lock_dir else LockState.MISSING
    if state is LockState.HELD:
        return Presence.LIVE
    if state is LockState.FREE:
        return Presence.DEAD
    return presence_by_heartbeat(heartbeat_at, ttl, now)


def forget(directory: str, instance: str) -> None:
    """Remove a dead instance's lock file (its holder is gone)."""
    with contextlib.suppress(OSError):
        os.unlink(_path(directory, instance))


class InstanceLock:
    """This process's lock, held until release() or the process ends."""

    def __init__(self, directory: str, instance: str) -> None:
        self.directory = directory
        self.instance = instance
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises OSError when the directory cannot be written, ConfigError when it is
        not private (jobd.store.files)."""
        from jobd.store.files import open_companion, private_dir

        private_dir(self.directory)
        path = _path(self.directory, self.instance)
        # Locked under a temporary name and renamed into place: a checker never
        # finds the file before its lock is taken, and so never takes us for dead.
        partial = f"{path}.{os.getpid()}.new"
        fd = open_companion(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.rename(partial, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        forget(self.directory, self.instance)
        os.close(self._fd)
        self._fd = None


class DeathWatch:
    """A thread blocked on each watched instance's lock; `on_death(instance)` runs
    (in that thread) when the lock comes free. Blocked threads cost no CPU."""

    def __init__(self, directory: str, on_death: Callable[[str], None]) -> None:
        self.directory = directory
        self.on_death = on_death
        self._watched: set[str] = set()
        self._guard = threading.Lock()

    def watch(self, instances: Iterable[str]) -> None:
        with self._guard:
            for instance in instances:
                if instance in self._watched:
                    continue
                self._watched.add(instance)
                threading.Thread(
                    target=self._wait, args=(instance,), name="jobd-deathwatch", daemon=True
                ).start()

    def watch_directory(self, exclude: str) -> None:
        """Watch every instance with a lock file, but `exclude` (ourselves)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        self.watch(n for n in names if n != exclude and not n.endswith(".new"))

    @property
    def watched(self) -> set[str]:
        with self._guard:
            return set(self._watched)

    def _wait(self, instance: str) -> None:
        try:
            fd = os.open(
                _path(self.directory, instance), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
            )
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)  # returns when the holder is gone
            except OSError:
                pass
            finally:
                os.close(fd)
        with self._guard:
            self._watched.discard(instance)
        self.on_death(instance)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True
