"""Sleeping until something happens: a selector over a self-pipe (signals and
threads), a per-daemon wake socket (SQLite: `jobd trigger` pokes it), a
PostgreSQL LISTEN connection, and a clock-step timer (jobd.system.clockstep). The
daemon never polls in a loop.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from jobd.store.queries import WAKE_CHANNEL
from jobd.system.clockstep import ClockStepWatch
from jobd.system.filewatch import FileWatch

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


class Waker:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.selector.register(self._read_fd, selectors.EVENT_READ, "pipe")
        self._socket: socket.socket | None = None
        self._socket_path: str | None = None
        self._listen_conn: Any = None
        self._listen_fd: int | None = None
        self._schema: str | None = None  # the store's schema, named by a NOTIFY's payload
        self._old_wakeup_fd: int | None = None
        self._clock = ClockStepWatch()
        self._file = FileWatch()

    def install_signal_wakeup(self) -> None:
        """Signals arriving while we sleep in select() end the sleep at once."""
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

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

    def wake(self) -> None:
        """Called from any thread: end the current or next sleep."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"w")

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

    def _handle(self, events: list) -> bool:
        """Drain what woke us; True unless it was only other schemas' notifications."""
        relevant = False
        for key, _mask in events:
            if key.data == "pipe":
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._read_fd, 4096):
                        pass
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
        os.close(self._read_fd)
        os.close(self._write_fd)
