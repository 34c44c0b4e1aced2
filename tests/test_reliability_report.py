"""The scoreboard's plumbing: Recorder's names, and how the report renders its columns."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.reliability import COUNTS, Recorder
from tests.reliability_report import aggregate, load, render, unrecorded

META = {"sizes": "full", "when": "today", "machine": "here", "tests": "2 tests", "runtime": "1s"}


def records(recorder: Recorder, outcome: str = "passed") -> list[dict]:
    result = []
    for observation in recorder.observations:
        observation.outcome = outcome
        result.append(asdict(observation))
    return result


def table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_first_names_of_the_counts_still_work() -> None:
    recorder = Recorder("t")
    observation = recorder.observe("crash", "sqlite", runs=3, duplicates=0, orphans=1, lost=0)
    assert (observation.expected, observation.duplicated, observation.orphaned) == (3, 0, 1)
    observation.runs = (observation.runs or 0) + 1  # as a test that counts cases does
    assert observation.expected == 4 and observation.ran is None
    with pytest.raises(TypeError):
        recorder.observe("crash", "sqlite", runs=1, expected=1)


def test_columns_in_order_and_ran_counted_or_derived() -> None:
    recorder = Recorder("t")
    recorder.observe("crash", "sqlite", runs=6, duplicates=0, lost=1, orphans=0, stuck=0)
    recorder.observe("queue", "sqlite", expected=10, ran=10, duplicated=0, lost=0, stuck=0)
    recorder.observe("bad-input", "sqlite", runs=80)  # cases, no run: nothing to derive
    rows = table(render(aggregate(records(recorder)), META))
    assert rows[0] == [
        "fault", "backend", "expected", "ran", "duplicated", "lost", "stuck", "orphaned", "result"
    ]  # fmt: skip
    by_fault = {row[0]: row[2:] for row in rows[2:]}
    assert by_fault["Daemon SIGKILLed while jobs run, then restarted"] == [
        "6", "*5*", "0", "1", "0", "0", "pass"
    ]  # fmt: skip
    assert by_fault["Queued runs drained with max_concurrent = 4"] == [
        "10", "10", "0", "0", "0", "n/a", "pass"
    ]  # fmt: skip
    assert by_fault["Fuzzed config, cron, durations and command lines"][:2] == ["80", "n/a"]


def test_a_row_sums_ran_only_when_every_record_has_it() -> None:
    recorder = Recorder("t")
    recorder.observe("privilege", "sqlite", runs=3, lost=0)
    recorder.observe("privilege", "sqlite", runs=2)  # ran neither counted nor derivable
    recorder.observe("crash", "sqlite", runs=4, ran=4, lost=0)
    recorder.observe("crash", "sqlite", runs=4, lost=1)
    rows = {row["fault"]: row for row in aggregate(records(recorder))}
    assert rows["privilege"]["expected"] == 5 and "ran" not in rows["privilege"]
    assert rows["crash"]["ran"] == 7 and rows["crash"]["ran_derived"]


def test_records_written_under_the_first_names_still_render(tmp_path: Path) -> None:
    old = {"fault": "crash", "backend": "postgresql", "runs": 6, "duplicates": 0, "lost": 0,
           "orphans": 0, "stuck": 0, "detail": "", "test": "t", "outcome": "failed"}  # fmt: skip
    (tmp_path / "crash-0.json").write_text(json.dumps(old))
    [row] = aggregate(load(tmp_path))
    assert [row.get(name) for name in COUNTS] == [6, 6, 0, 0, 0, 0]
    assert "**FAIL** (1/1)" in render([row], META)


def test_a_test_that_failed_before_recording_is_listed(tmp_path: Path) -> None:
    recorder = Recorder("t")
    recorder.observe("wake", "sqlite", runs=3, duplicates=0, lost=0)
    for index, record in enumerate(records(recorder)):
        (tmp_path / f"wake-{index}.json").write_text(json.dumps(record))
    failed = {"test": "tests/test_x.py::test_y[postgresql]", "outcome": "failed"}
    (tmp_path / "unrecorded-0.json").write_text(json.dumps(failed))
    loaded = load(tmp_path)
    rows = aggregate(loaded)
    assert [(row["fault"], row["failed"]) for row in rows] == [("wake", 0)]
    text = render(rows, META, unrecorded(loaded))
    assert "**Failed before recording a count**" in text
    assert "- `tests/test_x.py::test_y[postgresql]`" in text
