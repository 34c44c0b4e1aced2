"""RunProcess against real child processes: outcomes, output tail, timeouts,
cancels and the process group, as the executor sees them through events."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from jobd.core.config.parse import parse_job
from jobd.core.model import Outcome, Run, Settings, Source, Status, Trigger
from jobd.runs.process import Event, RunProcess

SETTINGS = Settings(kill_grace=0.5, log_lines=5)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.kind == "done":
            self.done.set()

    def outcome(self, timeout: float = 10) -> Outcome:
        assert self.done.wait(timeout), "the run did not end in time"
        outcome = self.events[-1].outcome
        assert outcome is not None
        return outcome


def start(
    table: dict, settings: Settings = SETTINGS, run_id: int = 1
) -> tuple[RunProcess, Recorder]:
    spec = parse_job("job", table, "test", {}, source=Source.CLI)
    now = datetime.now(UTC)
    run = Run(
        id=run_id, job="job", trigger=Trigger.MANUAL, status=Status.RUNNING, queued_at=now,
        not_before=now, started_at=now,
    )  # fmt: skip
    recorder = Recorder()
    process = RunProcess(run, spec, settings, recorder)
    process.start()
    return process, recorder


def test_success_reports_started_pid_then_done() -> None:
    _process, recorder = start({"command": ["true"]})
    assert recorder.outcome() == Outcome(Status.SUCCEEDED, 0)
    kinds = [event.kind for event in recorder.events]
    assert kinds[0] == "started" and kinds[-1] == "done"
    assert recorder.events[0].pid and recorder.events[-1].pid == recorder.events[0].pid


def test_exit_code_and_signal_are_failures() -> None:
    _p, recorder = start({"shell": "exit 3"})
    assert recorder.outcome() == Outcome(Status.FAILED, 3, None, "exit code 3")
    _p, recorder = start({"shell": "kill -9 $$"})
    assert recorder.outcome() == Outcome(Status.FAILED, None, 9, "killed by SIGKILL")


def test_output_tail_keeps_the_last_lines_and_counts_all_bytes() -> None:
    _p, recorder = start({"shell": "for i in 1 2 3 4 5 6 7 8; do echo line$i; done; echo err >&2"})
    recorder.outcome()
    done = recorder.events[-1]
    assert done.log == "line5\nline6\nline7\nline8\nerr\n"
    assert done.log_bytes == 8 * 6 + 4


def test_environment_names_the_run(tmp_path: Path) -> None:
    out = tmp_path / "env"
    _p, recorder = start(
        {"shell": f'echo "$JOBD_JOB $JOBD_EXECUTION_ID $JOBD_TRIGGER" > {out}', "env": {"A": "b"}},
        run_id=77,
    )
    assert recorder.outcome().status is Status.SUCCEEDED
    assert out.read_text().strip() == "job 77 manual"


def test_missing_program_fails_to_start() -> None:
    _p, recorder = start({"command": ["/nonexistent/program"]})
    outcome = recorder.outcome()
    assert outcome.status is Status.FAILED
    assert outcome.error is not None and outcome.error.startswith("cannot start /nonexistent")
    assert [event.kind for event in recorder.events] == ["done"]


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    script = f"sleep 30 & echo $! > {pidfile}; trap '' TERM; sleep 30"
    started = time.monotonic()
    _p, recorder = start({"shell": script, "timeout": "1s"})
    outcome = recorder.outcome(timeout=15)
    assert outcome.status is Status.TIMED_OUT and (outcome.error or "").startswith(
        "timed out after 1"
    )
    assert time.monotonic() - started < 5
    grandchild = int(pidfile.read_text())
    assert not _alive(grandchild)


def test_stop_cancels_with_the_first_reason() -> None:
    process, recorder = start({"command": ["sleep", "30"]})
    _wait_for(lambda: recorder.events and recorder.events[0].kind == "started")
    process.stop(Status.CANCELLED, "cancelled by request")
    process.stop(Status.CANCELLED, "a later reason")
    outcome = recorder.outcome()
    assert outcome.status is Status.CANCELLED and outcome.error == "cancelled by request"
    assert outcome.signal == 15


def test_a_grandchild_holding_the_output_open_is_killed_after_the_grace() -> None:
    started = time.monotonic()
    _p, recorder = start({"shell": "(trap '' TERM; sleep 30) & echo parent done"})
    outcome = recorder.outcome(timeout=15)
    assert outcome == Outcome(Status.SUCCEEDED, 0)
    assert time.monotonic() - started < 5
    assert "parent done" in (recorder.events[-1].log or "")


def test_long_output_is_reported_while_running() -> None:
    process, recorder = start({"shell": "echo first; sleep 1.6; echo second"})
    outcome = recorder.outcome()
    assert outcome.status is Status.SUCCEEDED
    logs = [event for event in recorder.events if event.kind == "log"]
    assert logs and logs[0].log == "first\n"
    assert recorder.events[-1].log == "first\nsecond\n"
    assert not process.is_alive() or process.join(1) is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of init still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
