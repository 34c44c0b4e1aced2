"""The benchmark's own arithmetic (bench/peers.py, bench/where_time_goes.py): pure
helpers only; nothing here is timed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.common import percentile
from bench.probes import precision_delays, read_times, span_rate
from bench.where_time_goes import _runs, _spy_summary, statement_kind


def test_span_rate_counts_intervals_between_first_and_last_start() -> None:
    # 5 starts over 2 seconds: 4 intervals, so 2 runs a second.
    assert span_rate([10.0, 10.5, 11.0, 11.5, 12.0]) == pytest.approx(2.0)
    assert span_rate([12.0]) == 0.0
    assert span_rate([]) == 0.0
    assert span_rate([5.0, 5.0]) == 0.0


def test_precision_delays_are_the_fraction_past_the_due_second() -> None:
    starts = [100.9, 101.003, 102.0015, 103.25, 104.0]
    assert precision_delays(starts, skip=1) == pytest.approx([0.003, 0.0015, 0.25, 0.0], abs=1e-9)
    # Sorted before the start-up runs are skipped.
    assert precision_delays([103.25, 101.003, 100.9], skip=1) == pytest.approx([0.003, 0.25])


def test_read_times_skips_what_is_not_a_time_and_sorts(tmp_path: Path) -> None:
    path = tmp_path / "stamps"
    path.write_text("1796670883.372883128\n1796670883.368496880\ndate: error\n")
    assert read_times(path) == [1796670883.368496880, 1796670883.372883128]
    assert read_times(tmp_path / "missing") == []


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert math.isnan(percentile([], 50))


def test_statement_kinds_name_the_verb_and_table() -> None:
    assert statement_kind('SELECT "t1"."id" FROM "jobs" AS "t1"') == "SELECT jobs"
    assert statement_kind('UPDATE "executions" SET "status" = 1') == "UPDATE executions"
    assert statement_kind("INSERT INTO instances VALUES (1)") == "INSERT instances"
    assert statement_kind("COMMIT") == "COMMIT"


def test_py_spy_summary_shares_by_thread_and_jobd_frame(tmp_path: Path) -> None:
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "thread (1): MainThread;tick (jobd/daemon.py:10);wait (x.py:1) 3\n"
        "thread (2): jobd-runs;_loop (jobd/supervisor.py:198) 1\n"
    )
    threads, frames = _spy_summary(raw)
    assert threads == {"thread (1): MainThread": 0.75, "thread (2): jobd-runs": 0.25}
    assert ("in tick (jobd/daemon.py:10)", 0.75) in frames
    assert ("under tick (jobd/daemon.py)", 0.75) in frames
    assert ("under _loop (jobd/supervisor.py)", 0.25) in frames


def test_repeated_statements_fold_into_counts() -> None:
    assert _runs(["BEGIN", "UPDATE e", "UPDATE e", "SELECT e", "UPDATE e"]) == [
        ("BEGIN", 1),
        ("UPDATE e", 2),
        ("SELECT e", 1),
        ("UPDATE e", 1),
    ]


def test_the_scale_part_builds_its_jobs_as_the_store_writes_them(tmp_path: Path) -> None:
    """bench/scale.py inserts its 100,000 jobs in bulk from the store's own row
    builder: a change to that builder's rows must not leave the part broken."""
    from bench.jobd_side import JobdSetup
    from bench.scale import build_store
    from tests.conftest import open_store

    setup = JobdSetup("sqlite", tmp_path, f"sqlite:///{tmp_path / 'jobd.db'}")
    setup.write_config({})
    setup.apply()
    build_store(setup, [("a", "0 3 * * *"), ("b", "0 3 * * *"), ("c", "15 4 * * *")])
    store = open_store(setup.url)
    try:
        jobs = {record.spec.name: record for record in store.jobs()}
    finally:
        store.close()
    assert sorted(jobs) == ["a", "b", "c"]
    assert jobs["c"].spec.schedule == "15 4 * * *"
    assert all(record.next_fire_at is not None and not record.paused for record in jobs.values())


def test_a_partial_run_keeps_the_other_parts_targets_and_says_which_run_measured_what(
    tmp_path: Path,
) -> None:
    from bench.__main__ import partial_runs_section, targets_section
    from bench.report import merge, section_rows

    path = tmp_path / "BENCHMARKS.md"
    full = targets_section([("a", True, "1 ms"), ("b", False, "9 ms")], "run 1", [])
    merge(path, [("machine", "## Machine\n\nfull run"), ("targets", full)], "# B")
    text = path.read_text()
    assert section_rows(text, "targets") == [
        ["a", "1 ms", "met", "run 1"],
        ["b", "9 ms", "**missed**", "run 1"],
    ]
    partial = targets_section([("b", True, "4 ms")], "run 2", section_rows(text, "targets"))
    runs = partial_runs_section(text, ["run 2", "fire", "0.5 → 0.6", "3 s"])
    merge(path, [("machine", None), ("partial-runs", runs), ("targets", partial)], "# B")
    text = path.read_text()
    assert section_rows(text, "targets") == [
        ["b", "4 ms", "met", "run 2"],
        ["a", "1 ms", "met", "run 1"],
    ]
    assert section_rows(text, "partial-runs") == [["run 2", "fire", "0.5 → 0.6", "3 s"]]
    assert "full run" in text  # the full run's machine section is kept
    assert text.index("Machine") < text.index("Partial runs") < text.index("Targets")
