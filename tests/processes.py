"""Looking at real processes from tests: process groups, survivors, marked processes.

A process killed while its parent is gone stays a zombie until init reaps it
(on some machines only every second or two), and kill(pid, 0) still succeeds on
a zombie. So "no survivor" means no process that is not a zombie; the stricter
`os.killpg(pgid, 0)` check is polled with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def group_survivors(pgid: int) -> list[int]:
    """Members of process group `pgid` that are still running (zombies excluded)."""
    found = []
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] != "Z":
            found.append(pid)
    return found


def group_gone(pgid: int) -> bool:
    """True once the kernel knows no member of the group at all (zombies reaped too)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_dead(pid: int, timeout: float = 2.0) -> None:
    """A SIGKILLed process takes a moment to die; it must not take long."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} survived {timeout}s")
        time.sleep(0.01)


def assert_group_gone(pgid: int, reaped: bool = False, timeout: float = 10.0) -> None:
    """No member of the group runs within moments; with `reaped`, also wait until the
    kernel forgets the group (init has reaped the zombies)."""
    deadline = time.monotonic() + 2.0
    while survivors := group_survivors(pgid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} has survivors: {survivors}")
        time.sleep(0.01)
    deadline = time.monotonic() + timeout
    while reaped and not group_gone(pgid):
        assert not group_survivors(pgid), f"process group {pgid} has live members again"
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} still has zombies after {timeout}s")
        time.sleep(0.05)


# Not JOBD_*: jobd keeps its own variables from its jobs, and this one must reach them.
MARKER_ENV = "TEST_JOBD_TOKEN"


def marked(token: str) -> list[int]:
    """Live processes whose environment carries MARKER_ENV=token.

    Tests start daemons with that variable; jobs inherit it, so it finds every job
    process and grandchild a test started, even ones that left their group.
    """
    needle = f"{MARKER_ENV}={token}".encode()
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in env and alive(pid):
            found.append(pid)
    return found


def kill_marked(token: str) -> None:
    for pid in marked(token):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def keeper_of(daemon_pid: int) -> int | None:
    """The keeper process (jobd.runs.keeper) a `jobd run` started, if any."""
    for pid in _all_pids():
        stat = _stat(pid)
        if stat is None or stat[1] != daemon_pid:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"jobd.runs.keeper" in handle.read():
                    return pid
        except OSError:
            continue
    return None
