"""systemd's sd_notify protocol, without libsystemd: readiness, status, reload, watchdog.

The service manager passes a datagram socket in NOTIFY_SOCKET; each message is
newline-separated KEY=VALUE assignments (sd_notify(3)). Outside systemd the
variable is unset and every method is a no-op, so the daemon calls them
unconditionally. Sending never raises: a lost status line must not stop jobs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("jobd.notify")

# Variables the service manager sets for the daemon alone. The runner removes
# them from a job's environment: a job must not ping our watchdog or claim
# readiness for us (NotifyAccess=main ignores it anyway; other managers may not).
NOTIFY_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _monotonic_usec() -> int:
    # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC reading to
    # order a reload against the SIGHUP it sent; it must be that exact clock.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _socket_address(value: str) -> str | None:
    """The AF_UNIX address for NOTIFY_SOCKET, or None when it is not one we can use."""
    if value.startswith("@"):
        # Linux abstract namespace: systemd writes it with '@' for the leading NUL.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: addresses (systemd >= 253 in VMs); not ours to reach


class Notifier:
    """Talks to the service manager; inactive (every call a no-op) without NOTIFY_SOCKET."""

    def __init__(
        self,
        socket_path: str | None,
        watchdog_usec: int | None = None,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        self._address = _socket_address(socket_path) if socket_path else None
        if socket_path and self._address is None:
            log.debug("NOTIFY_SOCKET %r is not a unix socket; notifications are off", socket_path)
        self._monotonic_usec = monotonic_usec
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # the runner's threads may report status too
        self._last_ping: float | None = None
        # Seconds between watchdog pings (half of WATCHDOG_USEC), or None when off.
        self.watchdog_interval: float | None = None
        if self._address is not None and watchdog_usec and watchdog_usec > 0:
            # Half the timeout, as sd_watchdog_enabled(3) recommends: one late
            # tick must not be enough for systemd to kill a healthy daemon.
            self.watchdog_interval = watchdog_usec / 2 / 1_000_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """A notifier for the sockets and watchdog the service manager passed us."""
        env = os.environ if environ is None else environ
        watchdog_usec: int | None = None
        raw_pid = env.get("WATCHDOG_PID", "").strip()
        # WATCHDOG_PID names the process the watchdog is meant for; when it is not
        # us (a wrapper script exec'd us without clearing it, or we are a child),
        # pinging would keep a dead parent looking alive.
        pid_ok = not raw_pid or (raw_pid.isdigit() and int(raw_pid) == os.getpid())
        if pid_ok:
            try:
                watchdog_usec = int(env.get("WATCHDOG_USEC", "").strip() or 0) or None
            except ValueError:
                log.debug("ignoring malformed WATCHDOG_USEC %r", env.get("WATCHDOG_USEC"))
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec)

    @property
    def active(self) -> bool:
        return self._address is not None

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: systemd lets dependent units start."""
        self._send("READY=1", *self._status_lines(status))

    def status(self, text: str) -> None:
        """One line for `systemctl status jobd`."""
        self._send(*self._status_lines(text))

    def reloading(self) -> None:
        """A SIGHUP reload has begun; send ready() when it is done."""
        self._send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def stopping(self) -> None:
        """Graceful shutdown has begun (running jobs are given shutdown_grace)."""
        self._send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before systemd's start/stop timeout kills us."""
        self._send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog(self) -> None:
        """Tell the watchdog we are alive, now."""
        self._send("WATCHDOG=1")

    def watchdog_due(self, monotonic_now: float) -> bool:
        """Whether a ping is due at `monotonic_now` (time.monotonic() seconds)."""
        if self.watchdog_interval is None:
            return False
        return self._last_ping is None or monotonic_now - self._last_ping >= self.watchdog_interval

    def maybe_watchdog(self, monotonic_now: float) -> bool:
        """Ping if one is due; the tick loop calls this every tick. True when it pinged."""
        if not self.watchdog_due(monotonic_now):
            return False
        self._last_ping = monotonic_now
        self.watchdog()
        return True

    def seconds_until_watchdog(self, monotonic_now: float) -> float | None:
        """How long the loop may sleep before the next ping is due; None without a watchdog."""
        if self.watchdog_interval is None:
            return None
        if self._last_ping is None:
            return 0.0
        return max(0.0, self._last_ping + self.watchdog_interval - monotonic_now)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    @staticmethod
    def _status_lines(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        # A newline would start a new assignment; systemd shows one line anyway.
        return ("STATUS=" + " ".join(text.splitlines()),)

    def _send(self, *lines: str) -> None:
        if self._address is None or not lines:
            return
        message = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    # Python sockets are close-on-exec, so jobs never inherit it.
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.sendto(message, self._address)
            except OSError as exc:
                log.debug("sd_notify %r failed: %s", lines[0], exc)
                if self._sock is not None:
                    # Start afresh next time: the manager may have re-created the socket.
                    self._sock.close()
                    self._sock = None
