"""trigger, executions, show, logs, cancel: formatting through click's runner,
exit codes through real processes, on SQLite and PostgreSQL.

The daemon is not needed: tests.clihelp.Executor plays the executing instance
through the real store API (heartbeat, claim, write_log, finish).
"""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobd.core.model import NewRun, Status, Trigger
from tests.clihelp import (
    ANSI,
    RUN_SHAPE,
    SHOW_SHAPE,
    Executor,
    Step,
    add_instance,
    add_job,
    check_shape,
    empty_config,
    invoke,
    jobd,
    postgresql_url,
)
from tests.conftest import jobd_cmd, open_store, wait_for, write_output

__all__ = ["postgresql_url"]  # the fixture alias, see tests.clihelp


def enqueue(store: Any, job: str, status: Status = Status.QUEUED, **kw: Any) -> int:
    run = NewRun(job=job, trigger=Trigger.MANUAL, not_before=store.now(), status=status, **kw)
    return store.enqueue(run)


@pytest.fixture
def history(store: Any) -> dict[str, list[int]]:
    """Two jobs with runs in several statuses, oldest first."""
    add_job(store, "backup")
    add_job(store, "report")
    ids = {
        "backup": [
            enqueue(store, "backup", Status.SUCCEEDED),
            enqueue(store, "backup", Status.FAILED, error="boom"),
            enqueue(store, "backup", Status.SKIPPED),
        ],
        "report": [enqueue(store, "report", Status.SUCCEEDED), enqueue(store, "report")],
    }
    return ids


# -- executions ------------------------------------------------------------------


def test_executions_json_is_run_keys_newest_first(store_url: str, history: dict) -> None:
    result = invoke(store_url, "executions", "--json", "--limit", "0")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    check_shape(rows, [RUN_SHAPE])
    ids = [row["id"] for row in rows]
    assert ids == sorted(history["backup"] + history["report"], reverse=True)
    assert rows[0]["status"] == "queued" and rows[0]["finished_at"] is None


def test_executions_filters(store_url: str, history: dict) -> None:
    def ids(*args: str) -> list[int]:
        result = invoke(store_url, "executions", "--json", *args)
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.output)]

    backup = history["backup"]
    assert ids("--job", "backup") == backup[::-1]
    assert ids("--job-type", "backup", "--limit", "2") == backup[:0:-1]
    assert ids("--status", "failed", "--status", "SKIPPED") == [backup[2], backup[1]]
    assert ids("--job", "report", "--status", "queued") == [history["report"][1]]
    assert len(ids("--since", "1h", "--limit", "0")) == 5
    assert ids("--since", "2000-01-01T00:00:00Z", "--job", "report") == history["report"][::-1]
    assert ids("--since", "2999-01-01T00:00:00Z") == []


def test_executions_plain_table_on_a_pipe(store_url: str, history: dict, tmp_path: Path) -> None:
    result = jobd(store_url, tmp_path, "executions", "--job", "backup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "JOB",
        "TRIGGER",
        "STATUS",
        "STARTED",
        "DURATION",
        "EXIT",
        "HOST",
    ]
    assert len(lines) == 4 and not ANSI.search(result.stdout)
    # aligned: every STATUS cell starts where the header does
    column = lines[0].index("STATUS")
    assert [line[column:].split()[0] for line in lines[1:]] == ["skipped", "failed", "succeeded"]
    assert "Z" in lines[1]  # absolute UTC times on a pipe, not "3s ago"


def test_executions_unknown_job_suggests(store_url: str, history: dict, tmp_path: Path) -> None:
    result = jobd(store_url, tmp_path, "executions", "--job", "backpu")
    assert result.returncode == 2
    assert result.stderr.strip() == "jobd: unknown job 'backpu' (did you mean 'backup'?)"
    assert result.stdout == ""


def test_executions_bad_status_is_one_usage_line(sqlite_url: str, tmp_path: Path) -> None:
    result = jobd(sqlite_url, tmp_path, "executions", "--status", "done")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'done' is not one of" in result.stderr
    assert "succeeded" in result.stderr


def test_executions_bad_since(sqlite_url: str) -> None:
    result = invoke(sqlite_url, "executions", "--since", "yesterday")
    assert result.exit_code == 2 and "--since" in result.output


def test_executions_reads_without_the_orm(store_url: str, history: dict) -> None:
    """The latency budget (bench/cli_latency.py) depends on this."""
    code = (
        "import sys\n"
        "from jobd.cli import cli\n"
        f"cli.main(['--store', {store_url!r}, 'executions', '--json'], standalone_mode=False)\n"
        "heavy = sorted(m for m in ('peewee', 'rich', 'jobd.core.model', 'jobd.core.config.parse') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    heavy = [
        m
        for m in ("peewee", "rich", "jobd.core.model", "jobd.core.config.parse")
        if m in result.stderr
    ]
    if store_url.startswith("sqlite"):
        assert "HEAVY []" in result.stderr, heavy
    else:
        assert "peewee" not in result.stderr.split("HEAVY")[1]


# -- show and logs ---------------------------------------------------------------


def test_show_json_has_every_field(store_url: str, store: Any) -> None:
    add_job(store, "backup")
    run_id = enqueue(store, "backup")
    instance = add_instance(store)
    store.claim(instance, "h1", 1)
    write_output(store, run_id, "one\ntwo\n", 100)
    result = invoke(store_url, "show", str(run_id), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    check_shape(row, SHOW_SHAPE)
    assert row["status"] == "running" and row["log"] == "one\ntwo\n" and row["log_bytes"] == 100
    assert row["config_hash"] and row["instance"] == instance and row["host"] == "h1"


def test_show_for_people(store_url: str, store: Any) -> None:
    add_job(store, "backup")
    run_id = enqueue(store, "backup", Status.FAILED, error="exit 3")
    write_output(store, run_id, "it broke\n", 9)
    result = invoke(store_url, "show", str(run_id))
    assert result.exit_code == 0, result.output
    assert "status         failed" in result.output
    assert "9 B, 1 lines, all kept" in result.output
    assert result.output.endswith("\nit broke\n")
    assert not ANSI.search(result.output)


def test_show_and_logs_unknown_id(sqlite_url: str, tmp_path: Path) -> None:
    open_store(sqlite_url).close()
    for command in ("show", "logs"):
        result = jobd(sqlite_url, tmp_path, command, "999")
        assert result.returncode == 2
        assert result.stderr == "jobd: no run with id 999 (see `jobd executions`)\n"
    result = jobd(sqlite_url, tmp_path, "show", "abc")
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_logs_prints_the_tail_and_says_what_was_dropped(store_url: str, store: Any) -> None:
    add_job(store, "backup")
    run_id = enqueue(store, "backup", Status.SUCCEEDED)
    write_output(store, run_id, "last line\n", 5000)
    result = invoke(store_url, "logs", str(run_id))
    assert result.exit_code == 0
    assert "4990 earlier bytes were not kept" in result.output
    assert result.output.endswith("last line\n")
    result = invoke(store_url, "logs", str(run_id), "--json")
    check_shape(
        json.loads(result.output),
        {"id": int, "job": str, "status": str, "log_bytes": int, "log": str},
    )


# -- trigger ---------------------------------------------------------------------


def test_trigger_without_a_live_daemon_queues_nothing(
    store_url: str, store: Any, tmp_path: Path
) -> None:
    add_job(store, "backup")
    add_instance(store, "stale", heartbeat=store.now() - timedelta(minutes=5))
    result = jobd(store_url, tmp_path, "trigger", "backup")
    assert result.returncode == 69
    assert "no live jobd daemon" in result.stderr and "--local" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert store.executions("backup") == []


def test_trigger_queues_a_manual_run_and_audits(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    add_instance(store)
    result = jobd(store_url, tmp_path, "trigger", "backup")
    assert result.returncode == 0, result.stderr
    run_id = int(result.stdout)
    run = store.execution(run_id)
    assert run.status is Status.QUEUED and run.trigger is Trigger.MANUAL
    assert run.triggered_by and "@" in run.triggered_by
    event = store.audit_events(1)[0]
    assert (event["action"], event["target"], event["detail"]["run"]) == (
        "trigger",
        "backup",
        run_id,
    )


def test_trigger_unknown_job(sqlite_url: str, store: Any, tmp_path: Path) -> None:
    open_store(sqlite_url).close()
    result = jobd(sqlite_url, tmp_path, "trigger", "nope")
    assert result.returncode == 2 and "unknown job 'nope'" in result.stderr


OUTCOMES = [
    (Step(status="succeeded"), 0, "succeeded in"),
    (Step(status="failed", exit_code=3), 1, "failed with exit code 3"),
    (Step(status="timed_out", exit_code=None), 124, "timed out"),
    (Step(status="cancelled", exit_code=None, error="by alice"), 1, "was cancelled: by alice"),
    (Step(status="abandoned", exit_code=None), 1, "was abandoned"),
]


@pytest.mark.parametrize(("step", "code", "says"), OUTCOMES, ids=lambda v: str(v)[:12])
def test_trigger_wait_exits_with_the_outcome(
    store_url: str, store: Any, tmp_path: Path, step: Step, code: int, says: str
) -> None:
    add_job(store, "backup")
    with Executor(store_url, step) as executor:
        result = jobd(store_url, tmp_path, "trigger", "backup", "--wait")
    assert result.returncode == code, result.stderr
    run_id = int(result.stdout)
    assert executor.claimed == [run_id]
    assert says in result.stderr and f"run {run_id} (backup)" in result.stderr
    assert not ANSI.search(result.stderr)  # no spinner on a pipe


def test_trigger_wait_json_prints_the_final_run(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    with Executor(store_url, Step(status="failed", exit_code=7)):
        result = jobd(store_url, tmp_path, "trigger", "backup", "--wait", "--json")
    assert result.returncode == 1
    row = json.loads(result.stdout)
    check_shape(row, RUN_SHAPE)
    assert (row["status"], row["exit_code"]) == ("failed", 7)


def test_trigger_follow_streams_the_output(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    chunks = [f"line {i}\n" for i in range(8)]
    with Executor(store_url, Step(output=chunks, status="failed", exit_code=2)):
        result = jobd(store_url, tmp_path, "trigger", "backup", "--follow")
    assert result.returncode == 1, result.stderr
    first, rest = result.stdout.split("\n", 1)
    assert int(first) > 0
    assert rest == "".join(chunks)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell starts a background job


@pytest.mark.parametrize("started", ["default", "sigint-ignored"])
def test_ctrl_c_stops_waiting_not_the_run(
    store_url: str, store: Any, tmp_path: Path, started: str
) -> None:
    add_job(store, "backup")
    add_instance(store)
    env = {**_env(tmp_path)}
    proc = subprocess.Popen(
        [*jobd_cmd("trigger", "backup", "--wait", "--store", store_url)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_ignore_sigint if started == "sigint-ignored" else None,
    )
    try:
        assert proc.stdout is not None
        run_id = int(proc.stdout.readline())  # printed once queued; then it waits
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert f"run {run_id} goes on" in err and "Traceback" not in err
    assert store.execution(run_id).status is Status.QUEUED


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["JOBD_CONFIG"] = empty_config(tmp_path)
    return env


@pytest.mark.parametrize(("status", "code"), [("succeeded", 0), ("timed_out", 124)])
def test_logs_follow_exits_with_the_outcome(
    store_url: str, store: Any, tmp_path: Path, status: str, code: int
) -> None:
    add_job(store, "backup")
    run_id = enqueue(store, "backup")
    step = Step(output=["a\n", "b\n", "c\n"], status=status)
    with Executor(store_url, step):
        result = jobd(store_url, tmp_path, "logs", str(run_id), "--follow")
    assert result.returncode == code, result.stderr
    assert result.stdout == "a\nb\nc\n"
    # The outcome line ends it, as `trigger --follow` ends.
    said = {"succeeded": "succeeded in", "timed_out": "timed out"}[status]
    assert result.stderr.splitlines()[-1].startswith(f"run {run_id} (backup) {said}")


def test_logs_of_a_job_show_its_latest_run(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    add_job(store, "report")
    add_job(store, "idle")
    for job, status, text in [
        ("backup", Status.SUCCEEDED, "old\n"),
        ("backup", Status.FAILED, "new\n"),
        ("report", Status.SUCCEEDED, "report\n"),
    ]:
        write_output(store, enqueue(store, job, status), text, len(text))
    result = invoke(store_url, "logs", "--job", "backup")
    assert result.exit_code == 0, result.output
    assert result.output == "new\n"
    for args, said in [
        (["logs", "1", "--job", "backup"], "give a run ID or --job NAME, not both"),
        (["logs"], "give a run ID or --job NAME"),
        (["logs", "--job", "idle"], "job 'idle' has no runs yet"),
        (["logs", "--job", "backpu"], "unknown job 'backpu'"),
    ]:
        done = jobd(store_url, tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and done.stderr.count("\n") == 1


def test_logs_of_a_job_follow_its_running_run(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    enqueue(store, "backup", Status.FAILED)
    run_id = enqueue(store, "backup")
    with Executor(store_url, Step(output=["a\n", "b\n"], status="succeeded")):
        result = jobd(store_url, tmp_path, "logs", "--job", "backup", "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "a\nb\n"
    assert result.stderr.splitlines()[-1].startswith(f"run {run_id} (backup) succeeded in")


# -- cancel ----------------------------------------------------------------------


def test_cancel_a_queued_run(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    run_id = enqueue(store, "backup")
    result = jobd(store_url, tmp_path, "cancel", str(run_id))
    assert result.returncode == 0, result.stderr
    assert "before it started" in result.stdout
    assert store.execution(run_id).status is Status.CANCELLED
    event = store.audit_events(1)[0]
    assert (event["action"], event["detail"]) == ("cancel", {"run": run_id, "was": "queued"})


def test_cancel_a_running_run_and_wait_for_it(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    done = {"flag": False}
    with Executor(store_url, Step(hold=lambda: done["flag"])) as executor:
        queued = jobd(store_url, tmp_path, "trigger", "backup")
        run_id = int(queued.stdout)
        wait_for(lambda: executor.claimed)
        result = jobd(store_url, tmp_path, "cancel", str(run_id))
        assert result.returncode == 0, result.stderr
        assert "asked the daemon" in result.stdout
        waited = jobd(store_url, tmp_path, "logs", str(run_id), "--follow")
    assert waited.returncode == 1
    assert store.execution(run_id).status is Status.CANCELLED


def test_cancel_a_finished_run_is_refused(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    run_id = enqueue(store, "backup", Status.SUCCEEDED)
    result = jobd(store_url, tmp_path, "cancel", str(run_id))
    assert result.returncode == 1
    assert result.stderr == f"jobd: run {run_id} (backup) already ended: succeeded\n"
    assert jobd(store_url, tmp_path, "cancel", "12345").returncode == 2


# -- the click-free path ----------------------------------------------------------

FAST_LINES = [
    ["executions"],
    ["executions", "--json"],
    ["executions", "--job", "backup", "--limit", "2"],
    ["executions", "--job-type=report", "--json"],
    ["executions", "--status", "FAILED", "--status=skipped"],
    ["executions", "--since", "1d", "--local", "--limit=0"],
    ["executions", "--job", "backpu"],
    ["executions", "--since", "yesterday"],
]
CLICK_LINES = [
    ["executions", "--help"],
    ["executions", "--jbo", "x"],
    ["executions", "--status", "done"],
    ["executions", "--limit", "-1"],
    ["executions", "--job"],
    ["executions", "extra"],
    ["executions", "--job", "--json"],
    ["--version"],
    ["list"],
]


def test_fast_path_takes_only_plain_lines() -> None:
    from jobd.cli import fast

    for line in FAST_LINES:
        assert fast.parse(["--store", "sqlite:////x.db", *line]) is not None, line
    for line in CLICK_LINES:
        assert fast.parse(line) is None, line


@pytest.mark.parametrize("line", FAST_LINES, ids=" ".join)
def test_fast_path_answers_like_click(
    store_url: str, history: dict, tmp_path: Path, line: list[str]
) -> None:
    import sys

    env = {**_env(tmp_path), "JOBD_STORE": store_url}
    fast = subprocess.run(jobd_cmd(*line), capture_output=True, text=True, env=env)
    code = "import sys; from jobd.cli.app import cli; cli.main(sys.argv[1:], prog_name='jobd')"
    slow = subprocess.run(
        [sys.executable, "-c", code, *line], capture_output=True, text=True, env=env
    )
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        slow.returncode,
        slow.stdout,
        slow.stderr,
    )


def test_fast_path_imports_neither_click_nor_the_orm(store_url: str, history: dict) -> None:
    import sys

    code = (
        "import sys\n"
        "from jobd.cli import fast\n"
        f"assert fast.run(['--store', {store_url!r}, 'executions']) == 0\n"
        "heavy = [m for m in ('click', 'peewee', 'rich', 'jobd.core.model', 'zoneinfo') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


def test_history_takes_only_the_store_from_the_config(
    store_url: str, history: dict, tmp_path: Path
) -> None:
    """Reading history must not depend on every job of the file being valid."""
    from tests.conftest import run_jobd

    config = tmp_path / "jobd.toml"
    config.write_text(f'[jobd]\nstore = "{store_url}"\n[jobs.bad]\nschedule = "nope"\n')
    env = {"JOBD_CONFIG": str(config), "XDG_DATA_HOME": str(tmp_path / "data")}
    result = run_jobd("executions", "--json", "--job", "backup", env=env)
    assert result.returncode == 0, result.stderr
    assert [row["id"] for row in json.loads(result.stdout)] == history["backup"][::-1]
    assert run_jobd("validate", env=env).returncode == 2
    config.write_text("[jobd\n")
    broken = run_jobd("executions", env=env)
    assert broken.returncode == 2 and "TOML syntax error" in broken.stderr
    assert broken.stderr.count("\n") == 1
