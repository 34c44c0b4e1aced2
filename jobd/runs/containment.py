"""Every process a run starts is ended with the run, however it tried to leave.

A job's process group is not enough: `setsid` leaves it, a double fork leaves
its parent, `env -i` drops the variables that identified it. So, on Linux:

- Where jobd can write to its own cgroup v2 (root, or systemd's `Delegate=yes`),
  each run gets a child cgroup that its child joins before the job's first
  instruction, so every descendant is in it whatever it does to its session or
  environment; ending the run kills the cgroup (`cgroup.kill`) and removes it.
  A child that switches users (forked anyway) joins in its pre-exec step; any
  other is vforked, which leaves no room for code before exec, so it execs a
  shell gate that waits until jobd has moved it in (jobd.runs.process).
- jobd is also a child subreaper (PR_SET_CHILD_SUBREAPER): a descendant
  orphaned by its parent is re-parented to jobd rather than to init, so jobd
  sees it and ends it with its run. Which run it belonged to is read from its
  environment; one that cleared its environment is ended once no run that was
  going when it started is left, never while its run may still go on. Without
  cgroups this is what contains runs; with them, it catches nothing in practice.
- A child that switches users gets PR_SET_PDEATHSIG = SIGKILL, after the switch
  (a credential change clears it); the kernel sends it when the *thread* that
  forked the child ends, and jobd spawns only from threads that live as long as
  the process. Every run of a daemon that dies is ended by its keeper
  (jobd.runs.keeper), which also covers the vforked children.

Elsewhere (macOS) only the process group is signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CGROUP_ENV = "JOBD_RUN_CGROUPS"  # "off": no cgroup per run, even where jobd could make one
CGROUP_PREFIX = "jobd."
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
LINUX = sys.platform.startswith("linux")
# jobd.<host>-<pid>-<suffix>.run-<id> (Daemon's instance ids), or jobd.probe-<pid>
STALE_NAME = re.compile(r"^jobd\.(?:.+-(\d+)-[0-9a-f]{6}\.run-\d+|probe-(\d+))$")

_libc = ctypes.CDLL(None, use_errno=True) if LINUX else None


def prctl(option: int, value: int) -> bool:
    if _libc is None:
        return False
    return _libc.prctl(option, value, 0, 0, 0) == 0


def own_cgroup_dir(proc_root: str = "/proc") -> str | None:
    """The directory of this process's cgroup v2, or None without one."""
    try:
        with open(os.path.join(proc_root, "self/cgroup")) as handle:
            lines = handle.read().splitlines()
        with open(os.path.join(proc_root, "self/mountinfo")) as handle:
            mounts = handle.read().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    for mount in mounts:
        fields = mount.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            root_in_fs, mount_point = mount.split()[3], mount.split()[4]
            if not path.startswith(root_in_fs):
                continue
            relative = path[len(root_in_fs) :].lstrip("/")
            return os.path.join(mount_point, relative) if relative else mount_point
    return None


def _stat_fields(pid: int, proc_root: str = "/proc") -> list[str] | None:
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def boot_ticks() -> int:
    """Now, in the unit of a process's start time in /proc/PID/stat."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLOCK_TICKS) if LINUX else 0


class RunCgroup:
    """One run's cgroup: the child joins it through `procs_fd` before it execs."""

    @classmethod
    def existing(cls, path: str) -> RunCgroup:
        """One made earlier (by a jobd that is gone, or before a restart)."""
        cgroup = cls.__new__(cls)
        cgroup.path, cgroup.procs_fd = path, None
        cgroup._fd_lock = threading.Lock()
        return cgroup

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd_lock = threading.Lock()  # the joiner thread and the run's end share it
        os.mkdir(path, 0o755)
        try:
            # Opened by jobd: the kernel checks the opener's rights, so a child that
            # already switched to the job's user can still move itself in.
            self.procs_fd: int | None = os.open(
                os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC
            )
        except OSError:
            os.rmdir(path)
            raise

    def close_fd(self) -> None:
        with self._fd_lock:
            if self.procs_fd is not None:
                os.close(self.procs_fd)
                self.procs_fd = None

    def join(self, pid: int) -> None:
        """Move a just-started child in (one that could not join by itself)."""
        with self._fd_lock:
            if self.procs_fd is not None:
                with contextlib.suppress(OSError):  # it may have ended already
                    os.write(self.procs_fd, str(pid).encode())

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as handle:
                return [int(line) for line in handle if line.strip()]
        except OSError:
            return []

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL and _write(os.path.join(self.path, "cgroup.kill"), "1"):
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def remove(self, wait: float = 0.0) -> bool:
        """Kill what is left and remove the cgroup; False if it is not empty yet
        (killed processes take a moment to exit: up to `wait` seconds)."""
        self.close_fd()
        deadline = time.monotonic() + wait
        killed = False
        while True:
            try:
                os.rmdir(self.path)  # the usual case: empty already, one system call
            except FileNotFoundError:
                return True
            except OSError:
                if not killed:
                    self.signal(signal.SIGKILL)
                    killed = True
                    continue
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
            else:
                return True


def _write(path: str, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.write(fd, text.encode())
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _child_setup(procs_fd: int | None, parent: int) -> None:
    """In the child, after the switch to the job's user, before exec."""
    if procs_fd is not None:
        os.write(procs_fd, b"0")  # into the run's cgroup: everything it starts follows
        os.close(procs_fd)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # jobd died before the line above: do not run unsupervised
        os._exit(127)


class Containment:
    """The process-wide part: how runs are contained here, and their cgroups.

    `owner` names this jobd in its runs' cgroup names, so another jobd on the host
    (or this one, restarted) can tell whose runs they are."""

    def __init__(self) -> None:
        self.cgroup_dir: str | None = None
        self.subreaper = False
        self.owner = ""
        self._ready = False
        self._lock = threading.Lock()
        # Subreaper mode: runs going on, by id, with their start (boot ticks); and
        # the pids of runs' children (whose exit statuses belong to subprocess).
        self._runs: dict[int, int] = {}
        self._children: set[int] = set()
        self._pending: list[RunCgroup] = []  # cgroups whose last processes were dying
        self._joins: queue.SimpleQueue[tuple[RunCgroup, int, int]] = queue.SimpleQueue()
        self._joiner: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        """Set up for this process (a daemon), on a system where it means something."""
        return self._ready and LINUX

    @property
    def mode(self) -> str:
        if self.cgroup_dir is not None:
            return "cgroup"
        return "subreaper" if self.subreaper else "process group"

    def setup(self, owner: str) -> None:
        """Decide once per process, before the first run starts."""
        with self._lock:
            if self._ready:
                return
            self._ready = True
            self.owner = owner
            if not LINUX:
                return
            if os.environ.get(CGROUP_ENV, "").lower() not in ("off", "0", "no", "false"):
                self.cgroup_dir = self._usable_cgroup_dir()
            if self.cgroup_dir is not None:
                self._remove_stale(self.cgroup_dir)
            # Also with cgroups: a descendant forked before its run joined the
            # cgroup (a moment after exec) is still re-parented to us, and found.
            self.subreaper = prctl(PR_SET_CHILD_SUBREAPER, 1)

    def _usable_cgroup_dir(self) -> str | None:
        directory = own_cgroup_dir()
        if directory is None:
            return None
        probe = os.path.join(directory, f"{CGROUP_PREFIX}probe-{os.getpid()}")
        try:
            cgroup = RunCgroup(probe)
        except OSError:
            return None  # not ours to write: no delegation
        # Without cgroup.kill (Linux < 5.14) a cgroup is killed one pid at a time,
        # racing with its forks: the subreaper does as well, so use that.
        usable = os.path.exists(os.path.join(probe, "cgroup.kill"))
        cgroup.remove()
        return directory if usable else None

    @staticmethod
    def _remove_stale(directory: str) -> None:
        """Remove the run cgroups of jobd processes that are gone (with anything
        left in them): their keeper, which removes them, can have died too."""
        try:
            names = [n for n in os.listdir(directory) if n.startswith(CGROUP_PREFIX)]
        except OSError:
            return
        for name in names:
            match = STALE_NAME.match(name)
            if match is None:
                continue
            try:
                os.kill(int(match.group(1) or match.group(2)), 0)
            except ProcessLookupError:
                RunCgroup.existing(os.path.join(directory, name)).remove()
            except PermissionError:
                continue  # alive, as another user

    # -- one run -----------------------------------------------------------------

    def new_cgroup(self, run_id: int) -> RunCgroup | None:
        if self.cgroup_dir is None:
            return None
        name = f"{CGROUP_PREFIX}{self.owner}.run-{run_id}"
        try:
            return RunCgroup(os.path.join(self.cgroup_dir, name))
        except FileExistsError:
            stale = RunCgroup.existing(os.path.join(self.cgroup_dir, name))
            stale.remove()
            try:
                return RunCgroup(stale.path)
            except OSError:
                return None
        except OSError:
            return None

    def join_and_release(self, cgroup: RunCgroup, pid: int, gate: int) -> None:
        """Move a child waiting at its gate into its cgroup, then let it go on; done
        by a thread of its own, so that spawning the next run does not wait for
        the kernel's move (up to milliseconds, one at a time across the host).
        Takes over `gate` (the write end of the child's stdin) and the cgroup's fd."""
        self._joins.put((cgroup, pid, gate))
        with self._lock:
            if self._joiner is None:
                self._joiner = threading.Thread(
                    target=self._join_loop, name="jobd-cgroups", daemon=True
                )
                self._joiner.start()

    def _join_loop(self) -> None:
        while True:
            cgroup, pid, gate = self._joins.get()
            try:
                cgroup.join(pid)
                with contextlib.suppress(OSError):  # it may be gone already
                    os.write(gate, b"\n")
            except Exception:  # never end this thread: the next child would wait for good
                pass
            finally:
                with contextlib.suppress(OSError):
                    os.close(gate)
                cgroup.close_fd()

    def preexec(self, cgroup: RunCgroup | None) -> Callable[[], None] | None:
        if not LINUX:
            return None
        procs_fd = cgroup.procs_fd if cgroup is not None else None
        parent = os.getpid()
        return lambda: _child_setup(procs_fd, parent)

    def started(self, run_id: int, start_ticks: int) -> None:
        """A run is starting (before its child is spawned)."""
        with self._lock:
            self._runs[run_id] = start_ticks

    def child(self, pid: int) -> None:
        """A run's child: its exit status is its Popen's to collect."""
        with self._lock:
            self._children.add(pid)

    def helper(self, pid: int) -> None:
        """A child of jobd's own that is no run's descendant."""
        with self._lock:
            self._children.add(pid)

    def ended(self, run_id: int, pid: int | None) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
            self._children.discard(pid or 0)

    # -- subreaper: orphans re-parented to jobd -----------------------------------

    def discard(self, cgroup: RunCgroup | None = None, wait: float = 0.0) -> None:
        """Kill what is left of a run's cgroup and remove it, now or, while its last
        processes are still dying, at a later call (or the daemon's end)."""
        with self._lock:
            pending, self._pending = [*self._pending, *([cgroup] if cgroup else [])], []
        for each in pending:
            if not each.remove(wait):
                with self._lock:
                    self._pending.append(each)

    def kill_owner(self, owner: str) -> int:
        """Kill and remove the runs' cgroups of a jobd that is gone (SIGKILLed before
        it could); returns how many it found."""
        if self.cgroup_dir is None or owner == self.owner:
            return 0
        prefix = f"{CGROUP_PREFIX}{owner}.run-"
        try:
            names = [n for n in os.listdir(self.cgroup_dir) if n.startswith(prefix)]
        except OSError:
            return 0
        for name in names:
            self.discard(RunCgroup.existing(os.path.join(self.cgroup_dir, name)), wait=1.0)
        return len(names)

    def signal_tree(self, run_id: int, pid: int | None, sig: int) -> None:
        """Signal the run's child (unless it exited: pid None) and every descendant,
        attached to it or already orphaned; reap orphans that are over. With a
        cgroup, only orphans are looked for: ones that left before their run
        joined it."""
        if not self.subreaper:
            return
        walk = pid is not None and self.cgroup_dir is None
        roots = self._orphans_of(run_id, self._unknown_children())
        if walk and pid is not None:
            roots.append(pid)
        if not roots:
            return  # the common case: one look at our own children, no /proc walk
        tree = _children_by_parent()
        for root in roots:
            for member in _subtree(root, tree):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, sig)

    def end_all(self) -> None:
        """Kill every orphan still around (jobd is stopping: no run is left to own
        one), and remove the cgroups that were still emptying."""
        self.discard(wait=1.0)
        if not self.subreaper:
            return
        with self._lock:
            self._runs.clear()
        for _ in range(3):  # the killed ones' children are re-parented to us in turn
            roots = self._orphans_of(None, self._unknown_children())
            if not roots:
                return
            tree = _children_by_parent()
            for root in roots:
                for member in _subtree(root, tree):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(member, signal.SIGKILL)
            time.sleep(0.05)

    def _unknown_children(self) -> list[int]:
        """Children of this process that are no run's child nor a helper: orphans.

        Orphans are re-parented to the main thread (the kernel picks the first
        live thread of a subreaper), so only its list is read."""
        with self._lock:
            known = set(self._children)
        try:
            with open(f"/proc/self/task/{os.getpid()}/children") as handle:
                return [int(p) for p in handle.read().split() if int(p) not in known]
        except OSError:
            return []

    def _orphans_of(self, run_id: int | None, orphans: list[int]) -> list[int]:
        """Of `orphans`, those that belong to run `run_id`, and those no other run
        going on can own; reaps the ones that are over."""
        if not orphans:
            return []
        with self._lock:
            others = {r: start for r, start in self._runs.items() if r != run_id}
        found: list[int] = []
        for pid in orphans:
            fields = _stat_fields(pid)
            if fields is None:
                continue
            if fields[0] == "Z":  # an orphan that is over: ours to reap
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                continue
            owner = _owning_run(pid, int(fields[19]), others)
            if owner is None or owner == run_id:
                found.append(pid)
        return found


def _owning_run(pid: int, started: int, others: dict[int, int]) -> int | str | None:
    """The run an orphan belongs to by its environment; "others" for one that a run
    still going on may own; None when it cannot be told and no run that was
    going when it started is left."""
    env = _environ(pid)
    if env.get("JOBD_EXECUTION_ID", "").isdigit() and "JOBD_INSTANCE" in env:
        run_id = int(env["JOBD_EXECUTION_ID"])
        return "others" if run_id in others else run_id
    if any(start <= started + 1 for start in others.values()):
        return "others"
    return None


def _children_by_parent() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _subtree(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack += tree.get(current, [])
    return found


containment = Containment()
