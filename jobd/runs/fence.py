"""Self-fencing: a daemon that cannot show it is alive stops its own runs first.

Where liveness is judged by heartbeat (PostgreSQL; SQLite without lock files),
another instance marks our runs abandoned, and retries them, once our last
heartbeat is older than `lease_ttl` by the store's clock. The heartbeat is dated
by the store during the statement, so it is no earlier than the moment we sent
it (`sent`, on our monotonic clock). Counting from `sent`:

- at TERM_FRACTION (2/3) of lease_ttl without a newer heartbeat, we stop
  claiming and send our runs SIGTERM (their retries elsewhere are to be the only
  copies), and record them as abandoned by fencing when the store is back;
- at the latest at KILL_FRACTION (5/6) of lease_ttl (sooner when kill_grace
  is shorter) they get SIGKILL;
- the last sixth is the margin: at lease_ttl = 30 s, 5 s for a late SIGKILL
  (a loaded host) and for the two clocks to differ in rate. Our monotonic clock
  would have to run 20 % slow against the store's for SIGKILL to come after the
  store's lease_ttl; NTP keeps rates within 0.05 %.

The keeper process (jobd.runs.keeper) enforces both times, so they hold while this
daemon is paused (SIGSTOP), blocked on a frozen connection, or dead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobd.runs.containment import containment

if TYPE_CHECKING:
    from jobd.store import Store

log = logging.getLogger("jobd")

TERM_FRACTION = 2 / 3
KILL_FRACTION = 5 / 6


def fence_times(sent: float, ttl: float, kill_grace: float) -> tuple[float, float]:
    """(SIGTERM at, SIGKILL at) for runs whose heartbeat was last sent at `sent`."""
    term_at = sent + ttl * TERM_FRACTION
    return term_at, min(term_at + kill_grace, sent + ttl * KILL_FRACTION)


class Fence:
    """This daemon's fence: when its runs must be stopped unless it renews first."""

    def __init__(self, ttl: float, kill_grace: float, armed: bool) -> None:
        self.ttl = ttl
        self.kill_grace = kill_grace
        self.armed = armed  # heartbeat-judged liveness: others may take our runs for lost
        self.sent = time.monotonic()
        self.term_at, self.kill_at = fence_times(self.sent, ttl, kill_grace)
        self.keeper: Keeper | None = None
        # (term_at, silence) of the last time the fence fired and was then renewed:
        # the keeper stopped the runs started before term_at, and a run reaped after
        # the renewal (the Beat thread may renew first when a paused daemon resumes)
        # is still to be recorded as stopped by fencing.
        self.tripped: tuple[float, float] | None = None
        self._lock = threading.Lock()  # renewed by the loop and by the Beat thread

    def renewed(self, sent: float) -> None:
        """A heartbeat sent at monotonic `sent` was written."""
        with self._lock:
            if sent <= self.sent:
                return
            if self.fired():
                self.tripped = (self.term_at, self.age())
            self.sent = sent
            self.term_at, self.kill_at = fence_times(sent, self.ttl, self.kill_grace)
            if self.keeper is not None and self.armed:
                self.keeper.send(f"fence {self.term_at:.6f} {self.kill_at:.6f}")

    def age(self) -> float:
        return time.monotonic() - self.sent

    def fired(self) -> bool:
        return self.armed and time.monotonic() >= self.term_at

    def reason(self, started: float | None = None) -> str | None:
        """Why a run of ours (started at monotonic `started`) was stopped, if the fence
        did it: now, or in a silence since renewed."""
        if self.fired():
            silence = self.age()
        elif self.tripped is not None and started is not None and started < self.tripped[0]:
            silence = self.tripped[1]
        else:
            return None
        return (
            f"stopped by fencing: no heartbeat reached the store for {silence:.1f}s "
            f"(lease_ttl {self.ttl:g}s); its retry may run elsewhere"
        )


class Beat:
    """While runs go on, renews the heartbeat every lease_ttl/6 from a thread of its
    own, on its own connection: a loop held up by a long tick or a lock wait is
    not a daemon cut off from its store, and should not be fenced as one."""

    def __init__(self, store: Store, instance: str, fence: Fence, busy: Callable[[], bool]) -> None:
        self.store = store
        self.instance = instance
        self.fence = fence
        self.busy = busy
        self._conn: Any = None  # PostgreSQL: a connection of its own, named jobd-beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jobd-beat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        period = self.fence.ttl / 6
        while not self._stop.wait(period):
            if not self.busy():
                continue
            sent = time.monotonic()
            try:
                self._touch()
            except Exception as exc:  # a store error, or a bug: never end the thread
                log.debug("heartbeat thread: %r", exc, extra={"action": "daemon.beat"})
                self._close()
                continue
            self.fence.renewed(sent)

    def _touch(self) -> None:
        if self.store.backend != "postgresql":
            self.store.touch_instance(self.instance)
            return
        if self._conn is None:
            # A frozen network must fail this statement well within the fence, so
            # that the beat is back as soon as the store is: unacknowledged data is
            # given up on after a sixth of lease_ttl.
            timeout_ms = max(1000, int(self.fence.ttl * 1000 / 6))
            import psycopg2  # here: a SQLite daemon never loads the PostgreSQL driver

            self._conn = psycopg2.connect(
                self.store.url,
                connect_timeout=max(1, int(self.fence.ttl / 6)),
                application_name="jobd-beat",
                keepalives=1,
                keepalives_idle=max(1, int(self.fence.ttl / 6)),
                keepalives_interval=1,
                keepalives_count=3,
                tcp_user_timeout=timeout_ms,
            )
            self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(
                "UPDATE instances SET heartbeat_at = (now() AT TIME ZONE 'utc') WHERE id = %s",
                (self.instance,),
            )

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if self.store.backend != "postgresql":
            with contextlib.suppress(Exception):
                self.store.db.close()  # this thread's connection: a new one next time


class Keeper:
    """The client side of jobd.runs.keeper: started once, restarted if it dies."""

    def __init__(self, instance: str, cgroup_dir: str | None) -> None:
        self.instance = instance
        self.cgroup_dir = cgroup_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._last = ""

    def start(self) -> int:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "jobd.runs.keeper", self.instance, self.cgroup_dir or "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            cwd="/",
            start_new_session=True,  # a terminal's Ctrl-C is for the daemon, not for it
            close_fds=True,
        )
        if self._last:
            self.send(self._last)
        return self.proc.pid

    def send(self, line: str) -> None:
        self._last = line
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            log.error(
                "the keeper process (pid %d) is gone; starting another",
                self.proc.pid,
                extra={"action": "daemon.keeper"},
            )
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)
            self.proc = None

            containment.helper(self.start())

    def close(self) -> None:
        """The daemon is stopping with no run left: let the keeper end."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        # A stepped wall clock can make the wait's sleeps fail (EINVAL): then the
        # keeper finishes on its own, after this process is gone.
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.proc.wait(timeout=5)
