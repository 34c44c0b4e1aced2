"""Fault: DST in a real daemon. The daemon's clock (libfaketime) is set just
before a DST change and stepped forward ten minutes at a time across it; its
fires must be exactly Debian cron's (the reference of tests/test_fault_dst.py)
for a fixed-time, an hourly and a ten-minute job: nothing twice on the fold,
nothing lost in the gap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import open_store, wait_for
from tests.faults import Daemon, duplicates, stuck_rows, write_config
from tests.reliability import Recorder, full_size
from tests.test_fault_clock import FakeClock, needs_faketime
from tests.test_fault_dst import JOBS, reference

pytestmark = [pytest.mark.slow, pytest.mark.fault]

STEP = timedelta(minutes=10)
# zone, fake start (just before the change), fake end (after both passes)
CHANGES = {
    "Berlin autumn": ("Europe/Berlin", "2026-10-25T00:12:30+00:00", "2026-10-25T02:07:30+00:00"),
    "Berlin spring": ("Europe/Berlin", "2026-03-29T00:12:30+00:00", "2026-03-29T01:42:30+00:00"),
    "Lord Howe autumn": (
        "Australia/Lord_Howe",
        "2026-04-04T14:12:30+00:00",
        "2026-04-04T16:07:30+00:00",
    ),
}


@needs_faketime
@pytest.mark.parametrize(
    "change",
    [pytest.param(c, marks=[] if c == "Berlin autumn" or full_size() else [pytest.mark.skip(
        reason="the report runs every change; ./test.sh one")]) for c in CHANGES],
)  # fmt: skip
def test_a_daemon_stepped_across_a_dst_change_fires_as_cron_does(
    change: str, tmp_path: Path, reliability: Recorder
) -> None:
    zone, start_text, end_text = CHANGES[change]
    start, end = datetime.fromisoformat(start_text), datetime.fromisoformat(end_text)
    clock = FakeClock(tmp_path / "faketime")
    names = {expr: f"job{i}" for i, expr in enumerate(JOBS)}
    config = write_config(
        tmp_path / "jobd.toml",
        f'[jobd]\ntimezone = "{zone}"\n'
        + "".join(
            f'[jobs.{name}]\nschedule = "{expr}"\ncommand = ["true"]\ncatchup = "none"\n'
            for expr, name in names.items()
        ),
    )
    url = f"sqlite:///{tmp_path / 'jobd.db'}"

    def set_fake(moment: datetime) -> None:
        clock.set(round((moment - datetime.now(UTC)).total_seconds()))

    set_fake(start)
    daemon = Daemon(config, url, tmp_path / "jobd.log", env=clock.env(cache=False))
    store = open_store(url)
    try:
        daemon.start()
        moment = start
        while moment < end:
            moment += STEP
            set_fake(moment)
            store.wake_daemons()
            fake_now = moment

            def caught_up(now: datetime = fake_now) -> bool:
                records = [store.job(name) for name in names.values()]
                return all(r.next_fire_at > now for r in records if r and r.next_fire_at)

            wait_for(caught_up, timeout=20)
        wait_for(lambda: stuck_rows(store) == 0, timeout=20)
        assert daemon.stop() == 0
        expected = reference(zone)
        lost = extra = dupes = observed = 0
        mismatches = {}
        for expr, name in names.items():
            got = sorted(
                r.scheduled_for for r in store.executions(job=name, limit=None) if r.scheduled_for
            )
            want = [f for f in expected[expr] if start < f <= moment]
            observed += len(got)
            dupes += duplicates(got)
            lost += len(set(want) - set(got))
            extra += len(set(got) - set(want))
            if got != want:
                mismatches[expr] = (
                    [f.isoformat() for f in got],
                    [f.isoformat() for f in want],
                )
        reliability.observe(
            "dst-daemon",
            "sqlite",
            runs=observed,
            duplicates=dupes + extra,
            lost=lost,
            orphans=len(daemon.orphans()),
            stuck=stuck_rows(store),
            detail=f"{change} ({zone}): clock stepped 10 min at a time over "
            f"{(end - start).seconds // 60} min; fires equal Debian cron's",
        )
        assert not mismatches, mismatches
    finally:
        daemon.cleanup()
        store.close()
