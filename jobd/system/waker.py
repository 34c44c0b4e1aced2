"""Sleeping until something happens: a selector over a self-pipe (signals and
threads), a per-daemon wake socket (SQLite: `jobd trigger` pokes it), a
PostgreSQL LISTEN connection, and a clock-step timer (jobd.system.clockstep). The
daemon never polls in a loop.

`Waker.for_store(store)` knows what each kind of store offers: SQLite a file to
watch (deleted or replaced under the daemon) and a directory of wake sockets;
PostgreSQL a NOTIFY channel, whose LISTEN connection `keep_listening()` opens
again, with back-off, whenever it is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jobd.errors import first_line
from jobd.store.files import StoreIdentity
from jobd.store.queries import WAKE_CHANNEL
from jobd.store.urls import sqlite_path
from jobd.system.clock import nap
from jobd.system.clockstep import ClockStepWatch
from jobd.system.filewatch import FileWatch
from jobd.system.selfpipe import SelfPipe
from jobd.system.storewait import PROBE_EVERY

if TYPE_CHECKING:
    from jobd.store import Store

log = logging.getLogger("jobd")

# sun_path holds 108 bytes on Linux (104 on macOS); a store deep in the file
# system puts its wake sockets beyond that.
MAX_SOCKET_PATH = 100


@contextlib.contextmanager
def _reachable(directory: str) -> Iterator[str]:
    """`directory`, or a short path to it through /proc/self/fd when a socket path
    in it would be too long to bind or send to."""
    if len(os.fsencode(directory)) + 30 < MAX_SOCKET_PATH or not os.path.isdir("/proc/self/fd"):
        yield directory
        return
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield directory  # binding or sending will say what is wrong
        return
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def poke_all(directory: str) -> None:
    """Send one datagram to every daemon socket in `directory`; remove dead ones.

    Only in a private directory (jobd.store.files): a planted one is not followed."""
    from jobd.store.files import is_private_dir

    if not is_private_dir(directory):
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, _reachable(directory) as short:
        sock.setblocking(False)
        for name in names:
            try:
                sock.sendto(b"w", os.path.join(short, name))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, name))
            except OSError:
                pass  # a full socket buffer means that daemon has a wake-up pending anyway


class Backoff:
    """Exponential back-off: 1 s, 2 s, 4 s ... capped."""

    def __init__(self, cap: float, first: float = 1.0) -> None:
        self.cap, self.first, self.current = cap, first, 0.0

    def next(self) -> float:
        self.current = self.first if self.current == 0 else min(self.cap, self.current * 2)
        return self.current

    def reset(self) -> bool:
        was_failing = self.current > 0
        self.current = 0.0
        return was_failing


class Waker:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._pipe = SelfPipe(self.selector, "pipe")
        self._socket: socket.socket | None = None
        self._socket_path: str | None = None
        self._listen_conn: Any = None
        self._listen_fd: int | None = None
        self._schema: str | None = None  # the store's schema, named by a NOTIFY's payload
        self._old_wakeup_fd: int | None = None
        self._clock = ClockStepWatch()
        self._file = FileWatch()
        # Set by for_store: the store's file (SQLite), and its LISTEN (PostgreSQL).
        self.store_file: StoreIdentity | None = None
        self._dsn: str | None = None
        self._listen_backoff = Backoff(60.0)
        self._listen_retry_at = 0.0
        self._listened = False

    @classmethod
    def for_store(cls, store: Store, max_backoff: float) -> Waker:
        """A waker for a daemon of `store`. SQLite: the file opened, so that one deleted
        or replaced under the daemon is noticed. PostgreSQL: a LISTEN to keep open."""
        waker = cls()
        if store.backend == "sqlite":
            waker.store_file = StoreIdentity(sqlite_path(store.url))
        else:
            waker._dsn = store.url
        waker._listen_backoff = Backoff(max_backoff)
        return waker

    def watch_steps_and_file(self) -> bool:
        """Wake when the wall clock is set, and when the store's file is unlinked or
        renamed; False when either cannot be watched (then the loop polls)."""
        watched = self.watch_clock_steps()
        if self.store_file is not None:
            watched = self.watch_file(self.store_file.database) and watched
        return watched

    def install_signal_wakeup(self) -> None:
        """Signals arriving while we sleep in select() end the sleep at once."""
        self._old_wakeup_fd = signal.set_wakeup_fd(self._pipe.write_fd, warn_on_full_buffer=False)

    def bind_socket(self, directory: str) -> None:
        """Raises OSError when it cannot, ConfigError when `directory` is not private."""
        from jobd.store.files import private_dir

        private_dir(directory)
        old = os.umask(0o077)
        try:
            name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
            path = os.path.join(directory, name)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                with _reachable(directory) as short:
                    sock.bind(os.path.join(short, name))
            except OSError:
                sock.close()
                raise
        finally:
            os.umask(old)
        sock.setblocking(False)
        self._socket, self._socket_path = sock, path
        self.selector.register(sock, selectors.EVENT_READ, "socket")

    @property
    def socket_bound(self) -> bool:
        return self._socket is not None

    def watch_clock_steps(self) -> bool:
        """Wake when the wall clock is set (Linux); False where that is not possible."""
        if self._clock.fd is None:
            fd = self._clock.open()
            if fd is None:
                return False
            self.selector.register(fd, selectors.EVENT_READ, "clock")
        return True

    def watch_file(self, path: str) -> bool:
        """Wake when `path` is unlinked or renamed (Linux); False where that is not possible."""
        if self._file.fd is None:
            fd = self._file.open(path)
            if fd is None:
                return False
            self.selector.register(fd, selectors.EVENT_READ, "file")
        return True

    def listen_postgres(self, dsn: str) -> None:
        """A dedicated autocommit connection that LISTENs for `jobd trigger`'s NOTIFY."""
        import psycopg2

        self.unlisten()
        # It sits idle, so only TCP keepalives find a peer that vanished (a host
        # down, a cut without RST); a stall the daemon notices on its own
        # connection replaces this one too.
        conn = psycopg2.connect(
            dsn,
            connect_timeout=5,
            application_name="jobd-listen",
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {WAKE_CHANNEL}")
            cur.execute("SELECT current_schema()")
            self._schema = cur.fetchone()[0]
        # Remember the descriptor: a broken connection no longer tells its fileno(), and
        # a registration left behind makes the next LISTEN (same fd number) fail.
        self._listen_fd = conn.fileno()
        self.selector.register(self._listen_fd, selectors.EVENT_READ, "listen")
        self._listen_conn = conn

    def unlisten(self) -> None:
        if self._listen_fd is not None:
            with contextlib.suppress(Exception):
                self.selector.unregister(self._listen_fd)
            self._listen_fd = None
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                self._listen_conn.close()
            self._listen_conn = None

    @property
    def listening(self) -> bool:
        return self._listen_conn is not None and not self._listen_conn.closed

    def keep_listening(self) -> bool:
        """(Re)open the LISTEN connection when it is gone; True when it was just opened.

        The store's own connection reconnects transparently, so a terminated LISTEN
        connection must be noticed here, not only after a failed tick. A failure is
        logged once, and tried again as often as the store itself (with back-off)."""
        if self._dsn is None or self.listening or time.monotonic() < self._listen_retry_at:
            return False
        try:
            self.listen_postgres(self._dsn)
        except Exception as exc:
            if self._listen_backoff.current == 0:
                log.warning(
                    "cannot LISTEN for wake-ups (%s); retrying with back-off",
                    first_line(exc),
                    extra={"action": "store.listen"},
                )
            self._listen_retry_at = time.monotonic() + min(PROBE_EVERY, self._listen_backoff.next())
            return False
        if self._listen_backoff.reset() or self._listened:
            log.info("listening for wake-ups again", extra={"action": "store.listen"})
        self._listened = True
        return True

    def listen_retry_in(self) -> float | None:
        """Seconds until keep_listening() tries again; None when there is nothing to
        retry. Without LISTEN no trigger wakes the daemon: it must not sleep past this."""
        if self._dsn is None or self.listening:
            return None
        return max(0.0, self._listen_retry_at - time.monotonic())

    def wake(self) -> None:
        """Called from any thread: end the current or next sleep."""
        self._pipe.poke()

    def sleep(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True when woken before it ran out.

        A NOTIFY that names another schema (another jobd sharing the database) is
        not for us: the sleep goes on."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            events = self.selector.select(timeout=max(0.0, deadline - time.monotonic()))
            if not events:
                return False
            if self._handle(events):
                return True

    def sleep_precisely(self, timeout: float) -> bool:
        """sleep(), to the tenth of a millisecond: the selector counts whole
        milliseconds, rounded up, and wakes up to a millisecond past even that, which
        would start every scheduled run that late. The last two milliseconds are
        slept by a timer of finer grain instead."""
        deadline = time.monotonic() + timeout
        woken = self.sleep(max(0.0, timeout - 0.002))
        if not woken:
            rest = deadline - time.monotonic()
            if rest > 0.0001:
                nap(rest)
        return woken

    def _handle(self, events: list) -> bool:
        """Drain what woke us; True unless it was only other schemas' notifications."""
        relevant = False
        for key, _mask in events:
            if key.data == "pipe":
                self._pipe.drain()
            elif key.data == "socket":
                assert self._socket is not None
                with contextlib.suppress(BlockingIOError, OSError):
                    while self._socket.recv(64):
                        pass
            elif key.data == "clock":
                self._clock.stepped()  # the loop's JumpDetector says how far
            elif key.data == "file":
                self._file.drain()  # the tick looks at what happened to the file
            elif key.data == "listen":
                try:
                    self._listen_conn.poll()
                    payloads = [n.payload for n in self._listen_conn.notifies]
                    self._listen_conn.notifies.clear()
                except Exception:
                    self.unlisten()  # the daemon re-listens after its store recovers
                    relevant = True
                    continue
                # An empty payload (an older jobd) is for everyone.
                if any(not p or p == self._schema for p in payloads):
                    relevant = True
                continue
            relevant = True
        return relevant

    def close(self) -> None:
        if self._old_wakeup_fd is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._old_wakeup_fd)
        self.unlisten()
        if self._socket is not None:
            self._socket.close()
            if self._socket_path:
                with contextlib.suppress(OSError):
                    os.unlink(self._socket_path)
        self.selector.close()
        self._clock.close()
        self._file.close()
        self._pipe.close()
