"""Waiting for the store: at start, and how an outage is told in the log.

In compose files and Kubernetes the database often starts after the scheduler,
and a PostgreSQL server restarts or fails over now and then. jobd waits for it
instead of exiting: it tries again every PROBE_EVERY, so that it is back within
a second or two of the store, and says so in the log with back-off (after 1 s,
2 s, 4 s ... at most `max_backoff` apart), so that an hour-long outage is a
dozen lines, not thousands.

Errors that waiting cannot fix end the wait at once, with exit 2: a malformed
or unsupported URL, a connection option libpq refuses (sslmode=bogus), a store
written by a newer jobd, a SQLite file that is not a jobd store or cannot be
written. An authentication failure or a missing database is waited out: both
are fixed on the server (a role created, a password or pg_hba.conf changed, a
password file rewritten, which libpq reads again at each attempt), not in
jobd's own configuration.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from jobd.errors import (
    ExitCode,
    StoreTooNew,
    StoreUnavailable,
    StoreValueRefused,
    UsageError,
    first_line,
    store_failure,
)
from jobd.store.urls import backend_of, mask_url, sqlite_path
from jobd.system.log import mask_secrets
from jobd.system.sdnotify import Notifier

log = logging.getLogger("jobd")
T = TypeVar("T")

PROBE_EVERY = 1.0  # seconds between attempts while the store is away
# Start-up time asked of systemd at each attempt (EXTEND_TIMEOUT_USEC), so that
# TimeoutStartSec does not kill a daemon that is only waiting: more than the
# longest attempt (SQLite's busy timeout, 15 s) plus the pause after it.
EXTEND_BY = 30.0
SLICE = 0.05  # how often a wait looks at the stop flag
# A return of the store that fails again within this continues the same outage,
# and a return after a store that came and went is told once it has held this long.
SETTLE = 10.0

# SQLite errors that another process or the operator clears without touching jobd:
# a lock held past the busy timeout (a backup, a long write), a full disk.
SQLITE_PASSING = ("locked", "busy", "disk is full", "disk i/o error")
# PostgreSQL errors of the URL or of this process, never of the server's state.
POSTGRES_FOR_GOOD = ("unsupported store URL", "store layer for SQLite only")
# libpq's refusals of a URL's connection options, made before it reaches any
# server (sslmode=bogus, connect_timeout=abc): only a new URL fixes them.
# They come as connection errors, so they are told apart by libpq's wording.
POSTGRES_OPTION_REFUSED = re.compile(
    r'invalid [a-z_]+ value: "'
    r'|invalid integer value "'
    r'|invalid connection option "'
    r"|invalid URI query parameter"
    r"|invalid port number"
    r"|invalid require_auth method"
    r"|could not match \d+ (?:port numbers|host names) to \d+"
    r'|could not parse network address "'
)


class StoreRefused(UsageError):
    """A store `jobd run` cannot use however long it waits (exit 2)."""


@dataclass(frozen=True)
class StoreDown:
    """From the start-up child: the config is fine, the store did not answer."""

    store_url: str
    reason: str
    max_backoff: float


def is_passing(exc: BaseException, backend: str) -> bool:
    """Whether waiting can fix this store error (see the module's docstring)."""
    if isinstance(exc, StoreTooNew) or not isinstance(exc, Exception):
        return False
    if getattr(exc, "exit_code", None) == ExitCode.USAGE:
        return False  # a malformed URL, a bad config: said at once, exit 2
    if isinstance(exc, StoreUnavailable):
        text = str(exc)
    elif store_failure(exc) is not None or isinstance(exc, sqlite3.Error):
        text = f"{type(exc).__name__}: {exc}"
        if backend == "postgresql":
            # A connection that broke, or a server shutting down, is passing; a
            # statement the server rejected (a column too narrow) is not.
            if POSTGRES_OPTION_REFUSED.search(text):
                return False
            return "OperationalError" in text or "InterfaceError" in text
    else:
        return False
    if backend == "postgresql":
        return not (
            any(marker in text for marker in POSTGRES_FOR_GOOD)
            or POSTGRES_OPTION_REFUSED.search(text)
        )
    lowered = text.lower()
    return any(marker in lowered for marker in SQLITE_PASSING)


def refused(exc: BaseException) -> BaseException:
    """The error `jobd run` exits with when waiting cannot fix it; a driver's message
    may quote the URL, so the store's password is masked."""

    if isinstance(exc, StoreUnavailable):
        return StoreRefused(mask_secrets(str(exc)))
    failure = store_failure(exc)
    return StoreRefused(mask_secrets(str(failure))) if failure is not None else exc


def reason_of(exc: BaseException, url: str) -> str:
    """One line saying why, without the URL that the caller shows anyway."""
    text = first_line(exc)
    prefix = f"store {mask_url(url)}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def create_store_directory(url: str) -> None:
    """`jobd run` creates a SQLite store's missing directory (0700), as it creates the
    file: a fresh host, a new volume, or a state directory not made yet."""
    try:
        if backend_of(url) != "sqlite":
            return
    except StoreUnavailable:
        return  # the URL is refused when the store is opened
    directory = os.path.dirname(sqlite_path(url)) or "."
    if os.path.isdir(directory):
        return
    old_umask = os.umask(0o077)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StoreRefused(
            f"store {url}: cannot create its directory {directory}: {exc.strerror or exc}"
        ) from None
    finally:
        os.umask(old_umask)
    log.warning(
        "created the store's directory %s (0700): it did not exist",
        directory,
        extra={"action": "store.directory"},
    )


class OutageLog:
    """When to say that the store is still away: 1 s after the first failure, then
    2 s, 4 s ... at most `max_backoff` apart. Attempts go on every PROBE_EVERY
    meanwhile; only the lines back off.

    A store that answers and fails again within SETTLE seconds is one outage,
    not many: a SQLite store on a full disk whose -wal is deleted when the
    connection closes takes a few writes, then fills again, every second or two,
    which was an error and an "available again" line each time. The first return
    of an outage is told at once; if the store fails again within SETTLE, that
    is said once, as a "still unavailable" warning, and the outage goes on with
    its back-off; later returns are told only once they have held for SETTLE.

    Times are monotonic seconds; `now` is for tests that drive the clock."""

    def __init__(self, max_backoff: float) -> None:
        self.max_backoff = max_backoff
        self.since: float | None = None  # monotonic start of the outage
        self.attempts = 0
        self.returns = 0  # times the store answered and failed again, this outage
        self._gap = 1.0
        self._next_line = 0.0
        self._back_at: float | None = None  # when the store last answered, this outage
        self._back_told = False  # whether that return was told

    @property
    def down(self) -> bool:
        return self.since is not None and self._back_at is None

    @property
    def seconds(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(self, now: float | None = None) -> str:
        """Count a failed attempt. Whether it deserves a line in the log, and which:
        "first" (an outage begins), "again" (the store failed again soon after a
        return that was told: the log said it was back), "still" (a back-off
        step); "" for none."""
        now = time.monotonic() if now is None else now
        again = False
        if self._back_at is not None:
            if now - self._back_at < SETTLE:
                again, self._back_at = self._back_told, None
                self.returns += 1
            else:
                self._end()
        if self.since is None:
            self.since, self.attempts, self.returns = now, 1, 0
            self._gap, self._next_line = 1.0, now + 1.0
            return "first"
        self.attempts += 1
        if again:
            return "again"  # the back-off goes on from where it was
        if now < self._next_line:
            return ""
        self._gap = min(self.max_backoff, self._gap * 2)
        self._next_line = now + self._gap
        return "still"

    def recovered(self, now: float | None = None) -> float | None:
        """The store answered. How long the outage lasted when that deserves a line
        now, else None (no outage, or a return not yet held for the settle time)."""
        if self.since is None:
            return None
        now = time.monotonic() if now is None else now
        if self._back_at is None:
            self._back_at = now
            self._back_told = self.returns == 0
            return now - self.since if self._back_told else None
        if now - self._back_at < SETTLE:
            return None
        lasted, told = self._back_at - self.since, self._back_told
        self._end()
        return None if told else lasted

    def _end(self) -> None:
        self.since, self._back_at, self.attempts = None, None, 0

    def tell(self, exc: BaseException, now: float | None = None) -> None:
        """Count a failed round of the daemon's loop, and say so when that deserves a
        line: first as an error, then as warnings backing off."""
        said = self.failed(now)
        if not said:
            return
        trouble, still = _store_trouble(exc)
        now = time.monotonic() if now is None else now
        if said == "first":
            log.error(
                "%s (%s); trying again every %.0fs",
                trouble,
                first_line(exc),
                PROBE_EVERY,
                extra={"action": "store.down"},
            )
        else:  # a back-off step, or the store failing again soon after a told return
            returns = self.returns
            log.warning(
                "%s after %.0fs (%d attempts%s): %s",
                still,
                now - (self.since or now),
                self.attempts,
                f", {returns} return{'s' if returns != 1 else ''} of less than {SETTLE:.0f}s"
                if returns
                else "",
                first_line(exc),
                extra={"action": "store.down"},
            )


def _store_trouble(exc: BaseException) -> tuple[str, str]:
    """How the log names a store error, first and then while it lasts: an outage, or
    a value the store would not take, which is no outage (though tried again too)."""
    if isinstance(store_failure(exc), StoreValueRefused):
        return "the store refused a value", "the store still refuses a value"
    return "store unavailable", "store still unavailable"


class StartupWait:
    """`jobd run` waiting for its store before anything runs: an attempt every
    PROBE_EVERY, logged with back-off, told to the service manager (STATUS=, and
    more start-up time, so that systemd's TimeoutStartSec does not kill a daemon
    that is only waiting; READY=1 comes once the daemon has started), and given up
    at once when a stop is asked for (SIGTERM, SIGINT)."""

    def __init__(
        self,
        store_url: str,
        max_backoff: float,
        notifier: Notifier,
        stop_requested: Callable[[], bool],
    ) -> None:
        self.store_url = store_url
        self.backend = backend_of(store_url)
        self.notifier = notifier
        self.stop_requested = stop_requested
        self.outage = OutageLog(max_backoff)

    def attempt(self, call: Callable[[], T]) -> T | None:
        """call(), again after each passing store error, until it succeeds: its result,
        or None once a stop was asked for. An error waiting cannot fix is raised.

        Each attempt runs in a thread of its own, so that a connection that hangs
        (a frozen network, a locked SQLite file) cannot hold up a stop."""
        while not self.stop_requested():
            started = time.monotonic()
            done = self._in_thread(call)
            if done is None:
                return None
            value, error = done
            if error is None:
                self.available()
                return value
            if not is_passing(error, self.backend):
                raise refused(error)
            self.failed(reason_of(error, self.store_url))
            if not self.pause(PROBE_EVERY - (time.monotonic() - started)):
                return None
        return None

    def failed(self, reason: str) -> None:
        """Count and report a failed attempt (logged with back-off, STATUS= always)."""

        said = self.outage.failed()
        if said:
            where = mask_url(self.store_url)
            if said == "first":
                log.warning(
                    "waiting for the store %s: %s (trying every %.0fs)",
                    where,
                    reason,
                    PROBE_EVERY,
                    extra={"action": "store.wait"},
                )
            else:
                log.warning(
                    "still waiting for the store %s after %.0fs (%d attempts): %s",
                    where,
                    self.outage.seconds,
                    self.outage.attempts,
                    reason,
                    extra={"action": "store.wait"},
                )
        self.notifier.status(
            mask_secrets(f"waiting for the store {mask_url(self.store_url)}: {reason}")
        )
        self._keep_alive()

    def available(self) -> None:
        lasted = self.outage.recovered()
        if lasted is not None:
            log.info(
                "the store answered after %.0fs of waiting",
                lasted,
                extra={"action": "store.up"},
            )

    def pause(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False when a stop was asked for meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            with contextlib.suppress(OSError):  # a stepped clock may fail a nap
                time.sleep(min(SLICE, left))
        return False

    def _keep_alive(self) -> None:
        self.notifier.extend_timeout(EXTEND_BY)
        self.notifier.maybe_watchdog(time.monotonic())

    def _in_thread(self, call: Callable[[], T]) -> tuple[T | None, BaseException | None] | None:
        result: list[tuple[T | None, BaseException | None]] = []

        def run() -> None:
            try:
                result.append((call(), None))
            except BaseException as exc:  # handed to the waiting thread
                result.append((None, exc))

        thread = threading.Thread(target=run, name="jobd-store-wait", daemon=True)
        thread.start()
        kept_alive = time.monotonic()
        while thread.is_alive():
            if self.stop_requested():
                return None  # the thread is left to its connect; the process exits
            thread.join(SLICE)
            if time.monotonic() - kept_alive >= PROBE_EVERY:
                kept_alive = time.monotonic()
                self._keep_alive()
        return result[0]
