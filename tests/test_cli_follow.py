"""Following a run's output from its stored tail, and the CLI's copies of the
model's names (kept light for start-up time) checked against the model."""

from __future__ import annotations

from dataclasses import fields

from hypothesis import given
from hypothesis import strategies as st

from jobd.cli import render
from jobd.cli.follow import FINAL, new_output, outcome
from jobd.core.model import Run, Status
from jobd.core.records import DETAIL_KEYS, RUN_KEYS, STATUSES
from jobd.errors import ExitCode
from jobd.store import migrations, reader


def test_light_copies_match_the_model() -> None:
    assert {f.name for f in fields(Run)} == {*RUN_KEYS, *DETAIL_KEYS}
    assert tuple(status.value for status in Status) == STATUSES
    assert reader.SCHEMA_VERSION == migrations.SCHEMA_VERSION
    assert set(render.STATUS_STYLE) == {status.value for status in Status}
    assert {status.value for status in Status if status.final} == FINAL


def test_first_read_prints_the_whole_tail() -> None:
    assert new_output("", 0, "a\nb\n", 4) == ("a\nb\n", 0)


def test_growth_prints_only_the_new_bytes() -> None:
    assert new_output("a\nb\n", 4, "a\nb\nc\n", 6) == ("c\n", 0)


def test_repeated_lines_are_counted_not_guessed() -> None:
    # The tail dropped one "x" line and gained one: only the byte count can tell.
    assert new_output("x\nx\n", 4, "x\nx\n", 6) == ("x\n", 0)


def test_trimmed_tail_still_lines_up() -> None:
    assert new_output("a\nb\nc\n", 6, "c\nd\ne\n", 10) == ("d\ne\n", 0)


def test_output_lost_between_polls_is_reported() -> None:
    text, lost = new_output("a\n", 2, "y\nz\n", 100)
    assert (text, lost) == ("y\nz\n", 94)


def test_first_read_of_a_long_run_reports_what_was_not_kept() -> None:
    assert new_output("", 0, "last\n", 5000) == ("last\n", 4995)


def test_rewritten_output_falls_back_to_the_overlap() -> None:
    # A masked secret made the text shorter than the bytes counted.
    assert new_output("token=***\n", 14, "token=***\nnext\n", 19) == ("next\n", 0)


def test_no_change_prints_nothing() -> None:
    assert new_output("a\n", 2, "a\n", 2) == ("", 0)


def test_multibyte_output() -> None:
    assert new_output("é\n", 3, "é\nü\n", 6) == ("ü\n", 0)


@given(
    lines=st.lists(st.sampled_from(["a\n", "b\n", "ccc\n", "é\n", "\n"]), max_size=40),
    keep=st.integers(min_value=1, max_value=6),
    gaps=st.lists(st.integers(min_value=0, max_value=6), max_size=20),
)
def test_following_a_kept_tail_reproduces_the_output(
    lines: list[str], keep: int, gaps: list[int]
) -> None:
    """Polled after any number of new lines, up to what the tail keeps, the
    follower prints exactly the output, repeated lines included."""
    shown_tail, shown_total, printed, point = "", 0, "", 0
    for gap in [*gaps, len(lines)]:
        point = min(len(lines), point + min(gap, keep))
        tail = "".join(lines[max(0, point - keep) : point])
        total = len("".join(lines[:point]).encode())
        text, lost = new_output(shown_tail, shown_total, tail, total)
        assert lost == 0
        printed += text
        shown_tail, shown_total = tail, total
    assert printed == "".join(lines[:point])


def test_outcome_codes() -> None:
    base = {"id": 7, "job": "j", "duration_s": 1.5, "exit_code": None, "signal": None}
    assert outcome({**base, "status": "succeeded"})[0] is ExitCode.OK
    code, line = outcome({**base, "status": "failed", "exit_code": 3})
    assert code is ExitCode.FAILURE and "exit code 3" in line
    code, line = outcome({**base, "status": "failed", "signal": 9})
    assert "signal 9" in line
    assert outcome({**base, "status": "timed_out"})[0] is ExitCode.TIMEOUT
    for status in ("cancelled", "abandoned", "skipped"):
        code, line = outcome({**base, "status": status, "error": "why"})
        assert code is ExitCode.FAILURE and status[:5] in line and line.endswith(": why")
