"""Several `jobd run` processes on one store, for the HA tests: start, find the
leader, kill, pause, and read what they recorded.

Each daemon logs to its own file (a pipe nobody reads would fill and block it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobd.store.admin import leader_lease
from tests.conftest import jobd_cmd, wait_for


@dataclass
class Proc:
    popen: subprocess.Popen
    log_path: Path
    name: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)


@dataclass
class Cluster:
    """`jobd run` processes sharing one store URL and one config file."""

    tmp_path: Path
    url: str
    config_text: str
    procs: list[Proc] = field(default_factory=list)
    _store: Any = None

    def __post_init__(self) -> None:
        self.config_path = self.tmp_path / "jobd.toml"
        self.config_path.write_text(self.config_text)

    @property
    def store(self) -> Any:
        if self._store is None:
            from tests.conftest import open_store

            self._store = open_store(self.url)
        return self._store

    def start(
        self, env: dict[str, str] | None = None, wait: bool = True, host: str | None = None
    ) -> Proc:
        """Start a daemon; with `host`, under that host name (its own UTS namespace),
        so that it and the others treat each other as different machines."""
        name = f"d{len(self.procs)}"
        log_path = self.tmp_path / f"{name}.log"
        full_env = {**os.environ, "JOBD_STORE": self.url, **(env or {})}
        full_env.pop("NOTIFY_SOCKET", None)
        cmd = jobd_cmd("--config", str(self.config_path), "run", "--log-level", "debug")
        if host is not None:
            cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *cmd]
        with open(log_path, "w") as log:
            popen = subprocess.Popen(
                cmd,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = Proc(popen, log_path, name)
        self.procs.append(proc)
        if wait:
            wait_for(lambda: "started:" in proc.text() or not proc.alive(), timeout=20)
            assert proc.alive(), proc.text()
        return proc

    def instance_of(self, proc: Proc) -> str | None:
        for inst in self.store.instances():
            if inst["pid"] == proc.pid and inst["stopped_at"] is None:
                return inst["id"]
        return None

    def proc_of(self, instance: str | None) -> Proc | None:
        if instance is None:
            return None
        pid = next((i["pid"] for i in self.store.instances() if i["id"] == instance), None)
        return next((p for p in self.procs if p.pid == pid), None)

    def leader(self) -> Proc | None:
        """The live process holding an unexpired lease, by the database's clock."""
        lease = leader_lease(self.store, self.store.now())
        if lease is None or lease["holder"] is None or lease["expires_at"] is None:
            return None
        if lease["expires_at"] <= self.store.now():
            return None
        proc = self.proc_of(lease["holder"])
        return proc if proc is not None and proc.alive() else None

    def wait_leader(self, timeout: float = 20, other_than: Proc | None = None) -> Proc:
        def found() -> Proc | None:
            proc = self.leader()
            return proc if proc is not None and proc is not other_than else None

        return wait_for(found, timeout=timeout, interval=0.05)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.signal(signal.SIGCONT)
                proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        if self._store is not None:
            self._store.close()
            self._store = None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid})\n{p.text()}" for p in self.procs)


@contextlib.contextmanager
def cluster(tmp_path: Path, url: str, config_text: str) -> Iterator[Cluster]:
    group = Cluster(tmp_path, url, config_text)
    try:
        yield group
    except BaseException:
        print(group.logs())
        raise
    finally:
        group.stop_all()


def config(url: str, jobs: str, **settings: Any) -> str:
    """A jobd.toml for tests: short lease and graces, the table lease, then `jobs`."""
    values = {
        "store": url,
        "lease_ttl": "3s",
        "kill_grace": "1s",
        "shutdown_grace": "2s",
        "leader": "table",
        **settings,
    }
    body = "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return f"[jobd]\n{body}\n\n{jobs}"


def slot_rows(store: Any, job: str) -> list[Any]:
    """Every recorded fire of `job` (scheduled or caught up), oldest slot first."""
    runs = store.executions(job=job, limit=None)
    return sorted((r for r in runs if r.scheduled_for is not None), key=lambda r: r.scheduled_for)


def assert_every_slot_once(rows: list[Any], start: datetime, end: datetime) -> None:
    """One row per second in [start, end], none missing, none twice."""
    seconds = [int(r.scheduled_for.timestamp()) for r in rows]
    assert len(seconds) == len(set(seconds)), "a slot fired twice"
    wanted = set(range(math.ceil(start.timestamp()), int(end.timestamp()) + 1))
    missing = sorted(wanted - set(seconds))
    assert not missing, f"slots never fired: {[datetime.fromtimestamp(s, UTC) for s in missing]}"


def can_fake_hosts() -> bool:
    """Whether daemons can be started under another host name (root, with unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--uts", "hostname", "jobd-probe"], capture_output=True, timeout=10
    )
    return probe.returncode == 0
