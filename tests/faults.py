"""A real `jobd run` process for fault tests, and ways to look at what it did.

Every daemon a fault test starts carries MARKER_ENV in its environment;
its jobs and their children inherit it, so `orphans()` finds any process the
test left behind, even one that escaped its process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.conftest import jobd_cmd, wait_for
from tests.processes import MARKER_ENV, kill_marked, marked


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)  # root refuses a config others can write, whatever the umask
    return path


def q(text: str) -> str:
    """`text` as a TOML string (a JSON string is one)."""
    return json.dumps(text)


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # pragma: no cover - a zombie has no VmRSS


class Daemon:
    """`jobd --config CONFIG run` with its log in a file; stop() or kill() it."""

    def __init__(
        self,
        config: Path,
        url: str,
        log: Path,
        env: dict[str, str] | None = None,
        token: str | None = None,
        args: Iterable[str] = (),
        preexec: Any = None,
        prefix: Iterable[str] = (),
        jobd: Iterable[str] | None = None,
    ) -> None:
        self.config, self.url, self.log_path = config, url, log
        self.token = token or uuid.uuid4().hex
        self.env = {
            **os.environ,
            "JOBD_STORE": url,
            MARKER_ENV: self.token,
            "XDG_DATA_HOME": str(log.parent / "data"),
            **(env or {}),
        }
        self.env.pop("JOBD_CONFIG", None)
        self.args = list(args)
        self.preexec = preexec
        self.prefix = list(prefix)  # e.g. setpriv, to run the daemon as another user
        self.jobd = list(jobd) if jobd is not None else jobd_cmd()  # how to start jobd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, ready: bool = True) -> Daemon:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, *self.jobd, "--config", str(self.config), "run", *self.args],
                env=self.env,
                stdout=log,
                stderr=log,
                preexec_fn=self.preexec,
            )
        if ready:
            wait_for(lambda: "started:" in self.log() or self.proc.poll() is not None, timeout=30)
            assert self.proc.poll() is None, f"jobd exited early:\n{self.log()}"
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        """What this start of the daemon logged so far."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._log_offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when the OOM killer or a power cut strikes."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 40) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def cleanup(self) -> None:
        """For a finally: block; never leaves a daemon or a job of this test behind."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.stop(timeout=20)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        kill_marked(self.token)

    def orphans(self, timeout: float = 5.0) -> list[int]:
        """Job processes of this test still alive after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := marked(self.token)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


def jobd_main(args: list[str], env: dict[str, str]) -> tuple[int, str, str, BaseException | None]:
    """`jobd ARGS` in this process as `jobd.cli.main` runs it (the fast path for plain
    `executions`, then click): (exit code, stdout, stderr, uncaught exception)."""
    from click.testing import CliRunner

    from jobd.cli import fast
    from jobd.cli.app import cli

    runner = CliRunner()
    error: BaseException | None = None
    with runner.isolation(env=env) as (out, err, _mixed):
        try:
            code = fast.run(args)
            if code is None:
                cli.main(args=args, prog_name="jobd", standalone_mode=True)
                code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception as exc:
            error, code = exc, 1
        sys.stdout.flush()
        sys.stderr.flush()
        return code, out.getvalue().decode(), err.getvalue().decode(), error


def duplicates(values: Iterable[Any]) -> int:
    """How many values occur more than once (each extra occurrence counts)."""
    return sum(n - 1 for n in Counter(values).values() if n > 1)


def stuck_rows(store: Any) -> int:
    """Runs left `queued` or `running` once everything should have ended."""
    from jobd.core.model import Status

    E = store.m.Execution
    return E.select().where(E.status.in_([Status.QUEUED, Status.RUNNING])).count()


def lines_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


__all__ = ["wait_for"]
