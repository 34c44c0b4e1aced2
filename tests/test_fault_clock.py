"""Fault: the wall clock jumps forward and backward under a running daemon.

The daemon runs under libfaketime with a control file (FAKETIME_TIMESTAMP_FILE,
re-read every second), so the test moves the daemon's wall clock while
it runs; its monotonic clock is left alone, as a real clock step leaves it.
The rule (jobd/core/planner.py, README, jobd(1)): a forward jump of at most 100 slots
replays every skipped slot, a longer one fires only the latest, with a warning;
a backward jump fires no slot twice, the job waits for its next unfired slot,
and the jump is logged either way. tests/test_planner.py proves the rule on the
pure planner; this proves it in a real process on each store.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import CATCHUP_CAP, NewRun, Trigger
from tests.conftest import IN_CI, open_store, wait_for
from tests.faults import Daemon, duplicates, q, stuck_rows, write_config
from tests.reliability import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.fault]

LIBFAKETIME = next(
    (
        path
        for path in (
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
            "/usr/lib/faketime/libfaketimeMT.so.1",
            "/usr/local/lib/faketime/libfaketimeMT.so.1",
        )
        if os.path.exists(path)
    ),
    None,
)
needs_faketime = pytest.mark.skipif(
    LIBFAKETIME is None and not IN_CI, reason="libfaketime is not installed (apt install faketime)"
)


class FakeClock:
    """The daemon's wall-clock offset from real time, in seconds, in a control file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.set(0)

    def set(self, offset: int) -> None:
        self.offset = offset
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{offset:+d}\n")
        tmp.replace(self.path)  # never a half-written file under a reading daemon

    def now(self) -> datetime:
        return datetime.now().astimezone() + timedelta(seconds=self.offset)

    def env(self, cache: bool = True) -> dict[str, str]:
        assert LIBFAKETIME is not None, "libfaketime is required in CI (see .ci/run)"
        return {
            "LD_PRELOAD": LIBFAKETIME,
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            # Re-read the offset every second (or on every clock read, which
            # slows a busy daemon down).
            **({"FAKETIME_CACHE_DURATION": "1"} if cache else {"FAKETIME_NO_CACHE": "1"}),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


@needs_faketime
def test_clock_jumps_neither_double_nor_silently_drop_fires(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    fired = tmp_path / "fired"
    clock = FakeClock(tmp_path / "faketime")
    # On PostgreSQL the lease compares this host's clock with the database's; the
    # jumps here stay within the allowed skew except the long one, which is the
    # point: see the second test.
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nlease_ttl = "3s"\nmax_clock_skew = "3h"\n'
        '[jobs.tick]\nschedule = "* * * * * *"\noverlap = "allow"\n'
        f"shell = {q(f'echo $JOBD_SCHEDULED_FOR >> {fired}')}\n",
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log", env=clock.env())
    store = open_store(store_url)

    def slots() -> list[datetime]:
        return sorted(
            r.scheduled_for for r in store.executions(job="tick", limit=None) if r.scheduled_for
        )

    def fired_up_to(offset: float) -> bool:
        """A slot at least `offset` seconds past real now (as the daemon sees it) fired."""
        done = slots()
        due = datetime.now().astimezone() + timedelta(seconds=offset - 1.5)
        return bool(done) and done[-1] >= due

    try:
        daemon.start()
        wait_for(lambda: len(slots()) >= 2, timeout=20)
        clock.set(20)  # forward 20 s: 19 skipped slots, within the cap, replayed
        wait_for(lambda: fired_up_to(20), timeout=20)
        before_back = slots()
        clock.set(15)  # backward 5 s: those slots fired already
        wait_for(lambda: slots()[-1] >= before_back[-1] + timedelta(seconds=2), timeout=20)
        after_back = slots()
        since_back = [s for s in after_back if s not in set(before_back)]
        clock.set(15 + 7200)  # forward 2 h: 7,200 slots, beyond the cap
        wait_for(lambda: fired_up_to(7200 + 16), timeout=20)
        wait_for(lambda: stuck_rows(store) == 0, timeout=20)
        assert daemon.stop() == 0
        log = daemon.full_log()
        everything = slots()
        big_gap = [
            (a, b) for a, b in itertools.pairwise(everything) if b - a > timedelta(seconds=1)
        ]
        short = [s for s in everything if s <= after_back[-1]]
        expected_short = {short[0] + timedelta(seconds=i) for i in range(len(short))}
        lost = len(expected_short - set(short))
        runs = store.executions(job="tick", limit=None)
        executed = fired.read_text().split()
        reliability.observe(
            "clock",
            backend,
            runs=len(runs),
            duplicates=duplicates(everything) + duplicates(executed),
            lost=lost,
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail="+20 s replays 20 slots; -5 s fires nothing twice and waits; "
            "+2 h fires only the latest slot, with a warning",
        )
        assert duplicates(everything) == 0 and duplicates(executed) == 0
        assert lost == 0, sorted(expected_short - set(short))[:5]
        # Backward: what fired after the jump comes after everything fired before it.
        assert since_back and min(since_back) > before_back[-1]
        # Forward beyond the cap: exactly one gap, the jump, bridged by one fire.
        assert len(big_gap) == 1, big_gap
        assert (
            timedelta(hours=1, minutes=59)
            < big_gap[0][1] - big_gap[0][0]
            <= timedelta(hours=2, seconds=5)
        )
        assert f"more than {CATCHUP_CAP} slots fell due at once" in log
        assert "clock jumped forward" in log and "clock jumped back" in log
        # Every jump is replayed as plain schedule fires, none as a catch-up.
        assert {r.trigger for r in runs} == {Trigger.SCHEDULE}
    finally:
        daemon.cleanup()
        store.close()


def test_next_queued_in_is_measured_by_the_store_clock(store: Any) -> None:
    """The daemon sleeps until a queued run may start by the clock claims use, so a
    daemon whose clock is ahead neither spins nor oversleeps."""
    assert store.next_queued_in() is None
    store.apply_config(parse_config('[jobs.a]\ncommand = ["true"]\n'), store.now())
    store.enqueue(NewRun("a", Trigger.MANUAL, store.now() + timedelta(seconds=30)))
    assert 28 < store.next_queued_in() <= 30


@needs_faketime
def test_a_leader_clock_beyond_max_clock_skew_stops_leading_and_resumes(
    postgres_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """On PostgreSQL the database's clock is the reference: an instance whose clock
    jumps further than max_clock_skew from it refuses to lead (and says so) rather
    than fire at wrong times; it leads again once its clock is back, and the slots
    missed meanwhile follow the catchup policy."""
    fired = tmp_path / "fired"
    clock = FakeClock(tmp_path / "faketime")
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nlease_ttl = "3s"\nmax_clock_skew = "10s"\n'
        '[jobs.tick]\nschedule = "* * * * * *"\noverlap = "allow"\n'
        f"shell = {q(f'echo $JOBD_SCHEDULED_FOR >> {fired}')}\n",
    )
    daemon = Daemon(config, postgres_url, tmp_path / "jobd.log", env=clock.env())
    store = open_store(postgres_url)

    def slots() -> list[datetime]:
        return sorted(
            r.scheduled_for for r in store.executions(job="tick", limit=None) if r.scheduled_for
        )

    try:
        daemon.start()
        wait_for(lambda: len(slots()) >= 2, timeout=20)
        clock.set(3600)
        wait_for(lambda: "refusing to lead" in daemon.log(), timeout=20)
        refused = len(slots())
        time.sleep(2)
        assert len(slots()) <= refused + 1  # at most a fire already under way
        clock.set(0)
        wait_for(lambda: slots()[-1] > store.now() - timedelta(seconds=2), timeout=20)
        wait_for(lambda: stuck_rows(store) == 0, timeout=20)
        assert daemon.stop() == 0
        runs = store.executions(job="tick", limit=None)
        everything = slots()
        executed = fired.read_text().split()
        late = [r for r in runs if r.scheduled_for and r.scheduled_for > store.now()]
        reliability.observe(
            "clock",
            "postgresql",
            runs=len(runs),
            duplicates=duplicates(everything) + duplicates(executed),
            lost=0,
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail="+1 h beyond max_clock_skew: the instance stops leading with an error, "
            "leads again when its clock is back; missed slots follow catchup",
        )
        assert duplicates(everything) == 0 and duplicates(executed) == 0
        assert not late  # nothing fired for the wrong hour
        assert [r.trigger for r in runs].count(Trigger.CATCHUP) <= 2
    finally:
        daemon.cleanup()
        store.close()


@needs_faketime
def test_housekeeping_goes_on_after_the_clock_is_stepped_back(
    store_url: str, tmp_path: Path, reliability: Recorder
) -> None:
    """Heartbeats and the look for lost runs are timers: a wall clock stepped back
    an hour must not silence them for that hour, or on PostgreSQL the other
    instances would take this live daemon for dead and abandon its runs."""
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    clock = FakeClock(tmp_path / "faketime")
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobd]\nlease_ttl = "3s"\nmax_clock_skew = "3h"\n[jobs.long]\ncommand = ["sleep", "60"]\n',
    )
    daemon = Daemon(config, store_url, tmp_path / "jobd.log", env=clock.env())
    store = open_store(store_url)
    Instance = store.m.Instance
    try:
        daemon.start()
        # A run going on: on SQLite a busy daemon writes heartbeats too.
        run_id = store.enqueue(NewRun("long", Trigger.MANUAL, not_before=store.now()))
        wait_for(lambda: store.execution(run_id).status.value == "running", timeout=20)
        clock.set(-3600)
        wait_for(lambda: "jumped back" in daemon.log(), timeout=15)

        def heartbeat() -> Any:
            return Instance.select(Instance.heartbeat_at).where(Instance.stopped_at.is_null())

        seen = set()
        deadline = time.monotonic() + 4 * 3  # four lease_ttl
        while time.monotonic() < deadline and len(seen) < 3:
            seen.update(row.heartbeat_at for row in heartbeat())
            time.sleep(0.2)
        run = store.execution(run_id)
        reliability.observe(
            "clock",
            backend,
            runs=1,
            stuck=0,
            lost=int(run.status.value != "running"),
            detail=f"clock stepped back 1 h with a run going: {len(seen)} heartbeats in 4 ttl, "
            f"the run still {run.status.value}",
        )
        assert len(seen) >= 3, f"heartbeats stopped after the step: {sorted(seen)}"
        assert run.status.value == "running"
    finally:
        daemon.cleanup()
        store.close()
