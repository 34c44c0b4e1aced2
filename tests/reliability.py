"""The reliability scoreboard's plumbing: what fault tests observed, as JSON records.

A fault test asks for the `reliability` fixture and calls `observe(...)` with
what it counted: runs expected (`expected=`, or `runs=`), runs that ran
(`ran=`, optional: the report derives it as expected - lost when a test does not
count it), duplicated runs (`duplicated=` or `duplicates=`), lost fires, stuck
rows and orphaned processes (`orphaned=` or `orphans=`).
When $JOBD_RELIABILITY_OUT names a directory, each observation is written there
as one JSON file, with the test's outcome; `python -m tests.reliability_report`
runs the fault tests that way and renders RELIABILITY.md from the files, so the
table is never typed by hand. Without the variable nothing is written.

$JOBD_RELIABILITY_FULL=1 asks for the full sizes of the issue (100 concurrent
triggers, 10,000 queued runs, ...); the default sizes are scaled down to keep
`./test.sh` short while still proving each property.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

OUT_ENV = "JOBD_RELIABILITY_OUT"
FULL_ENV = "JOBD_RELIABILITY_FULL"

# The faults of the scoreboard, in its order: id -> what was done to jobd.
FAULTS = {
    "crash": "Daemon SIGKILLed while jobs run, then restarted",
    "crash-loop": "Daemon SIGKILLed repeatedly under an every-second schedule",
    "downtime": "2 hours of downtime, per catchup policy",
    "clock": "Wall clock jumps forward and backward under a running daemon",
    "dst": "DST: a year of fires in four zones (planner, in process)",
    "dst-daemon": "DST: a daemon's clock stepped across DST changes",
    "output": "Output abuse: 50 MB, one 10 MB line, binary, invalid UTF-8",
    "concurrency": "Concurrent `jobd trigger` processes against a running daemon",
    "disk-full": "Disk full while recording (SQLite on a small tmpfs)",
    "store-files": "Corrupt, foreign, newer, read-only or missing store",
    "store-outage": "Store down at start, frozen, or cut while runs go on",
    "bad-input": "Fuzzed config, cron, durations and command lines",
    "security": "Config ownership, file modes, `user =`, secrets in output and argv",
    "queue": "Queued runs drained with max_concurrent = 4",
    "privilege": "Jobs reaching for the store's credentials, jobd's imports or its root",
    "wake": "Pause, resume, schedule and unschedule through the CLI against an idle daemon",
    "stall": "Daemon stopped (SIGSTOP) past its slots, or a run left by a vanished instance",
    "root-files": "Root daemon: planted symlinks, others' or world-writable store files",
    "store-vanished": "SQLite store deleted or replaced under a running daemon",
    "store-limits": "56-character host name and 237-character schedule",
    "escape": "Descendants that leave the run's process group and clear its environment",
    "partition": "Store connection cut or frozen, or the daemon paused, while its job runs",
    "api-abuse": "HTTP API: forged, revoked, expired, read-only and other tenants' tokens",
    "notify": "Notification receivers down, slow or failing; a daemon killed mid-run",
}


def full_size() -> bool:
    return os.environ.get(FULL_ENV, "") not in ("", "0")


def sized(small: int, full: int) -> int:
    """The size for this run: `full` when the report asks for it, else `small`."""
    return full if full_size() else small


# The scoreboard's counts, in its column order.
COUNTS = ("expected", "ran", "duplicated", "lost", "stuck", "orphaned")
# The names the counts had first; observe() and the report still take them.
ALIASES = {"runs": "expected", "duplicates": "duplicated", "orphans": "orphaned"}


@dataclass
class Observation:
    fault: str
    backend: str
    expected: int | None = None  # runs (or, for input and file faults, cases) expected
    ran: int | None = None  # of those, the ones that ran; None: not counted by the test
    duplicated: int | None = None
    lost: int | None = None
    stuck: int | None = None
    orphaned: int | None = None
    detail: str = ""
    test: str = ""
    outcome: str = ""

    # The first names of the counts, for tests that adjust an observation later.
    runs = property(
        lambda self: self.expected, lambda self, value: setattr(self, "expected", value)
    )
    duplicates = property(
        lambda self: self.duplicated, lambda self, value: setattr(self, "duplicated", value)
    )
    orphans = property(
        lambda self: self.orphaned, lambda self, value: setattr(self, "orphaned", value)
    )


def canonical(counts: dict[str, Any]) -> dict[str, Any]:
    """`counts` under the scoreboard's names: `runs=` is `expected=`, and so on."""
    result = dict(counts)
    for old, new in ALIASES.items():
        if old in result:
            if new in result:
                raise TypeError(f"both {old}= and {new}= given")
            result[new] = result.pop(old)
    return result


@dataclass
class Recorder:
    test: str
    observations: list[Observation] = field(default_factory=list)

    def observe(self, fault: str, backend: str, **counts: Any) -> Observation:
        assert fault in FAULTS, f"unknown fault {fault!r}"
        observation = Observation(fault, backend, test=self.test, **canonical(counts))
        self.observations.append(observation)
        return observation


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    recorder = Recorder(request.node.nodeid)
    yield recorder
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    report = getattr(request.node, "rep_call", None)
    outcome = report.outcome if report is not None else "error"
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    test = hashlib.sha1(recorder.test.encode()).hexdigest()[:10]
    if not recorder.observations and outcome not in ("passed", "skipped"):
        # Failed before it could count: no row to mark, so the report lists it.
        path = directory / f"unrecorded-{test}.json"
        path.write_text(json.dumps({"test": recorder.test, "outcome": outcome}))
    for index, observation in enumerate(recorder.observations):
        observation.outcome = outcome
        # Named by test, not at random: the report lists details in a stable order.
        path = directory / f"{observation.fault}-{test}-{index}.json"
        path.write_text(json.dumps(asdict(observation), sort_keys=True))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    """Keep each phase's report on the item, so a fixture's teardown knows the outcome."""
    result = yield
    report = result.get_result()
    setattr(item, f"rep_{report.when}", report)
