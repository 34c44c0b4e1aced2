"""Fault: the store is down when the daemon starts, stalls under it, or goes away and
comes back while runs go on.

PostgreSQL is reached through a proxy on a loopback port the test controls: it
refuses (the port is closed), forwards, or freezes (accepts connections and holds
every byte, as a hung server or a stalled network does, so no TCP error ever comes).
The test's own view of the store goes around the proxy. A SQLite store "down at
start" is one whose directory does not exist yet.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from jobd.core.model import NewRun, Outcome, Status, Trigger
from jobd.store import Store
from tests.conftest import POSTGRES_DSN, jobd_cmd, open_store, run_jobd, wait_for
from tests.daemons import CuttableProxy, config_text, finished, runs, wait_run
from tests.faults import Daemon, duplicates, stuck_rows, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.fault, pytest.mark.slow]

EVERY_SECOND = "* * * * * *"
PASSWORD = "s3cret-Pw0rd"  # trust auth ignores it; it must never be shown


class StoreProxy(CuttableProxy):
    """CuttableProxy that can also freeze: connections stay open, new ones are
    accepted, and every byte is held until `thaw()` lets them through."""

    def __init__(self, target: tuple[str, int], refusing: bool = False) -> None:
        self._frozen = False
        super().__init__(target)
        if refusing:
            self.cut()  # the port stays ours in spirit: restore() binds it again

    def freeze(self) -> None:
        self._frozen = True

    def thaw(self) -> None:
        self._frozen = False

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self._frozen:
                    time.sleep(0.02)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def url_for(self, url: str) -> str:
        """The store URL through this proxy, with a password that must stay hidden."""
        parts = urlsplit(url)
        netloc = f"{parts.username or 'postgres'}:{PASSWORD}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def store_proxy(url: str, refusing: bool = False) -> Iterator[StoreProxy]:
    parts = urlsplit(url)
    proxy = StoreProxy((parts.hostname or "127.0.0.1", parts.port or 5432), refusing)
    try:
        yield proxy
    finally:
        proxy.thaw()
        proxy.close()


class NotifySocket:
    """The service manager's end of sd_notify: collects every datagram jobd sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self._closed = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError, OSError):
                self.messages.append(self.sock.recv(4096).decode())

    def lines(self) -> list[str]:
        return [line for message in list(self.messages) for line in message.splitlines()]

    def has(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines())

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


def now() -> datetime:
    return datetime.now(UTC)


def trigger(store: Store, job: str) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


def daemon_for(tmp_path: Path, url: str, jobs: dict[str, Any], **settings: Any) -> Daemon:
    config = write_config(tmp_path / "jobd.toml", config_text(jobs, **settings))
    return Daemon(
        config, url, tmp_path / "jobd.log", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
    )


def waiting_or_exited(daemon: Daemon) -> bool:
    assert daemon.proc is not None
    return "waiting for the store" in daemon.log() or daemon.proc.poll() is not None


# -- down at start -------------------------------------------------------------------------


def test_a_daemon_started_before_postgresql_waits_then_becomes_ready_and_fires(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    store = open_store(postgres_url)
    notify = NotifySocket(tmp_path / "notify.sock")
    with store_proxy(postgres_url, refusing=True) as proxy:
        daemon = daemon_for(
            tmp_path,
            proxy.url_for(postgres_url),
            {"tick": {"schedule": EVERY_SECOND, "command": ["true"]}},
        )
        try:
            daemon.start(ready=False)
            wait_for(lambda: waiting_or_exited(daemon), timeout=20)
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
            wait_for(lambda: notify.has("STATUS=waiting for the store"), timeout=10)
            # A few more attempts: still waiting, and not ready.
            wait_for(lambda: daemon.log().count("waiting for the store") >= 3, timeout=20)
            assert daemon.proc.poll() is None, daemon.log()
            assert not notify.has("READY=1")
            back_at = now()
            proxy.restore()
            wait_for(lambda: notify.has("READY=1"), timeout=15)
            wait_for(lambda: len(finished(store, "tick")) >= 2, timeout=15)
            assert daemon.stop() == 0
        finally:
            daemon.cleanup()
            notify.close()
    log = daemon.full_log()
    ticks = runs(store, "tick")
    status = [line for line in notify.lines() if line.startswith("STATUS=waiting")]
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=len(ticks),
        duplicates=duplicates(r.scheduled_for for r in ticks),
        stuck=stuck_rows(store),
        detail=f"started with PostgreSQL refusing: waited ({log.count('waiting for the store')} "
        "log lines), READY=1 and fires once it answered",
    )
    assert "started:" in log and "Traceback" not in log
    assert PASSWORD not in log and PASSWORD not in "\n".join(notify.lines())
    assert status and "***" in status[0], status
    ready = notify.lines().index("READY=1")
    assert all(not s.startswith("STATUS=waiting") for s in notify.lines()[ready:])
    assert all(r.started_at and r.started_at >= back_at for r in ticks)
    assert duplicates(r.scheduled_for for r in ticks) == 0
    store.close()


@pytest.mark.parametrize("fault", ["refused", "frozen"])
def test_sigterm_while_waiting_for_postgresql_exits_0_at_once(
    fault: str, postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    with store_proxy(postgres_url, refusing=fault == "refused") as proxy:
        if fault == "frozen":
            proxy.freeze()  # connections are accepted and never answered
        daemon = daemon_for(tmp_path, proxy.url_for(postgres_url), {"t": {"command": ["true"]}})
        try:
            daemon.start(ready=False)
            wait_for(lambda: waiting_or_exited(daemon), timeout=20)
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
            signalled = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            # Promptly: not after the connection attempt under way gives up.
            code = daemon.proc.wait(timeout=4)
            took = time.monotonic() - signalled
        finally:
            daemon.cleanup()
    log = daemon.full_log()
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=0,
        orphans=len(daemon.orphans()),
        detail=f"SIGTERM while waiting for a {fault} store at start: exit {code} in {took:.1f}s",
    )
    assert code == 0, log
    assert "Traceback" not in log and PASSWORD not in log


def test_a_sqlite_store_whose_directory_is_missing_is_created_by_jobd_run(
    tmp_path: Path, reliability: Recorder
) -> None:
    directory = tmp_path / "state" / "jobd"
    url = f"sqlite:///{directory / 'jobd.db'}"
    daemon = daemon_for(tmp_path, url, {"tick": {"schedule": EVERY_SECOND, "command": ["true"]}})
    try:
        daemon.start()
        store = open_store(url)
        wait_for(lambda: len(finished(store, "tick")) >= 1, timeout=15)
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    reliability.observe(
        "store-outage",
        "sqlite",
        runs=len(runs(store, "tick")),
        stuck=stuck_rows(store),
        detail="store directory missing at start: created (0700), daemon started",
    )
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert "created" in daemon.full_log()
    store.close()


def test_sighup_while_waiting_reads_the_config_again(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """A store URL corrected in jobd.toml while jobd waits is taken at SIGHUP."""
    jobs = {"tick": {"schedule": EVERY_SECOND, "command": ["true"]}}
    with store_proxy(postgres_url, refusing=True) as proxy:
        daemon = daemon_for(tmp_path, proxy.url_for(postgres_url), jobs)
        daemon.env["JOBD_STORE"] = ""  # the config's `store` counts
        write_config(daemon.config, config_text(jobs, store=proxy.url_for(postgres_url)))
        try:
            daemon.start(ready=False)
            wait_for(lambda: waiting_or_exited(daemon), timeout=20)
            assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
            write_config(daemon.config, config_text(jobs, store=postgres_url))
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "started:" in daemon.log(), timeout=15)
            store = open_store(postgres_url)
            wait_for(lambda: len(finished(store, "tick")) >= 1, timeout=15)
            ticks = len(runs(store, "tick"))
            store.close()
            assert daemon.stop() == 0
        finally:
            daemon.cleanup()
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=ticks,
        detail="store URL corrected while waiting: SIGHUP read it, the daemon started",
    )
    assert "reading the config again" in daemon.full_log()


def test_a_missing_postgresql_database_is_waited_for_too(
    postgres_admin: Any, tmp_path: Path, reliability: Recorder
) -> None:
    """The server answers and refuses (the database is created by a provisioning
    step that runs later): fixed on the server, so waited out, like a refused
    password."""
    name = f"jobd_wait_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(POSTGRES_DSN)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    daemon = daemon_for(tmp_path, url, {"tick": {"schedule": EVERY_SECOND, "command": ["true"]}})
    try:
        daemon.start(ready=False)
        wait_for(lambda: waiting_or_exited(daemon), timeout=20)
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        assert "does not exist" in daemon.log()
        with postgres_admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        wait_for(lambda: "started:" in daemon.log(), timeout=15)
        store = open_store(url)
        wait_for(lambda: len(finished(store, "tick")) >= 1, timeout=15)
        ticks = len(runs(store, "tick"))
        store.close()
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
        with postgres_admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=ticks,
        detail="started before its database existed: waited, started once it was created",
    )


def test_a_sqlite_store_locked_at_start_is_waited_for(
    tmp_path: Path, reliability: Recorder
) -> None:
    """Another process holds the write lock past the busy timeout (15 s): a backup,
    a migration by hand. The daemon waits for it instead of exiting."""
    path = tmp_path / "jobd.db"
    url = f"sqlite:///{path}"
    open_store(url).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    daemon = daemon_for(tmp_path, url, {"tick": {"schedule": EVERY_SECOND, "command": ["true"]}})
    try:
        daemon.start(ready=False)
        wait_for(lambda: waiting_or_exited(daemon), timeout=40)
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        assert "locked" in daemon.log()
        holder.execute("ROLLBACK")
        wait_for(lambda: "started:" in daemon.log(), timeout=20)
        store = open_store(url)
        wait_for(lambda: len(finished(store, "tick")) >= 1, timeout=15)
        ticks = len(runs(store, "tick"))
        store.close()
        assert daemon.stop() == 0
    finally:
        holder.close()
        daemon.cleanup()
    reliability.observe(
        "store-outage",
        "sqlite",
        runs=ticks,
        detail="write lock held by another process past the busy timeout at start: "
        "waited, started once it was released",
    )


def test_sigterm_while_the_start_up_step_waits_on_a_locked_sqlite_store_exits_0(
    tmp_path: Path, reliability: Recorder
) -> None:
    """The config is applied in a short-lived child, which here waits on SQLite's
    busy timeout: SIGTERM to jobd is passed on to it, and jobd exits at once."""
    path = tmp_path / "jobd.db"
    url = f"sqlite:///{path}"
    open_store(url).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    daemon = daemon_for(tmp_path, url, {"t": {"command": ["true"]}})
    try:
        daemon.start(ready=False)
        assert daemon.proc is not None
        children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children")
        child = wait_for(lambda: children.read_text().split(), timeout=20)[0]
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(timeout=4)
        wait_for(lambda: not Path(f"/proc/{child}").exists(), timeout=4)
    finally:
        holder.close()
        daemon.cleanup()
    reliability.observe(
        "store-outage",
        "sqlite",
        runs=0,
        detail=f"SIGTERM while the start-up child waited on a locked store: exit {code}, "
        "child gone",
    )
    assert code == 0, daemon.full_log()


def test_a_store_written_by_a_newer_jobd_is_refused_at_once_with_exit_2(
    store_url: str, tmp_path: Path
) -> None:
    """Waiting cannot fix it: no wait, one line, exit 2."""
    store = open_store(store_url)
    store.m.Schema.update(version=99).execute()
    store.close()
    config = write_config(tmp_path / "jobd.toml", config_text({"t": {"command": ["true"]}}))
    done = run_jobd(
        "--config",
        str(config),
        "run",
        env={"JOBD_STORE": store_url, "XDG_DATA_HOME": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "newer" in done.stderr, done.stderr
    assert "waiting" not in done.stderr


@pytest.mark.parametrize(
    ("option", "named"),
    [
        ("sslmode=bogus", "sslmode"),
        ("connect_timeout=abc", "connect_timeout"),
        ("target_session_attrs=bogus", "target_session_attrs"),
    ],
)
def test_a_connection_option_libpq_refuses_is_not_waited_for(
    postgres_url: str, tmp_path: Path, option: str, named: str
) -> None:
    """libpq refuses the option's value before it reaches any server: only a new URL
    fixes that, so `jobd run` says so at once, in one line, exit 2, password masked."""
    parts = urlsplit(postgres_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username or 'postgres'}:{PASSWORD}@{host}"
    query = f"{parts.query}&{option}" if parts.query else option
    url = urlunsplit(parts._replace(netloc=netloc, query=query))
    config = write_config(tmp_path / "jobd.toml", config_text({"t": {"command": ["true"]}}))
    try:
        done = subprocess.run(
            jobd_cmd("--config", str(config), "run"),
            env={**os.environ, "JOBD_STORE": url, "XDG_DATA_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"jobd run waited for a URL libpq refuses: {exc.stderr}") from None
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and named in done.stderr, done.stderr
    assert "waiting" not in done.stderr and PASSWORD not in done.stderr


def test_a_daemon_whose_store_goes_away_before_it_starts_waits_in_start(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Between `jobd run`'s wait and the daemon's first writes the store may go
    away again: the daemon waits there too, and starts once it answers."""
    import logging

    import peewee as pw

    from jobd.core.config.parse import parse_config
    from jobd.daemon.loop import Daemon as LoopDaemon

    store = open_store(sqlite_url)
    config = parse_config('[jobd]\nlease_ttl = "3s"\n[jobs.j]\ncommand = ["true"]\n')
    store.apply_config(config, store.now())
    daemon = LoopDaemon(config, store)
    real_start, calls = daemon.start, []

    def start() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise pw.OperationalError("database is locked")
        real_start()
        daemon.flags.stop_requests = 1  # started: stop at the first tick

    monkeypatch.setattr(daemon, "start", start)
    with caplog.at_level(logging.INFO, logger="jobd"):
        assert daemon.run() == 0
    text = caplog.text
    assert len(calls) == 3
    assert "waiting for the store" in text and "jobd stopped" in text
    store.close()


# -- a stall under a running daemon --------------------------------------------------------


def test_a_frozen_postgresql_is_noticed_within_lease_ttl_and_sigterm_still_stops_the_daemon(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    store = open_store(postgres_url)
    with store_proxy(postgres_url) as proxy:
        daemon = daemon_for(
            tmp_path,
            proxy.url_for(postgres_url),
            {
                "tick": {"schedule": EVERY_SECOND, "command": ["true"]},
                "long": {"command": ["sleep", "60"]},
            },
        )  # lease_ttl 3s, shutdown_grace 2s, kill_grace 1s
        try:
            daemon.start()
            wait_for(lambda: len(finished(store, "tick")) >= 1, timeout=15)
            long_id = trigger(store, "long")
            wait_run(store, long_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
            # A short stall that ends by itself: whatever waited through it must not
            # take the wait for a clock difference.
            proxy.freeze()
            time.sleep(5)
            proxy.thaw()
            wait_for(lambda: len(finished(store, "tick")) >= 3, timeout=15)
            offset = len(daemon.log())
            proxy.freeze()
            frozen_at = time.monotonic()
            # Within 10 s of the first stall's end: the same outage, "still unavailable".
            wait_for(lambda: "unavailable" in daemon.log()[offset:], timeout=3 + 3)
            noticed = time.monotonic() - frozen_at
            signalled = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            # shutdown_grace 2s + kill_grace 1s, and the store never answers.
            code = daemon.proc.wait(timeout=12)  # type: ignore[union-attr]
            took = time.monotonic() - signalled
        finally:
            proxy.thaw()
            daemon.cleanup()
    log = daemon.full_log()
    orphans = daemon.orphans()
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=len(runs(store)),
        orphans=len(orphans),
        detail=f"store frozen (no TCP error): noticed in {noticed:.1f}s (lease_ttl 3s), "
        f"SIGTERM honoured during the stall: exit {code} in {took:.1f}s",
    )
    assert code == 0, log
    assert not orphans
    assert "clock differs" not in log, log
    assert "Traceback" not in log and PASSWORD not in log
    store.close()


# -- an outage under a running daemon ---------------------------------------------------------


def test_runs_that_end_during_an_outage_keep_their_real_end_time(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    store = open_store(postgres_url)
    ended = tmp_path / "ended"
    with store_proxy(postgres_url) as proxy:
        daemon = daemon_for(
            tmp_path,
            proxy.url_for(postgres_url),
            {"short": {"shell": f"sleep 2; date +%s.%N > {ended}"}},
            # the run must outlive the outage's start, not be fenced: with the fast
            # 3 s lease its runs are stopped 2 s after the last heartbeat, a race
            # with the 2 s job
            lease_ttl="30s",
        )
        try:
            daemon.start()
            run_id = trigger(store, "short")
            running = wait_run(
                store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None
            )
            proxy.cut()
            wait_for(ended.exists, timeout=10)
            time.sleep(4)  # the outage goes on well after the run ended
            proxy.restore()
            done = wait_run(store, run_id, lambda r: r.status.final, timeout=20)
            assert daemon.stop() == 0
        finally:
            daemon.cleanup()
    real_end = datetime.fromtimestamp(float(ended.read_text()), UTC)
    assert running.started_at is not None and done.finished_at is not None
    late = (done.finished_at - real_end).total_seconds()
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=1,
        stuck=stuck_rows(store),
        detail=f"a 2 s run ended 4 s before a 6 s outage did: recorded end {late:+.1f}s "
        f"from its real end, duration {done.duration_s:.1f}s",
    )
    assert done.status is Status.SUCCEEDED
    assert abs(late) < 1.0, (done.finished_at, real_end)
    assert done.duration_s is not None and 1.5 < done.duration_s < 3.0
    store.close()


def test_on_sqlite_a_run_that_ends_while_the_store_is_locked_keeps_its_real_end(
    tmp_path: Path, reliability: Recorder
) -> None:
    """SQLite's outage: another process holds the write lock (a backup, say) when a
    run ends; its end is written once the lock goes, as when it happened."""
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    ended = tmp_path / "ended"
    daemon = daemon_for(tmp_path, url, {"short": {"shell": f"sleep 2; date +%s.%N > {ended}"}})
    store = open_store(url)
    holder = sqlite3.connect(tmp_path / "jobd.db", isolation_level=None)
    try:
        daemon.start()
        run_id = trigger(store, "short")
        wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
        holder.execute("BEGIN EXCLUSIVE")
        wait_for(ended.exists, timeout=10)
        time.sleep(4)  # the lock is held well after the run ended
        holder.execute("ROLLBACK")
        done = wait_run(store, run_id, lambda r: r.status.final, timeout=20)
        assert daemon.stop() == 0
    finally:
        holder.close()
        daemon.cleanup()
    real_end = datetime.fromtimestamp(float(ended.read_text()), UTC)
    assert done.finished_at is not None
    late = (done.finished_at - real_end).total_seconds()
    reliability.observe(
        "store-outage",
        "sqlite",
        runs=1,
        stuck=stuck_rows(store),
        detail=f"a 2 s run ended while another process held the write lock 4 s more: "
        f"recorded end {late:+.1f}s from its real end, duration {done.duration_s:.1f}s",
    )
    assert done.status is Status.SUCCEEDED
    assert abs(late) < 1.0, (done.finished_at, real_end)
    assert done.duration_s is not None and 1.5 < done.duration_s < 3.0
    store.close()


def test_the_daemon_resumes_within_seconds_of_the_store_coming_back(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """An 8 s outage under a max_backoff of a minute: retries doubling from 1 s
    (after 1, 3, 7, 15 s) would leave it 7 s without fires after the store returned."""
    store = open_store(postgres_url)
    with store_proxy(postgres_url) as proxy:
        daemon = daemon_for(
            tmp_path,
            proxy.url_for(postgres_url),
            {"tick": {"schedule": EVERY_SECOND, "command": ["true"]}},
            max_backoff="60s",
        )
        try:
            daemon.start()
            wait_for(lambda: len(finished(store, "tick")) >= 2, timeout=15)
            offset = len(daemon.log())
            proxy.cut()
            daemon_log = lambda: daemon.log()[offset:]  # noqa: E731
            wait_for(lambda: "store unavailable" in daemon_log(), timeout=5)
            time.sleep(8)
            back_at = now()
            proxy.restore()
            resumed = wait_for(
                lambda: next(
                    (r for r in runs(store, "tick") if r.started_at and r.started_at > back_at),
                    None,
                ),
                timeout=4,
            )
            lag = (resumed.started_at - back_at).total_seconds()
            outage_log = daemon_log()
            assert daemon.stop() == 0
        finally:
            daemon.cleanup()
    ticks = runs(store, "tick")
    reliability.observe(
        "store-outage",
        "postgresql",
        runs=len(ticks),
        duplicates=duplicates(r.scheduled_for for r in ticks),
        stuck=stuck_rows(store),
        detail=f"8 s outage, max_backoff 60s: first run {lag:.1f}s after the store returned; "
        f"{outage_log.count('still unavailable')} log lines while it was down",
    )
    assert duplicates(r.scheduled_for for r in ticks) == 0
    # Logged with back-off (after 1, 2, 4 s...), not at every probe.
    assert outage_log.count("still unavailable") <= 4, outage_log
    assert outage_log.count("store unavailable") == 1
    store.close()


# -- the same on the store itself, both backends ------------------------------------------------


def test_a_finish_written_late_keeps_the_end_it_was_given(store: Store) -> None:
    from jobd.core.config.parse import parse_config

    store.apply_config(parse_config('[jobs.j]\ncommand = ["true"]\n'), store.now())
    run_id = trigger(store, "j")
    ((run, _spec),) = store.claim("i", "h", 1)
    assert run.id == run_id and run.started_at is not None
    time.sleep(1.2)  # written a while after the end
    (applied,) = store.record_progress(
        {}, {}, [(run_id, "i", Outcome(Status.SUCCEEDED, 0), [])], {run_id: 0.25}
    )
    done = store.execution(run_id)
    assert applied and done is not None and done.finished_at is not None
    assert done.duration_s == pytest.approx(0.25)
    assert done.finished_at - run.started_at == timedelta(seconds=0.25)


def test_a_clock_sample_taken_across_a_stall_is_discarded(store: Store, caplog: Any) -> None:
    import logging

    from jobd.leader.lease import TableLeader
    from tests.test_lease import FakeClock

    clock = FakeClock()

    class Stalling:
        """The store, whose answers arrive 20 s late (the host's clocks move on)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def lease_state(self, instance: str) -> Any:
            state = store.lease_state(instance)
            clock.mono += 20
            clock.offset += timedelta(seconds=20)
            return state

        def acquire_lease(self, *args: Any) -> Any:
            state = store.acquire_lease(*args)
            clock.mono += 20
            clock.offset += timedelta(seconds=20)
            return state

    leader = TableLeader(Stalling(), "a", "host", 5.0, 30.0, clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="jobd"):
        leader.poll()
    assert leader.clock_skew is None
    assert not any("differs" in r.getMessage() for r in caplog.records)


def test_a_tick_that_waited_on_the_store_does_not_take_the_wait_for_a_clock_difference(
    store: Store,
) -> None:
    """A tick began 40 s before the store answered its due read (earlier calls of
    the tick stalled): firing goes on, with no "clock differs" refusal."""
    from jobd.core.config.parse import parse_config
    from jobd.core.timeutil import to_db
    from jobd.daemon.loop import Daemon as LoopDaemon

    config = parse_config(
        '[jobd]\nlease_ttl = "3s"\n'
        f'[jobs.j]\nschedule = "{EVERY_SECOND}"\ncatchup = "latest"\ncommand = ["true"]\n'
    )
    store.apply_config(config, store.now())
    due = store.now().replace(microsecond=0) - timedelta(seconds=60)
    store.m.Job.update(next_fire_at=to_db(due)).where(store.m.Job.name == "j").execute()
    daemon = LoopDaemon(config, store)
    try:
        assert daemon.leader.poll()
        tick_began = now() - timedelta(seconds=40)
        daemon.fire_due(tick_began)
        assert [r.job for r in store.executions("j", limit=None)] == ["j"]
    finally:
        daemon.leader.release()
        daemon.waker.close()


def test_daemon_connections_carry_keepalives_and_server_side_timeouts(postgres_url: str) -> None:
    import psycopg2.extensions

    from jobd.store import pgwire

    store = open_store(postgres_url)
    try:
        store.limit_waits(2.0, lambda: False)
        settings = {
            name: store.db.execute_sql(f"SHOW {name}").fetchone()[0]
            for name in ("statement_timeout", "idle_in_transaction_session_timeout")
        }
        params = store.db.connect_params
        assert settings == {
            "statement_timeout": "2s",
            "idle_in_transaction_session_timeout": "4s",
        }
        assert params["keepalives"] == 1 and params["tcp_user_timeout"] == 2000
        # The server's own limit ends a statement stuck on a lock, say.
        with pytest.raises(Exception, match=r"statement timeout|did not answer"):
            store.db.execute_sql("SELECT pg_sleep(5)")
    finally:
        store.close()
        psycopg2.extensions.set_wait_callback(None)  # this test process is no daemon
        pgwire._limits.seconds = None


# -- what is waited out, and how it is told (pure) ------------------------------------------


def _passing_cases() -> list[tuple[str, BaseException, str, bool]]:
    import peewee as pw

    from jobd.errors import ConfigError, StoreTooNew, StoreUnavailable

    pg = "store postgresql://jobd:***@db/jobd: "
    return [
        ("refused", StoreUnavailable(pg + "connection refused"), "postgresql", True),
        (
            "no such host",
            StoreUnavailable(pg + "could not translate host name"),
            "postgresql",
            True,
        ),
        (
            "bad password",
            StoreUnavailable(pg + "password authentication failed"),
            "postgresql",
            True,
        ),
        (
            "no database",
            StoreUnavailable(pg + 'database "jobd" does not exist'),
            "postgresql",
            True,
        ),
        ("cut mid-way", pw.OperationalError("server closed the connection"), "postgresql", True),
        ("a value refused", pw.IntegrityError("value too long"), "postgresql", False),
        ("newer store", StoreTooNew("store x has schema version 99"), "postgresql", False),
        ("bad URL", ConfigError("malformed store URL", key="jobd.store"), "postgresql", False),
        ("unsupported", StoreUnavailable("unsupported store URL 'mysql://x'"), "postgresql", False),
        (
            "an option libpq refuses",
            StoreUnavailable(pg + 'invalid sslmode value: "bogus"'),
            "postgresql",
            False,
        ),
        (
            "an option libpq refuses, raw",
            pw.OperationalError(
                'connection to server at "db", port 5432 failed: '
                'invalid integer value "abc" for connection option "connect_timeout"'
            ),
            "postgresql",
            False,
        ),
        ("locked", StoreUnavailable("store sqlite:///x: database is locked"), "sqlite", True),
        ("locked, raw", pw.OperationalError("database is locked"), "sqlite", True),
        ("disk full", pw.OperationalError("database or disk is full"), "sqlite", True),
        ("corrupt", StoreUnavailable("store sqlite:///x: file is not a database"), "sqlite", False),
        ("read-only", pw.OperationalError("attempt to write a readonly database"), "sqlite", False),
        ("foreign", StoreUnavailable("store sqlite:///x is not a jobd store"), "sqlite", False),
    ]


@pytest.mark.parametrize(
    ("case", "error", "backend", "passing"), _passing_cases(), ids=[c[0] for c in _passing_cases()]
)
def test_what_waiting_can_fix(case: str, error: BaseException, backend: str, passing: bool) -> None:
    from jobd.system.storewait import is_passing

    assert is_passing(error, backend) is passing


def test_an_outage_is_told_after_1_2_4_seconds_up_to_max_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobd.system import storewait

    clock = [100.0]
    monkeypatch.setattr(storewait.time, "monotonic", lambda: clock[0])
    outage = storewait.OutageLog(max_backoff=8.0)
    told = []
    for second in range(40):  # an attempt a second
        clock[0] = 100.0 + second
        if outage.failed():
            told.append(second)
    assert told == [0, 1, 3, 7, 15, 23, 31, 39]
    assert outage.attempts == 40 and outage.recovered() == 39.0
    assert not outage.down


def test_a_store_that_comes_and_goes_is_one_outage_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLite on a full disk, the daemon alone on it: each failed round closes the
    connection, SQLite deletes the -wal, a few writes succeed, the disk fills
    again. That was an error and an "available again" line every second or two,
    2,400 an hour; it is one outage, told with back-off: a dozen lines an hour."""
    import logging

    from jobd.system.storewait import SETTLE, OutageLog

    outage = OutageLog(max_backoff=900.0)  # the default max_backoff, 15m
    full = sqlite3.OperationalError("database or disk is full")
    back: list[tuple[float, float | None]] = []
    with caplog.at_level(logging.INFO, logger="jobd"):
        for second in range(0, 3600, 2):  # down 1 s, up 1 s, for an hour
            outage.tell(full, now=1000.0 + second)
            if (lasted := outage.recovered(now=1000.0 + second + 1)) is not None:
                back.append((second + 1, lasted))
        # The last return (at 3599 s) is for good: told once it has held for SETTLE.
        for second in range(3600, 3600 + int(SETTLE) + 2):
            if (lasted := outage.recovered(now=1000.0 + second)) is not None:
                back.append((second, lasted))
    # The daemon says "store available again after Ns" for each of `back`.
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) + len(back) <= 16, (lines, back)
    assert [level for level, _ in lines].count("ERROR") == 1
    assert lines[0][1].startswith("store unavailable (database or disk is full)")
    # The first return is told at once; the store failing again is said once.
    assert back[0] == (1, 1.0)
    assert lines[1][1].startswith("store still unavailable after 2s (2 attempts, 1 return of")
    # Then only back-off steps, and the end of the whole outage, with its length.
    assert all(m.startswith("store still unavailable after") for _, m in lines[2:])
    assert "1413 returns of less than 10s" in lines[-1][1]
    assert back[1:] == [(3599 + int(SETTLE), 3599.0)]
    assert not outage.down and outage.since is None


def test_a_return_that_holds_ends_the_outage() -> None:
    from jobd.system.storewait import SETTLE, OutageLog

    outage = OutageLog(max_backoff=60.0)
    assert outage.failed(now=0.0) == "first"
    assert outage.failed(now=1.0) == "still"
    assert outage.recovered(now=2.0) == 2.0  # told at once
    assert outage.recovered(now=2.0 + SETTLE) is None  # held: over, already told
    assert outage.since is None
    # A failure after that is a new outage, with its own error line.
    assert outage.failed(now=3.0 + SETTLE) == "first"
    assert outage.recovered(now=4.0 + SETTLE) == 1.0
    # One within SETTLE of the return continues it: said once, then backed off.
    assert outage.failed(now=4.0 + SETTLE + SETTLE - 0.5) == "again"
    assert outage.since == 3.0 + SETTLE and outage.returns == 1
    assert outage.failed(now=4.0 + 2 * SETTLE) == "still"  # its 1 s step was due
    # Its next return is not told until it has held for SETTLE.
    assert outage.recovered(now=5.0 + 2 * SETTLE) is None
    assert outage.recovered(now=5.0 + 3 * SETTLE - 0.1) is None
    assert outage.recovered(now=5.0 + 3 * SETTLE) == 2.0 + SETTLE
    assert outage.since is None and outage.attempts == 0
