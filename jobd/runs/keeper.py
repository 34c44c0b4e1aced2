"""The daemon's keeper: a small process that ends the daemon's job processes when
the daemon cannot.

`jobd run` starts one (`python -I -m jobd.runs.keeper`) and keeps a pipe to it:

- When the daemon dies, even by SIGKILL, the pipe reads end-of-file and the keeper
  kills every process of the daemon's runs: their cgroups (jobd.runs.containment),
  and every process whose environment names the daemon's instance.
- The daemon sends a fence after each heartbeat it wrote: `fence TERM_AT KILL_AT`
  (monotonic clock times, shared by every process of the host). A daemon that is
  paused (SIGSTOP, a VM freeze) or cut off from its store sends no newer one, and
  at TERM_AT the keeper sends SIGTERM to the runs, at KILL_AT SIGKILL: they are
  over before another instance may take them for abandoned and retry them.
  `fence -` disarms it (liveness by lock: nobody judges the daemon by heartbeat).

It ignores SIGINT, SIGTERM and SIGHUP: only the daemon's end ends it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

from jobd.runs.containment import CGROUP_PREFIX, RunCgroup

NEVER = float("inf")


def _instance_processes(instance: str) -> list[int]:
    needle = f"\0JOBD_INSTANCE={instance}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = b"\0" + handle.read() + b"\0"
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry))
    return found


def _run_cgroups(cgroup_dir: str | None, instance: str) -> list[RunCgroup]:
    if cgroup_dir is None:
        return []
    prefix = f"{CGROUP_PREFIX}{instance}.run-"
    try:
        names = sorted(n for n in os.listdir(cgroup_dir) if n.startswith(prefix))
    except OSError:
        return []
    return [RunCgroup.existing(os.path.join(cgroup_dir, name)) for name in names]


class Targets:
    """The runs' processes found at one moment: signalled together, then again."""

    def __init__(self, instance: str, cgroup_dir: str | None) -> None:
        self.cgroups = _run_cgroups(cgroup_dir, instance)
        self.pids = _instance_processes(instance)

    def __bool__(self) -> bool:
        return bool(self.cgroups or self.pids)

    def signal(self, sig: int) -> None:
        for cgroup in self.cgroups:
            cgroup.signal(sig)
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def serve(instance: str, cgroup_dir: str | None, stdin: int) -> None:
    term_at = kill_at = NEVER  # the current fence
    fenced: tuple[Targets, float] | None = None  # runs sent SIGTERM, and when to kill them
    buffer = b""
    while True:
        now = time.monotonic()
        if fenced is None and now >= term_at:
            targets = Targets(instance, cgroup_dir)
            targets.signal(signal.SIGTERM)
            fenced, term_at = (targets, kill_at), NEVER
        if fenced is not None and now >= fenced[1]:
            # Even if the daemon came back meanwhile: those runs are being stopped,
            # and it records them as such.
            fenced[0].signal(signal.SIGKILL)
            fenced = None
        due = min(term_at, fenced[1] if fenced is not None else NEVER)
        timeout = None if due == NEVER else max(0.0, due - now)
        ready, _, _ = select.select([stdin], [], [], timeout)
        if not ready:
            continue
        data = os.read(stdin, 4096)
        if not data:
            break
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            words = line.decode().split()
            if words[:1] == ["fence"] and len(words) == 3:
                term_at, kill_at = float(words[1]), float(words[2])
            elif words[:1] == ["fence"]:
                term_at = kill_at = NEVER
    # The daemon is gone: nothing of its runs may go on unsupervised.
    for _ in range(3):
        targets = Targets(instance, cgroup_dir)
        if not targets:
            break
        targets.signal(signal.SIGKILL)
        for cgroup in targets.cgroups:
            cgroup.remove(wait=1.0)


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    instance, cgroup_dir = argv[0], argv[1] if argv[1] != "-" else None
    serve(instance, cgroup_dir, sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
