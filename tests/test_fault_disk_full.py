"""Fault: the disk fills up under a SQLite store while the daemon records runs.

The store lives on a small tmpfs mounted for the test (root only; skipped
elsewhere), filled to the last byte while a run goes on and an every-second
schedule fires. The daemon must say so clearly, keep running and back off; the
commands must fail with one line and exit 69; nothing recorded before may be
damaged (PRAGMA integrity_check, rows compared); once space returns, the run's
outcome and the slots that fell due meanwhile are recorded, none lost or twice.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from jobd.store import Store
from tests.conftest import jobd_cmd, open_store, wait_for
from tests.faults import Daemon, duplicates, q, stuck_rows, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.fault]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system: the store cannot grow by a page."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def rows(path: Path, below: int) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT id, job, status, scheduled_for, log, log_bytes FROM executions "
            "WHERE id <= ? ORDER BY id",
            (below,),
        ).fetchall()


def test_disk_full_while_recording(small_disk: Path, tmp_path: Path, reliability: Recorder) -> None:
    db = small_disk / "jobd.db"
    url = f"sqlite:///{db}"
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nmax_backoff = "1s"\nlease_ttl = "30s"\n'
        '[jobs.tick]\nschedule = "* * * * * *"\noverlap = "allow"\ncatchup = "all"\n'
        'shell = "echo tick $JOBD_SCHEDULED_FOR"\n'
        f"[jobs.slow]\nshell = {q('sleep 3; seq 1 2000')}\n",
    )
    daemon = Daemon(config, url, tmp_path / "jobd.log")
    store = open_store(url)
    try:
        daemon.start()
        wait_for(lambda: len(store.executions(job="tick", limit=None)) >= 3, timeout=20)
        slow = store.enqueue(NewRun("slow", Trigger.MANUAL, store.now()))
        wait_for(lambda: store.execution(slow).status is Status.RUNNING, timeout=20)
        last_before = max(r.id for r in store.executions(limit=None))
        before = rows(db, last_before)
        filler = fill(small_disk)
        wait_for(lambda: "disk is full" in daemon.log(), timeout=30)
        # Commands fail with one line and exit 69, or read what is there.
        trigger = subprocess.run(
            jobd_cmd("trigger", "tick"), env=daemon.env, capture_output=True, text=True
        )
        listing = subprocess.run(
            jobd_cmd("executions", "--limit", "3"), env=daemon.env, capture_output=True, text=True
        )
        time.sleep(4)  # the slow run ends meanwhile; its outcome cannot be written
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.full_log()
        filler.unlink()
        wait_for(lambda: "store available again" in daemon.log(), timeout=30)
        wait_for(lambda: store.execution(slow).status.final, timeout=30)
        wait_for(lambda: stuck_rows(store) == 0, timeout=30)
        time.sleep(1.5)
        assert daemon.stop() == 0
        after = rows(db, last_before)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        ticks = sorted(r.scheduled_for for r in store.executions(job="tick", limit=None))
        expected = {ticks[0] + timedelta(seconds=i) for i in range((ticks[-1] - ticks[0]).seconds)}
        lost = len(expected - set(ticks))
        # A run still going at the snapshot (the slow one, or a tick) ends later: its
        # row changes by design. Rows that were settled must not.
        changed = [
            a
            for a, b in zip(before, after, strict=False)
            if a != b and a[0] != slow and a[2] not in ("queued", "running")
        ]
        log = daemon.full_log()
        reliability.observe(
            "disk-full",
            "sqlite",
            runs=len(store.executions(limit=None)),
            duplicates=duplicates(ticks),
            lost=lost,
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail=f"4 MB tmpfs filled while a run went on: integrity_check {integrity}, "
            f"{len(changed)} earlier rows changed, `trigger` exit {trigger.returncode}, "
            "the run's outcome and the missed slots recorded once space returned",
        )
        assert integrity == "ok"
        assert not changed and len(after) == len(before)
        assert trigger.returncode == 69, trigger.stderr
        assert trigger.stderr.count("\n") == 1 and "Traceback" not in trigger.stderr
        assert "full" in trigger.stderr
        assert listing.returncode == 0, listing.stderr
        assert lost == 0 and duplicates(ticks) == 0
        done = store.execution(slow)
        assert done.status is Status.SUCCEEDED and done.log.endswith("2000\n")
        assert log.count("store unavailable") == 1  # said once, not once per retry
        assert "Traceback" not in log
    finally:
        daemon.cleanup()
        store.close()
        os.sync()


def test_a_store_that_comes_and_goes_on_a_full_disk_is_one_outage(
    small_disk: Path, tmp_path: Path, reliability: Recorder
) -> None:
    """The daemon alone on a full disk: each failed round closes its connection,
    SQLite deletes the -wal, a few writes succeed and the disk fills again. The log
    alternated "store unavailable" and "available again" every second or two (2,400
    lines an hour); now it is one outage, told with back-off."""
    db = small_disk / "jobd.db"
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nmax_backoff = "60s"\n'
        '[jobs.tick]\nschedule = "* * * * * *"\noverlap = "allow"\ncatchup = "all"\n'
        'shell = "echo tick"\n',
    )
    daemon = Daemon(config, f"sqlite:///{db}", tmp_path / "jobd.log")

    def ticks(also: Callable[[Store], Any] = lambda store: None) -> tuple[list, Any]:
        # A connection of our own only while reading: one kept open would keep the -wal.
        store = open_store(f"sqlite:///{db}")
        try:
            runs = store.executions(job="tick", limit=None)
            return sorted(r.scheduled_for for r in runs), also(store)
        finally:
            store.close()

    try:
        daemon.start()
        wait_for(lambda: len(ticks()[0]) >= 2, timeout=20)
        filler = fill(small_disk)
        wait_for(lambda: "disk is full" in daemon.log(), timeout=30)
        # Full until the log has backed off to a line every 4 s or more (8 s or so).
        wait_for(lambda: daemon.log().count("store still unavailable") >= 3, timeout=30)
        filler.unlink()
        freed = time.monotonic()

        def told_back() -> bool:
            log = daemon.log()
            # Told at once if it was the outage's first return, else once it held.
            brief = "return of less than" in log or "returns of less than" in log
            return log.count("store available again") >= (2 if brief else 1)

        wait_for(told_back, timeout=30)
        told_after = time.monotonic() - freed
        assert daemon.stop() == 0
        seen, stuck = ticks(stuck_rows)
        log = daemon.full_log()
        lines = [line for line in log.splitlines() if "action=store." in line]
        expected = {seen[0] + timedelta(seconds=i) for i in range((seen[-1] - seen[0]).seconds)}
        reliability.observe(
            "disk-full",
            "sqlite",
            runs=len(expected),
            ran=len(expected & set(seen)),
            duplicates=duplicates(seen),
            lost=len(expected - set(seen)),
            orphans=len(daemon.orphans()),
            stuck=stuck,
            detail=f"daemon alone on a full disk, its writes coming and going: "
            f"{len(lines)} lines about the store, {log.count(' ERROR ')} errors; "
            f"the return told {told_after:.0f}s after space came back",
        )
        assert log.count("store unavailable (") == 1, lines
        assert len(lines) <= 8, lines
        assert "Traceback" not in log
        assert duplicates(seen) == 0 and expected <= set(seen)
    finally:
        daemon.cleanup()
        os.sync()
