"""Liveness on a SQLite store by lock (jobd.system.liveness): real files, real processes,
real signals, and real `jobd run` daemons.

With the lock, a dead instance is known at once (no heartbeat has to go stale)
and an idle daemon writes and wakes for nothing; an instance without a lock file
is still judged by its heartbeat.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Status, Trigger
from jobd.core.timeutil import to_db
from jobd.store import Store
from jobd.system.clockstep import ClockStepWatch
from jobd.system.liveness import DeathWatch, InstanceLock, LockState, Presence, lock_state
from tests.conftest import open_store, wait_for
from tests.daemons import Daemons, wait_run

JOBD = [sys.executable, "-m", "jobd"]

HOLDER = """
import sys
from jobd.system.liveness import InstanceLock
lock = InstanceLock(sys.argv[1], sys.argv[2])
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # until the test closes it, or kills us
"""


def hold_in_child(directory: Path, instance: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), instance],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_lock_is_held_while_its_process_lives_and_free_once_it_is_killed(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "jobd.db.instances"
    assert lock_state(str(directory), "nobody") is LockState.MISSING
    holder = hold_in_child(directory, "a")
    assert lock_state(str(directory), "a") is LockState.HELD
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert lock_state(str(directory), "a") is LockState.FREE


def test_a_released_lock_leaves_no_file(tmp_path: Path) -> None:
    lock = InstanceLock(str(tmp_path / "d"), "me")
    lock.acquire()
    assert lock_state(lock.directory, "me") is LockState.HELD  # another open file: a checker
    lock.release()
    assert lock_state(lock.directory, "me") is LockState.MISSING
    assert os.listdir(lock.directory) == []


def test_a_death_watch_hears_of_a_kill_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "jobd.db.instances"
    holder = hold_in_child(directory, "victim")
    deaths: list[tuple[str, float]] = []
    watch = DeathWatch(str(directory), lambda name: deaths.append((name, time.monotonic())))
    watch.watch_directory(exclude="me")
    assert watch.watched == {"victim"}
    killed_at = time.monotonic()
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    wait_for(lambda: deaths, timeout=5)
    assert deaths[0][0] == "victim"
    assert deaths[0][1] - killed_at < 1.0
    assert watch.watched == set()


def _add_instance(store: Store, instance: str, heartbeat_age: float) -> None:
    now = store.now()
    beat = to_db(now - timedelta(seconds=heartbeat_age))
    store.m.Instance.insert(
        id=instance, host="h", pid=1, version="t", started_at=beat, heartbeat_at=beat
    ).execute()


def _running_run(store: Store, instance: str) -> int:
    run_id = store.enqueue(NewRun("j", Trigger.MANUAL, not_before=store.now()))
    store.m.Execution.update(status=Status.RUNNING.value, instance=instance, host="h").where(
        store.m.Execution.id == run_id
    ).execute()
    return run_id


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    from jobd.core.config.parse import parse_config

    store = open_store(sqlite_url)
    store.apply_config(parse_config('[jobs.j]\ncommand = ["true"]\n'), store.now())
    yield store
    store.close()


def test_the_store_judges_by_the_lock_before_the_heartbeat(sqlite_store: Store) -> None:
    store = sqlite_store
    directory = store.instance_lock_dir()
    assert directory is not None
    ttl = 30.0
    # Fresh heartbeat, but its process is gone: dead now, not in 30 s.
    _add_instance(store, "crashed", heartbeat_age=0)
    crashed = hold_in_child(Path(directory), "crashed")
    crashed.kill()
    crashed.wait(10)
    # Silent for ten minutes, but its process holds its lock: an idle daemon.
    _add_instance(store, "quiet", heartbeat_age=600)
    quiet = hold_in_child(Path(directory), "quiet")
    # No lock file at all: the heartbeat decides, as on PostgreSQL.
    _add_instance(store, "old-style", heartbeat_age=600)
    try:
        now = store.now()
        assert store.presence("crashed", now, ttl, now) is Presence.DEAD
        assert store.presence("quiet", now - timedelta(minutes=10), ttl, now) is (Presence.LIVE)
        old = now - timedelta(minutes=10)
        assert store.presence("old-style", old, ttl, now) is Presence.STALE
        runs = {name: _running_run(store, name) for name in ("crashed", "quiet", "old-style")}
        lost = {run.id for run in store.reap_lost_runs(ttl, lambda *_: [])}
        assert lost == {runs["crashed"], runs["old-style"]}
        assert store.execution(runs["quiet"]).status is Status.RUNNING  # type: ignore[union-attr]
        stopped = {i["id"]: i["stopped_at"] for i in store.instances()}
        assert stopped["crashed"] is not None  # known dead: marked stopped
        assert lock_state(directory, "crashed") is LockState.MISSING  # and its file removed
    finally:
        quiet.kill()
        quiet.wait(10)


def test_the_clock_step_watch_arms_without_firing() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("timerfd is Linux's")
    watch = ClockStepWatch()
    fd = watch.open()
    try:
        assert fd is not None
        assert watch.stepped() is False  # nothing to read: the clock was not set
    finally:
        watch.close()


# -- real daemons -------------------------------------------------------------------------


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()
    for daemon in started.started:
        print(f"--- {daemon.log_path.name} (exit {daemon.proc.returncode})\n{daemon.log()}")


def _heartbeat(store: Store, instance: str) -> object:
    Instance = store.m.Instance
    return Instance.get(Instance.id == instance).heartbeat_at


def test_an_idle_daemon_writes_no_heartbeat_yet_stays_live(
    sqlite_url: str, daemons: Daemons
) -> None:
    daemons.write_config({"yearly": {"schedule": "@yearly", "command": ["true"]}}, lease_ttl="1s")
    daemon = daemons.start(sqlite_url)
    store = open_store(sqlite_url)
    instance = daemon.instance_id
    first = _heartbeat(store, instance)
    # With heartbeats, lease_ttl = 1s would write one every 0.33 s.
    time.sleep(2.0)
    assert _heartbeat(store, instance) == first
    status = subprocess.run(
        [sys.executable, "-m", "jobd", "--store", sqlite_url, "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0, status.stderr
    assert f'"{instance}"' in status.stdout
    assert '"live": true' in status.stdout.replace('"live":true', '"live": true')


def test_a_killed_daemons_run_is_abandoned_by_an_idle_peer_at_once(
    sqlite_url: str, daemons: Daemons
) -> None:
    # A long lease: only the lock can tell the peer so soon.
    daemons.write_config({"long": {"command": ["sleep", "60"]}}, lease_ttl="60s")
    victim = daemons.start(sqlite_url, "victim")
    store = open_store(sqlite_url)
    run_id = store.enqueue(NewRun("long", Trigger.MANUAL, not_before=store.now()))
    wait_run(store, run_id, lambda r: r.status is Status.RUNNING and r.pid is not None)
    peer = daemons.start(sqlite_url, "peer")
    assert peer.running
    victim.kill()
    killed_at = time.monotonic()
    lost = wait_run(store, run_id, lambda r: r.status.final, timeout=10)
    assert lost.status is Status.ABANDONED
    assert time.monotonic() - killed_at < 5.0  # the lease would take 60 s


def test_a_killed_local_trigger_is_abandoned_by_an_idle_daemon_at_once(
    sqlite_url: str, daemons: Daemons
) -> None:
    config = daemons.write_config({"long": {"command": ["sleep", "60"]}}, lease_ttl="60s")
    store = open_store(sqlite_url)
    store.apply_config(parse_config(config.read_text()), store.now())  # as a daemon had
    local = subprocess.Popen(
        [*JOBD, "--config", str(config), "--store", sqlite_url, "trigger", "long", "--local"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def running() -> int | None:
            found = [r for r in store.executions("long", limit=None) if r.pid is not None]
            return found[0].id if found and found[0].status is Status.RUNNING else None

        run_id = wait_for(running, timeout=20)
        daemon = daemons.start(sqlite_url)  # it finds the local instance's lock
        assert daemon.running
        local.kill()
        local.wait(10)
        killed_at = time.monotonic()
        lost = wait_run(store, run_id, lambda r: r.status.final, timeout=10)
        assert lost.status is Status.ABANDONED
        assert time.monotonic() - killed_at < 5.0  # the lease would take 60 s
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(local.pid, signal.SIGKILL)
        local.wait(10)
