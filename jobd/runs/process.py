"""Run one execution in a child process: its own session and process group, output
tail captured, timeout and cancel escalated SIGTERM → SIGKILL to the whole group.

A RunProcess never touches the store: it reports what happens through
`report(event)` (from the supervisor's thread) and the daemon records it, in batches.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jobd.core.durations import format_duration
from jobd.core.masking import Masker
from jobd.core.model import STORE_DATABASE, JobKind, JobSpec, Outcome, Run, Settings, Status
from jobd.core.urls import is_postgres
from jobd.runs.childlog import error_line
from jobd.runs.containment import RunCgroup, boot_ticks, containment
from jobd.runs.supervisor import LOG_FLUSH_INTERVAL, READ_CHUNK, Supervisor, shared_supervisor

__all__ = ["LOG_FLUSH_INTERVAL", "Event", "OutputTail", "RunProcess", "build_argv", "build_env"]

# The daemon's own wiring and credentials, which a job does not inherit: its store
# (JOBD_STORE and every other JOBD_* variable), libpq's settings and password
# (PGPASSWORD, PGPASSFILE, PGSERVICEFILE: every PG* variable), systemd's
# credentials, readiness and watchdog. A job that needs one names it in its own
# `env` (a value) or `secret_env` (taken from here, masked in its output).
PRIVATE_ENV = frozenset(
    ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY")
)
PRIVATE_ENV_PREFIXES = ("JOBD_", "PG")


class OutputTail:
    """The last `max_lines` lines of output, also at most `max_bytes`; memory stays bounded.

    Secrets are masked in what it gives out, in their encoded forms too.
    """

    def __init__(self, max_lines: int, max_bytes: int, secrets: tuple[str, ...] = ()) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.masker = Masker(secrets)
        # A secret cut by the byte bound must still be seen whole to be masked, so the
        # buffer keeps this much more than max_bytes.
        self._margin = self.masker.longest
        self.total = 0  # every byte the job wrote
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > 2 * self.max_bytes + READ_CHUNK + self._margin:
            del self._buf[: len(self._buf) - self.max_bytes - self._margin]

    def snapshot(self, partial: bool = False) -> tuple[str, int]:
        """The tail to store, and the byte count to store beside it.

        The count is every byte the job wrote, less what masking took out of the
        tail: counting the masked bytes made `jobd logs` report as dropped
        ("N earlier bytes were not kept") what was only masked. While the run
        goes on (`partial`), output that may be a secret's first bytes waits for
        the rest: `jobd logs --follow` cannot take back what it printed.
        """
        if self.max_lines == 0 or self.max_bytes == 0:
            return "", self.total
        buf = bytes(self._buf)
        held = self.masker.unfinished(buf) if partial else 0
        buf = buf[: len(buf) - held]
        start = max(0, len(buf) - self.max_bytes)
        raw = self.masker.mask_bytes(buf, start)
        total = self.total - held - (len(buf) - start - len(raw))
        if not raw:
            return "", total  # no output is no log, not an empty line
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
            raw = b"\n".join(lines[-self.max_lines :]) + b"\n"
        else:
            raw = b"\n".join(lines[-self.max_lines :])
        text = raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        # Each invalid byte became a 3-byte U+FFFD: binary output would otherwise
        # store up to three times max_bytes. Keep the bound on what is stored.
        encoded = text.encode()
        if len(encoded) > self.max_bytes:
            text = encoded[-self.max_bytes :].decode("utf-8", errors="ignore")
        return text, total

    def text(self) -> str:
        return self.snapshot()[0]


@dataclass(frozen=True)
class Event:
    kind: str  # "started" | "log" | "done"
    run_id: int
    pid: int | None = None
    log: str | None = None
    log_bytes: int = 0
    outcome: Outcome | None = None


# The children that run sql and http jobs end a failed run with an error line
# (childlog.py), which becomes the run's error; the output tail is masked first.
ERROR_LINE_KINDS = (JobKind.SQL, JobKind.HTTP)


# jobd's own children run isolated (-I): no PYTHON* variable, no user site, and
# above all not the working directory on sys.path, which `python -m` would put
# first. A job's `cwd` may be writable by others: a `jobd` package planted there
# would otherwise run with the job's rights, root's for a root daemon.
RUNNER = (sys.executable, "-I", "-m")


def as_user(user: str, env: dict[str, str]) -> dict[str, Any]:
    """Popen's arguments to run as `user` (root only), and that user's HOME, USER
    and LOGNAME in `env`."""
    if os.geteuid() != 0:
        raise PermissionError(
            f"user = {user!r} needs jobd to run as root (it runs as uid {os.geteuid()})"
        )
    entry = pwd.getpwnam(user)
    env.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    return {
        "user": entry.pw_uid,
        "group": entry.pw_gid,
        "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid),
    }


def build_argv(spec: JobSpec) -> list[str]:
    if spec.kind is JobKind.COMMAND:
        return list(spec.command)
    if spec.kind is JobKind.SHELL:
        return ["/bin/sh", "-c", spec.shell]
    if spec.kind is JobKind.SQL:
        # The job's name only, for `ps`: the statement and the URL go in the environment.
        return [*RUNNER, "jobd.runs.kinds.sql", spec.name]
    if spec.kind is JobKind.HTTP:
        return [*RUNNER, "jobd.runs.kinds.http", spec.name]
    return [*RUNNER, "jobd.runs.kinds.call", spec.call]


def private(name: str) -> bool:
    """Whether a variable of the daemon's environment is kept from jobs by default."""
    return name in PRIVATE_ENV or name.startswith(PRIVATE_ENV_PREFIXES)


def build_env(
    spec: JobSpec, run: Run, base: Mapping[str, str], store_url: str | None = None
) -> dict[str, str]:
    """The job's environment: the daemon's without its private variables (unless
    the job names them), the job's `env`, and which run this is."""
    named = set(spec.secret_env)
    to_store = spec.kind is JobKind.SQL and spec.database == STORE_DATABASE
    if to_store:
        # It asked for the store: it connects as the daemon does, libpq's
        # PGPASSWORD, PGPASSFILE and the like included.
        named |= {k for k in base if k.startswith("PG")}
    env = {k: v for k, v in base.items() if k in named or not private(k)}
    env.update(spec.env)
    timeout = str(spec.timeout or "")
    if spec.kind is JobKind.SQL:
        database = spec.database or ""
        if to_store:
            # Only a job that said `database = "store"`, and only a PostgreSQL store.
            database = store_url if store_url and is_postgres(store_url) else ""
        env.update(JOBD_SQL=spec.sql, JOBD_SQL_DATABASE=database, JOBD_SQL_TIMEOUT=timeout)
    elif spec.kind is JobKind.HTTP:
        env.update(JOBD_HTTP=json.dumps(spec.http), JOBD_HTTP_TIMEOUT=timeout)
    env.update(
        JOBD_JOB=spec.name,
        JOBD_EXECUTION_ID=str(run.id),
        JOBD_ATTEMPT=str(run.attempt),
        JOBD_TRIGGER=run.trigger.value,
    )
    if run.scheduled_for is not None:
        env["JOBD_SCHEDULED_FOR"] = run.scheduled_for.isoformat()
    if run.instance is not None:
        env["JOBD_INSTANCE"] = run.instance  # whose run it is, for kill_leftovers
    return env


# The gate a job's child execs first when it gets a cgroup: the shell waits until
# jobd has moved it in (a line on stdin; end-of-file means jobd died: run
# nothing), then becomes the job, with stdin from /dev/null as usual.
CGROUP_GATE = ["/bin/sh", "-c", 'read -r _ || exit 127; exec "$@" </dev/null', "jobd-gate"]
# The same for a shell job, on the first line of its script (its line numbers stay).
SHELL_GATE = "read -r _ || exit 127; exec </dev/null; "


def check_executable(program: str, path: str, cwd: str | None) -> None:
    """Raise what exec would, for a program the gate is to exec: its "cannot start"
    must still be said by jobd, not become the run's exit code 127."""
    if "/" in program:
        candidates = [os.path.join(cwd or "", program)]
    else:
        candidates = [os.path.join(d or ".", program) for d in path.split(os.pathsep)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return
            if "/" in program:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class RunProcess:
    """One execution: its child is spawned by `start()`, in the caller's thread, and
    then watched, with every other run, by the shared Supervisor thread.

    A thread per run cost a thread start, GIL hand-overs and a polling loop per
    run; one watcher over all children's pipes and exit notifications does the
    same work without them.
    """

    def __init__(
        self,
        run: Run,
        spec: JobSpec,
        settings: Settings,
        report: Callable[[Event], None],
        base_env: Mapping[str, str] | None = None,
        store_url: str | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.name = f"run-{run.id}"
        self.run_record = run
        self.spec = spec
        self.settings = settings
        self.report = report
        self.base_env = os.environ.copy() if base_env is None else base_env  # only read
        self.store_url = store_url  # the default database of sql jobs
        self.supervisor = supervisor
        self._stop_reason: tuple[Status, str] | None = None
        self._done = threading.Event()
        # A secret may come from the job's env or, kept out of the store, the daemon's.
        sources = (spec.env, self.base_env)
        secrets = tuple(
            source[name] for name in spec.secret_env for source in sources if name in source
        )
        self.tail = OutputTail(settings.log_lines, settings.log_bytes, secrets)
        self.pid: int | None = None
        self.cgroup: RunCgroup | None = None
        # Set by the executor: why the daemon's fence stopped its runs, if it did.
        self.fenced: Callable[[], str | None] | None = None

    def start(self) -> None:
        """Spawn the child now; a child that cannot start ends the run as failed."""
        # Counted as going on from before its first process exists, so that an
        # orphan of the run is never taken for one that no run can own.
        containment.started(self.run_record.id, boot_ticks())
        try:
            proc = self._spawn()
        except (OSError, KeyError, PermissionError, subprocess.SubprocessError) as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, KeyError):
                message = f"unknown user {self.spec.user!r}"
            target = build_argv(self.spec)[0]
            self.finish(Outcome(Status.FAILED, error=f"cannot start {target}: {message}"))
            return
        except Exception as exc:  # a bug here must still end the run, never hang it
            self.finish(Outcome(Status.FAILED, error=f"jobd internal error: {exc!r}"))
            return
        self.pid = proc.pid
        containment.child(proc.pid)
        self.report(Event("started", self.run_record.id, proc.pid))
        (self.supervisor or shared_supervisor()).watch(self, proc)

    def stop(self, status: Status, reason: str) -> None:
        """Ask the run to end (cancel or shutdown); the first reason given wins."""
        if self._stop_reason is None:
            self._stop_reason = (status, reason)
        if not self._done.is_set():
            (self.supervisor or shared_supervisor()).poke()

    @property
    def stop_requested(self) -> bool:
        return self._stop_reason is not None

    def is_alive(self) -> bool:
        return not self._done.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def finish(self, outcome: Outcome) -> None:
        """The run is over: report it, once, with its output tail."""
        if self._done.is_set():
            return
        self._done.set()
        containment.ended(self.run_record.id, self.pid)
        tail, stored_bytes = self.tail.snapshot()
        self.report(Event("done", self.run_record.id, self.pid, tail, stored_bytes, outcome))

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = build_env(self.spec, self.run_record, self.base_env, self.store_url)
        kwargs = as_user(self.spec.user, env) if self.spec.user else {}
        # Every descendant joins the run's cgroup where jobd can make one
        # (jobd.runs.containment). A child that switches users is forked (not vforked)
        # anyway, so it joins by itself before exec, and takes PR_SET_PDEATHSIG.
        # Code run in any other child before exec would cost every spawn a full
        # fork (4x the time): it execs a gate instead, a shell that waits on its
        # stdin until jobd has moved it into the cgroup, then execs the job.
        argv = build_argv(self.spec)
        cgroup = self.cgroup = containment.new_cgroup(self.run_record.id)
        preexec = None
        stdin: int = subprocess.DEVNULL
        gate = None
        if self.spec.user:
            preexec = containment.preexec(cgroup)
            if cgroup is not None and cgroup.procs_fd is not None:
                kwargs["pass_fds"] = (cgroup.procs_fd,)
        elif cgroup is not None:
            stdin, gate = os.pipe()
            if self.spec.kind is JobKind.SHELL:  # already a shell: it waits by itself
                argv = [argv[0], argv[1], SHELL_GATE + argv[2]]
            else:
                check_executable(argv[0], env.get("PATH", os.defpath), self.spec.cwd)
                argv = [*CGROUP_GATE, *argv]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.spec.cwd,
                env=env,
                start_new_session=True,  # its own session and process group: we kill the group
                close_fds=True,
                preexec_fn=preexec,  # runs after the switch to `user`
                **kwargs,
            )
        except BaseException:
            if gate is not None:
                os.close(gate)
            if cgroup is not None:
                cgroup.remove()
                self.cgroup = None
            raise
        finally:
            if gate is not None:
                os.close(stdin)
        if cgroup is not None and gate is not None:
            containment.join_and_release(cgroup, proc.pid, gate)
        elif cgroup is not None:
            cgroup.close_fd()
        return proc

    def outcome(self, returncode: int, timed_out: bool, elapsed: float) -> Outcome:
        code = returncode if returncode >= 0 else None
        sig = -returncode if returncode < 0 else None
        if timed_out:
            limit = format_duration(self.spec.timeout or 0)
            return Outcome(Status.TIMED_OUT, code, sig, f"timed out after {limit}")
        if self._stop_reason is not None:
            status, reason = self._stop_reason
            return Outcome(status, code, sig, reason)
        fenced = self.fenced() if self.fenced is not None and sig is not None else None
        if fenced is not None:  # the keeper stopped it while this daemon could not
            return Outcome(Status.ABANDONED, code, sig, fenced)
        if returncode == 0:
            return Outcome(Status.SUCCEEDED, 0)
        if sig is not None:
            return Outcome(Status.FAILED, None, sig, f"killed by {signal_name(sig)}")
        return Outcome(Status.FAILED, code, None, self._error_line() or f"exit code {code}")

    def _error_line(self) -> str | None:
        """The `error: …` line a jobd runner child ended its output with, if any."""
        if self.spec.kind not in ERROR_LINE_KINDS:
            return None
        return error_line(self.tail.text())

    def report_output(self) -> None:
        """Send the output so far to the store (called about once a second while it grows)."""
        tail, stored_bytes = self.tail.snapshot(partial=True)
        self.report(Event("log", self.run_record.id, log=tail, log_bytes=stored_bytes))


def kill_leftovers(
    run_id: int, job: str, instance: str | None = None, proc_root: str = "/proc"
) -> int:
    """SIGKILL every process still carrying this run's identity in its environment.

    A daemon killed with SIGKILL cannot take its runs' process groups with it; the
    next daemon on the host finds them here, by the JOBD_EXECUTION_ID every job
    process inherits (a recorded pid alone could have been reused). Execution ids
    and job names repeat across stores, so when the run's `instance` is known only
    processes that jobd instance started match: another jobd on the host (another
    store, another user's) keeps its runs. Linux only; elsewhere it finds nothing.
    Returns how many processes it signalled.
    """
    markers = [f"JOBD_EXECUTION_ID={run_id}", f"JOBD_JOB={job}"]
    if instance is not None:
        markers.append(f"JOBD_INSTANCE={instance}")
    # Whole variables only: FOO_JOBD_JOB=x is not JOBD_JOB=x.
    needles = [f"\0{marker}\0".encode() for marker in markers]
    killed = 0
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(os.path.join(proc_root, entry, "environ"), "rb") as handle:
                environ = b"\0" + handle.read() + b"\0"
        except OSError:
            continue
        if all(needle in environ for needle in needles):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
    return killed
