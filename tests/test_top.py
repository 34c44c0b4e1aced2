"""`jobd top`: the view as pure functions, and the live loop in a real terminal
(tmux), against a real daemon's store on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from jobd.cli.top import TopData, sparkline, view
from jobd.core.model import NewRun, Trigger
from jobd.store import Store
from tests.conftest import jobd_cmd, wait_for
from tests.daemons import Daemons
from tests.terminal import Terminal

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def data(**changes: object) -> TopData:
    values: dict[str, object] = {
        "now": T0,
        "leader": "host1-42-abc on host1 (epoch 3)",
        "instances": [{"id": "host1-42-abc"}],
        "queue_depth": 2,
        "running": [
            {"id": 9, "job": "backup", "started_at": T0 - timedelta(seconds=75), "host": "host1"}
        ],
        "next_fires": [{"job": "report", "at": T0 + timedelta(minutes=5)}],
        "failures": [
            {"id": 8, "job": "sync", "status": "timed_out", "finished_at": T0 - timedelta(60)}
        ],
        "trends": {"backup": [1.0, 2.0, 4.0, 8.0]},
    }
    values.update(changes)
    return TopData(**values)  # type: ignore[arg-type]


def screen(renderable: object, width: int, height: int) -> str:
    console = Console(width=width, height=height, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_sparkline_scales_from_least_to_most() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5, 5, 5]) == "▄▄▄"
    assert sparkline([]) == ""
    assert sparkline(range(100), width=3) == "▁▅█"


def test_the_view_shows_every_part() -> None:
    text = screen(view(data(), 100, 40), 100, 40)
    assert "leader host1-42-abc on host1 (epoch 3) | 1 instance(s) | 1 running | 2 queued" in text
    assert "backup" in text and "1m15s" in text  # a running run and its elapsed time
    assert "report" in text and "in 5m" in text
    assert "sync" in text and "timed_out" in text
    assert "▁▂▄█" in text and "8.0s" in text


def test_a_tiny_terminal_is_told_so_plainly() -> None:
    text = screen(view(data(), 40, 8), 40, 8)
    assert "jobd top: terminal 40x8, needs 60x12" in text
    assert "1 running" in text and "q quits" in text


def test_rows_beyond_the_screen_are_counted_not_dropped() -> None:
    many = [{"id": i, "job": f"job{i}", "started_at": T0, "host": "h"} for i in range(30)]
    text = screen(view(data(running=many), 100, 20), 100, 20)
    assert "... 26 more" in text


def test_no_leader_is_said() -> None:
    text = screen(view(data(leader="NONE: no schedule fires"), 100, 40), 100, 40)
    assert "leader NONE: no schedule fires" in text


# -- in a real terminal --------------------------------------------------------------


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()
    for daemon in started.started:
        print(f"--- {daemon.log_path.name} (exit {daemon.proc.returncode})\n{daemon.log()}")


def trigger(store: Store, job: str) -> int:
    return store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now(), triggered_by="test"))


@pytest.mark.slow
def test_top_runs_live_in_a_terminal_and_quits_on_q_and_ctrl_c(
    store_url: str, store: Store, daemons: Daemons
) -> None:
    daemons.write_config(
        {
            "quick": {"command": ["true"]},
            "broken": {"shell": "exit 3"},
            "sleeper": {"command": ["sleep", "60"]},
            "hourly": {"command": ["true"], "schedule": "0 * * * *"},
        }
    )
    daemons.start(store_url)
    for job in ("quick", "quick", "broken", "sleeper"):
        trigger(store, job)
    command = jobd_cmd("--config", str(daemons.config), "--store", store_url, "top")
    terminal = Terminal(command, 120, 40)
    try:
        shown = wait_for(
            lambda: (s := terminal.screen()) and "sleeper" in s and "broken" in s and s,
            timeout=20,
        )
        assert "jobd top" in shown and "1 running" in shown
        assert "hourly" in shown  # its next fire
        assert "failed" in shown  # broken's run
        first = shown
        # The clock line and the elapsed time move on by themselves: it is live.
        wait_for(lambda: terminal.screen() != first, timeout=10)
        terminal.keys("q")
        assert wait_for(lambda: terminal.exit_status() is not None, timeout=10)
        assert terminal.exit_status() == 0
    finally:
        print(terminal.screen())  # shown by pytest when the test failed
        terminal.close()

    tiny = Terminal(command, 40, 8)
    try:
        wait_for(lambda: "jobd top: terminal 40x8, needs 60x12" in tiny.screen(), timeout=20)
        tiny.keys("C-c")
        wait_for(lambda: tiny.exit_status() is not None, timeout=10)
        assert "Traceback" not in tiny.screen()
    finally:
        print(tiny.screen())  # shown by pytest when the test failed
        tiny.close()
