"""Real `jobd run` processes for end-to-end tests, and a TCP proxy that can cut the
store's network without touching the shared PostgreSQL server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jobd.core.model import Run
from jobd.store import Store
from tests.conftest import jobd_cmd, wait_for
from tests.processes import MARKER_ENV, keeper_of, kill_marked, marked

# Short timers so that failover, shutdown and back-off fit in a test's seconds.
FAST = {"lease_ttl": "3s", "kill_grace": "1s", "shutdown_grace": "2s", "max_backoff": "2s"}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def config_text(jobs: dict[str, dict[str, Any]], **settings: Any) -> str:
    lines = ["[jobd]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in {**FAST, **settings}.items()]
    for name, table in jobs.items():
        lines += ["", f"[jobs.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


class JobdProcess:
    """One `jobd --config C --store S run`, its stderr in a file."""

    def __init__(
        self,
        config: Path,
        store_url: str,
        log: Path,
        token: str,
        host: str | None = None,
        netns: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config, self.store_url, self.log_path = config, store_url, log
        env = {**os.environ, **(env or {}), MARKER_ENV: token}
        env.pop("JOBD_CONFIG", None)
        env.pop("JOBD_STORE", None)
        cmd = jobd_cmd("--config", str(config), "--store", store_url, "run")
        if host is not None:  # another host name, in a UTS namespace of its own (root)
            cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *cmd]
        if netns is not None:  # and a network of its own (root)
            cmd = ["ip", "netns", "exec", netns, *cmd]
        with open(log, "ab") as stderr:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                start_new_session=True,  # the test's own signals never reach it
            )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Wait for the "started" line; returns it (it says leading or standby)."""

        def started() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"jobd exited with {self.proc.returncode}:\n{self.log()}")
            return next((ln for ln in self.log().splitlines() if " started: " in ln), None)

        return wait_for(started, timeout=timeout)

    def wait_log(self, text: str, timeout: float = 10.0, after: int = 0) -> None:
        wait_for(lambda: text in self.log()[after:], timeout=timeout)

    @property
    def instance_id(self) -> str:
        match = re.search(r"started: instance (\S+),", self.wait_ready())
        assert match
        return match.group(1)

    @property
    def leading(self) -> bool:
        return ", leading" in self.wait_ready()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


class Daemons:
    """Starts daemons for one test and kills everything they left behind."""

    def __init__(self, tmp_path: Path, token: str) -> None:
        self.tmp_path, self.token = tmp_path, token
        self.config = tmp_path / "jobd.toml"
        self.started: list[JobdProcess] = []

    def write_config(self, jobs: dict[str, dict[str, Any]], **settings: Any) -> Path:
        self.config.write_text(config_text(jobs, **settings))
        self.config.chmod(0o644)  # as root, jobd refuses a group-writable config
        return self.config

    def start(
        self,
        store_url: str,
        name: str = "jobd",
        ready: bool = True,
        host: str | None = None,
        netns: str | None = None,
        env: dict[str, str] | None = None,
    ) -> JobdProcess:
        log = self.tmp_path / f"{name}-{len(self.started)}.log"
        daemon = JobdProcess(self.config, store_url, log, self.token, host, netns, env)
        self.started.append(daemon)
        if ready:
            daemon.wait_ready()
        return daemon

    def leftovers(self) -> list[int]:
        """Job processes (and their children) still alive from this test."""
        daemon_pids = {d.pid for d in self.started}
        # A daemon's keeper (jobd.runs.keeper) is the daemon's, not a job's.
        ours = daemon_pids | {keeper_of(pid) for pid in daemon_pids}
        return [pid for pid in marked(self.token) if pid not in ours]

    def cleanup(self) -> None:
        for daemon in self.started:
            if daemon.running:
                daemon.kill()
        kill_marked(self.token)


# -- reading the store ----------------------------------------------------------------


def runs(store: Store, job: str | None = None) -> list[Run]:
    """All runs (of `job`), oldest first."""
    return list(reversed(store.executions(job=job, limit=None)))


def finished(store: Store, job: str) -> list[Run]:
    return [r for r in runs(store, job) if r.status.final]


def wait_run(store: Store, run_id: int, check: Callable[[Run], bool], timeout: float = 15.0) -> Run:
    def probe() -> Run | None:
        run = store.execution(run_id)
        return run if run is not None and check(run) else None

    return wait_for(probe, timeout=timeout, interval=0.05)


def wait_clock(moment: datetime, timeout: float = 30.0) -> None:
    """Wait until the wall clock passes `moment` (slots are wall-clock instants)."""
    wait_for(lambda: datetime.now(UTC) > moment, timeout=timeout, interval=0.05)


# -- a cuttable TCP proxy -------------------------------------------------------------


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server. `cut()` closes every
    connection and refuses new ones (the port is closed); `restore()` listens again
    on the same port. `freeze()` keeps every connection open but passes nothing
    (a stalled network), until `thaw()`."""

    def __init__(self, target: tuple[str, int], bind: str = "127.0.0.1") -> None:
        self.target = target
        self.bind = bind
        self.port = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self.restore()

    def url_for(self, url: str) -> str:
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        netloc = f"{user}{self.bind}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.bind, self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._accepting is not None:
            self._accepting.join(2)
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._flowing.set()  # frozen pumps find their sockets closed and end

    close = cut

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def proxy_to(url: str, bind: str = "127.0.0.1") -> Iterator[CuttableProxy]:
    parts = urlsplit(url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432), bind)
    try:
        yield proxy
    finally:
        proxy.close()


# -- one daemon for a test, as a context manager -----------------------------------


@contextmanager
def jobd_daemon(
    config: Path, store_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`jobd run --config CONFIG` on STORE_URL; its log goes to CONFIG.log."""
    log = config.with_suffix(".log")
    full_env = {**os.environ, "JOBD_STORE": store_url, **(env or {})}
    full_env.pop("JOBD_CONFIG", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            jobd_cmd("run", "--config", str(config)), env=full_env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: " started: " in log.read_text() or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
