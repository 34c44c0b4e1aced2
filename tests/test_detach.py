"""`jobd run --detach --pidfile P`: forks, writes a locked pid file, refuses a second
start while the first lives, and removes the pid file on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_jobd, wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def test_detach_pidfile_lifecycle(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text(
        f'[jobd]\nstore = "sqlite:///{tmp_path / "jobd.db"}"\n'
        '[jobs.tick]\nschedule = "* * * * * *"\ncommand = ["true"]\n'
    )
    pidfile = tmp_path / "jobd.pid"
    first = run_jobd("--config", str(config), "run", "--detach", "--pidfile", str(pidfile))
    assert first.returncode == 0, first.stderr
    pid = int(wait_for(lambda: _read(pidfile)))
    try:
        assert _alive(pid)
        wait_for(lambda: "started" in (tmp_path / "jobd.log").read_text())
        second = run_jobd("--config", str(config), "run", "--detach", "--pidfile", str(pidfile))
        assert second.returncode == 2
        assert f"already running as pid {pid}" in second.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), timeout=30)
    assert not pidfile.exists()
    assert "jobd stopped" in (tmp_path / "jobd.log").read_text()


@pytest.fixture(autouse=True)
def _no_daemon_left(tmp_path: Path) -> Iterator[None]:
    """A detached daemon outlives a failed test; find it by its paths and stop it."""
    yield
    subprocess.run(["pkill", "-KILL", "-f", "--", f"--pidfile {tmp_path}"], check=False)


def test_stale_pidfile_is_taken_over(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text(f'[jobd]\nstore = "sqlite:///{tmp_path / "jobd.db"}"\n')
    pidfile = tmp_path / "jobd.pid"
    pidfile.write_text("999999\n")  # no such process
    result = run_jobd("--config", str(config), "run", "--detach", "--pidfile", str(pidfile))
    assert result.returncode == 0, result.stderr

    def new_pid() -> str | None:
        try:
            text = pidfile.read_text().strip()
        except FileNotFoundError:
            return None
        return text if text and text != "999999" else None

    pid = int(wait_for(new_pid))
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid), timeout=30)


def test_detach_needs_pidfile(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text("")
    result = run_jobd("--config", str(config), "run", "--detach")
    assert result.returncode == 2
    assert "--pidfile" in result.stderr
