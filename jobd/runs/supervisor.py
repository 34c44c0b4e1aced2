"""One thread that watches every running child: output, exit, timeout, cancel.

Each child is watched through its stdout pipe and, on Linux, a pidfd that
becomes readable the moment the child exits, so nothing polls: a run that ends
is seen at once, and an idle daemon with long runs sleeps until a pipe has
output or a timer (timeout, kill grace, output flush) is due. Where pidfd is
missing (macOS), exits are polled every EXIT_POLL seconds instead.

The escalation is the one cron users expect: on timeout or cancel the whole
process group gets SIGTERM, then SIGKILL after `kill_grace`; when the job
itself exits, anything it left in its group gets SIGTERM, and the run ends at
end of output or, if a leftover holds the output open, after `kill_grace`, when
the group gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from jobd.core.model import Outcome, Status
from jobd.runs.containment import containment
from jobd.system.selfpipe import SelfPipe

if TYPE_CHECKING:
    from jobd.runs.process import RunProcess

LOG_FLUSH_INTERVAL = 1.0  # seconds between output writes to the store, per run
READ_CHUNK = 65536
READS_PER_ROUND = 8  # chunks read from one pipe before the others get a turn
EXIT_POLL = 0.05  # seconds between exit checks where there is no pidfd


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_run(process: RunProcess, pid: int, sig: int, exited: bool = False) -> None:
    """The run's process group, and every descendant that left it (jobd.runs.containment).
    Once the child has `exited` its pid may be reused: only its group is signalled."""
    signal_group(pid, sig)
    if process.cgroup is not None:
        process.cgroup.signal(sig)
    containment.signal_tree(process.run_record.id, None if exited else pid, sig)


class _Watch:
    """The state of one running child, advanced by the supervisor."""

    def __init__(self, process: RunProcess, proc: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.proc = proc
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self.pidfd = os.pidfd_open(proc.pid)
        self.started = time.monotonic()
        timeout = process.spec.timeout
        self.deadline = self.started + timeout if timeout else None
        self.kill_grace = process.settings.kill_grace
        self.terminated_at: float | None = None
        self.killed = False
        self.exited_at: float | None = None
        self.exit_seen = self.pidfd is None  # without a pidfd, look every round
        self.timed_out = False
        self.eof = False
        self.last_flush = self.started
        self.flushed_bytes = 0

    def read(self, selector: selectors.BaseSelector) -> None:
        for _ in range(READS_PER_ROUND):
            try:
                data = os.read(self.fd, READ_CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.eof = True
                selector.unregister(self.fd)
                return
            self.process.tail.feed(data)

    def step(self, now: float) -> bool:
        """Apply whatever is due; True when the run is over."""
        pid = self.proc.pid
        if self.exited_at is None and self.exit_seen and self.proc.poll() is not None:
            self.exited_at = now
            # The job is over; anything it left in its group goes with it.
            signal_run(self.process, pid, signal.SIGTERM, self.exited_at is not None)
            self.terminated_at = self.terminated_at or now
        if self.exited_at is not None and (self.eof or now - self.exited_at > self.kill_grace):
            return True
        if self.terminated_at is None:
            if self.deadline is not None and now >= self.deadline:
                self.timed_out = True
                signal_run(self.process, pid, signal.SIGTERM, self.exited_at is not None)
                self.terminated_at = now
            elif self.process.stop_requested:
                signal_run(self.process, pid, signal.SIGTERM, self.exited_at is not None)
                self.terminated_at = now
        elif not self.killed and now - self.terminated_at >= self.kill_grace:
            signal_run(self.process, pid, signal.SIGKILL, self.exited_at is not None)
            self.killed = True
        tail = self.process.tail
        if now - self.last_flush >= LOG_FLUSH_INTERVAL and tail.total != self.flushed_bytes:
            self.process.report_output()
            self.flushed_bytes = tail.total
            self.last_flush = now
        return False

    def next_timer(self) -> float | None:
        """The monotonic time at which step() next has something to do by itself."""
        times = []
        if self.terminated_at is None:
            if self.deadline is not None:
                times.append(self.deadline)
        elif not self.killed:
            times.append(self.terminated_at + self.kill_grace)
        if self.exited_at is not None and not self.eof:
            times.append(self.exited_at + self.kill_grace + 0.001)
        if self.process.tail.total != self.flushed_bytes:
            times.append(self.last_flush + LOG_FLUSH_INTERVAL)
        if self.pidfd is None and self.exited_at is None:  # no pidfd (any more): look again soon
            times.append(time.monotonic() + EXIT_POLL)
        return min(times) if times else None

    def finish(self, selector: selectors.BaseSelector) -> None:
        proc = self.proc
        if not self.eof:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.fd)
        self.close_pidfd(selector)
        if proc.poll() is None:  # only after an internal error: never leave it running
            signal_run(self.process, proc.pid, signal.SIGKILL)
        proc.wait()
        # The run is over: nothing it started outlives it, in its group or not.
        signal_group(proc.pid, signal.SIGKILL)
        if self.process.cgroup is not None:
            containment.discard(self.process.cgroup)
        containment.signal_tree(self.process.run_record.id, None, signal.SIGKILL)
        assert proc.stdout is not None
        proc.stdout.close()
        elapsed = time.monotonic() - self.started
        self.process.finish(self.process.outcome(proc.returncode, self.timed_out, elapsed))

    def close_pidfd(self, selector: selectors.BaseSelector) -> None:
        if self.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None


class Supervisor:
    """Watches children handed over by `watch()`, in one daemon thread started on first use."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._pipe = SelfPipe(self._selector, None)
        self._incoming: queue.SimpleQueue[_Watch] = queue.SimpleQueue()
        self._watches: list[_Watch] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._adopt_pending = False

    def watch(self, process: RunProcess, proc: subprocess.Popen[bytes]) -> None:
        self._incoming.put(_Watch(process, proc))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="jobd-runs", daemon=True)
                self._thread.start()
        # One wake-up per batch of new runs: _adopt() clears the flag before it
        # drains the queue, so a run added after that pokes again.
        if not self._adopt_pending:
            self._adopt_pending = True
            self.poke()

    def poke(self) -> None:
        """From any thread: look at every run again now (a stop request, a new run)."""
        self._pipe.poke()

    def _loop(self) -> None:
        while True:
            timers = [t for t in (w.next_timer() for w in self._watches) if t is not None]
            timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
            for key, _mask in self._selector.select(timeout):
                if key.data is None:
                    self._pipe.drain()
                    continue
                watch, what = key.data
                if what == "out":
                    watch.read(self._selector)
                else:
                    watch.exit_seen = True
                    watch.close_pidfd(self._selector)  # readable for good once the child exited
            self._adopt()
            now = time.monotonic()
            still: list[_Watch] = []
            for watch in self._watches:
                try:
                    over = watch.step(now)
                    if over:
                        watch.finish(self._selector)
                except Exception as exc:  # a bug here must end that run, never hang the rest
                    with contextlib.suppress(Exception):
                        watch.finish(self._selector)
                    watch.process.finish(
                        Outcome(Status.FAILED, error=f"jobd internal error: {exc!r}")
                    )
                    over = True
                if not over:
                    still.append(watch)
            self._watches = still

    def _adopt(self) -> None:
        self._adopt_pending = False
        while True:
            try:
                watch = self._incoming.get_nowait()
            except queue.Empty:
                return
            self._selector.register(watch.fd, selectors.EVENT_READ, (watch, "out"))
            if watch.pidfd is not None:
                self._selector.register(watch.pidfd, selectors.EVENT_READ, (watch, "exit"))
            self._watches.append(watch)


_shared: Supervisor | None = None
_shared_lock = threading.Lock()


def shared_supervisor() -> Supervisor:
    """The process's supervisor, created on first use (after any daemonizing fork)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Supervisor()
        return _shared
