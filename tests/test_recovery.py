"""Recovery after a hard kill: leftover job processes are found and killed, and a
resumed job does not catch up on the slots it slept through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from jobd.core.config.parse import parse_config
from jobd.runs.process import kill_leftovers
from jobd.store import Store
from tests.conftest import jobd_cmd, wait_for
from tests.processes import keeper_of


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_leftovers_finds_processes_by_their_run_identity() -> None:
    # A unique instance keeps this test from touching other tests' processes.
    instance = f"test-{uuid.uuid4().hex}"
    base = {**os.environ, "JOBD_JOB": "stray", "JOBD_INSTANCE": instance}
    env = {**base, "JOBD_EXECUTION_ID": "4242"}
    other = {**base, "JOBD_EXECUTION_ID": "4243"}
    mine = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)
    theirs = subprocess.Popen(["sleep", "300"], env=other, start_new_session=True)
    try:
        assert kill_leftovers(4242, "stray", instance) == 1
        mine.wait(timeout=5)
        assert mine.returncode == -signal.SIGKILL
        assert theirs.poll() is None  # another run's process is left alone
    finally:
        theirs.kill()
        theirs.wait()
        if mine.poll() is None:
            mine.kill()


def test_resume_fires_at_the_next_slot_not_the_missed_ones(store: Store) -> None:
    config = parse_config('[jobs.a]\nschedule = "* * * * * *"\ncommand = ["true"]\n')
    now = store.now()
    store.apply_config(config, now - timedelta(hours=1))
    store.set_paused("a", True, now - timedelta(hours=1))
    store.set_paused("a", False, now)
    record = store.job("a")
    assert record is not None and not record.paused
    assert record.next_fire_at is not None and now < record.next_fire_at <= now + timedelta(
        seconds=1
    )


def test_sigkilled_daemon_leaves_no_orphan_after_restart(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    pids = tmp_path / "pids"
    config.write_text(
        '[jobd]\nlease_ttl = "2s"\nkill_grace = "1s"\n'
        "[jobs.long]\n"
        'shell = "sleep 300 & echo $! >> ' + str(pids) + '; wait"\n'
    )
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    env = {**os.environ, "JOBD_STORE": url}
    daemon = subprocess.Popen(
        jobd_cmd("--config", str(config), "run"), env=env, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: (tmp_path / "jobd.db").exists())
        trigger = subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "from jobd.store import open_store;"
                    "from jobd.system.hooks import HOST;"
                    "from jobd.core.model import NewRun, Trigger;"
                    f"s = open_store({url!r}, hooks=HOST);"
                    "print(s.enqueue(NewRun('long', Trigger.MANUAL, s.now())))"
                ),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        # The daemon may not have applied the config yet; retry until the job exists.
        if trigger.returncode != 0:
            wait_for(lambda: subprocess.run(trigger.args, capture_output=True).returncode == 0)
        grandchild = int(wait_for(lambda: pids.exists() and pids.read_text().split()[0]))
        assert _alive(grandchild)
        # The keeper would kill it at once (test_fault_escape): with the keeper
        # gone too, only the next jobd on the host can.
        keeper = wait_for(lambda: keeper_of(daemon.pid))
        os.kill(keeper, signal.SIGKILL)
        daemon.kill()
        daemon.wait()
        assert _alive(grandchild)  # nothing could stop it at the moment of the kill
        daemon = subprocess.Popen(
            jobd_cmd("--config", str(config), "run"), env=env, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: not _alive(grandchild), timeout=15)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
