"""RunProcess against real children: outcomes, the output tail, timeouts and cancels
that take the whole process group down, env, cwd, user, and `call` jobs."""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobd.core.model import JobKind, JobSpec, Outcome, Run, Settings, Status, Trigger
from jobd.runs import process as runner
from jobd.runs.process import READ_CHUNK, Event, OutputTail, RunProcess, kill_leftovers
from tests.conftest import wait_for
from tests.processes import assert_group_gone, group_survivors, wait_dead

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(kill_grace=0.5, log_lines=1000, log_bytes=256 * 1024)
IS_ROOT = os.geteuid() == 0


def shell(script: str, **changes: object) -> JobSpec:
    spec = JobSpec(name="job", schedule=None, kind=JobKind.SHELL, shell=script)
    return replace(spec, **changes)


def command(*argv: str, **changes: object) -> JobSpec:
    spec = JobSpec(name="job", schedule=None, kind=JobKind.COMMAND, command=argv)
    return replace(spec, **changes)


def a_run(**changes: object) -> Run:
    record = Run(
        id=7,
        job="job",
        trigger=Trigger.SCHEDULE,
        status=Status.RUNNING,
        queued_at=NOW,
        not_before=NOW,
        scheduled_for=NOW,
        attempt=2,
    )
    return replace(record, **changes)


class Execution:
    """A RunProcess started in the background, with the events it reported."""

    def __init__(
        self, spec: JobSpec, settings: Settings = SETTINGS, base_env: dict | None = None
    ) -> None:
        self.events: list[Event] = []
        self.process = RunProcess(a_run(), spec, settings, self.events.append, base_env)
        self.started_at = time.monotonic()
        self.process.start()

    def wait_started(self) -> int:
        wait_for(lambda: any(e.kind == "started" for e in self.events), timeout=10)
        return next(e.pid for e in self.events if e.kind == "started")  # type: ignore[return-value]

    def finish(self, timeout: float = 30.0) -> Event:
        self.process.join(timeout)
        assert not self.process.is_alive(), "the run did not end"
        self.elapsed = time.monotonic() - self.started_at
        done = self.events[-1]
        assert done.kind == "done" and done.outcome is not None
        assert [e.kind for e in self.events].count("done") == 1
        return done

    @property
    def outcome(self) -> Outcome:
        assert self.events[-1].outcome is not None
        return self.events[-1].outcome


def execute(
    spec: JobSpec, settings: Settings = SETTINGS, **kwargs: object
) -> tuple[Event, Outcome]:
    execution = Execution(spec, settings, **kwargs)  # type: ignore[arg-type]
    done = execution.finish()
    return done, execution.outcome


# -- outcomes --------------------------------------------------------------------------


def test_exit_zero_succeeds() -> None:
    execution = Execution(command("true"))
    done = execution.finish()
    assert done.outcome == Outcome(Status.SUCCEEDED, 0)
    started = [e for e in execution.events if e.kind == "started"]
    assert len(started) == 1 and started[0].pid and started[0].run_id == 7
    assert done.pid == started[0].pid


@pytest.mark.parametrize("code", [1, 3, 127, 255])
def test_non_zero_exit_fails_with_its_code(code: int) -> None:
    _, outcome = execute(shell(f"exit {code}"))
    assert outcome == Outcome(Status.FAILED, code, None, f"exit code {code}")


@pytest.mark.parametrize(
    ("sig", "name"), [(signal.SIGKILL, "SIGKILL"), (signal.SIGSEGV, "SIGSEGV")]
)
def test_signal_death_fails_with_the_signal(sig: int, name: str) -> None:
    _, outcome = execute(shell(f"kill -{int(sig)} $$"))
    assert outcome.status is Status.FAILED
    assert outcome.exit_code is None and outcome.signal == sig
    assert outcome.error == f"killed by {name}"


def test_missing_program_fails_without_starting() -> None:
    execution = Execution(command("/nonexistent/jobd-test-binary", "x"))
    done = execution.finish()
    assert [e.kind for e in execution.events] == ["done"]
    assert done.outcome is not None and done.outcome.status is Status.FAILED
    assert "cannot start /nonexistent/jobd-test-binary" in (done.outcome.error or "")


def test_command_is_argv_not_a_shell_line(tmp_path: Path) -> None:
    done, outcome = execute(command("echo", "$HOME", "a;b", "*"), base_env={"PATH": os.defpath})
    assert outcome.status is Status.SUCCEEDED
    assert done.log == "$HOME a;b *\n"


# -- the output tail ---------------------------------------------------------------------


def test_stdout_and_stderr_are_combined_in_order() -> None:
    done, _ = execute(shell("echo out1; echo err1 >&2; echo out2; echo err2 >&2"))
    assert done.log == "out1\nerr1\nout2\nerr2\n"
    assert done.log_bytes == len(done.log)


def test_tail_keeps_the_last_lines_and_counts_all_bytes() -> None:
    settings = replace(SETTINGS, log_lines=10)
    done, outcome = execute(command("seq", "1", "5000"), settings)
    assert outcome.status is Status.SUCCEEDED
    assert done.log == "".join(f"{n}\n" for n in range(4991, 5001))
    assert done.log_bytes == sum(len(f"{n}\n") for n in range(1, 5001))


def test_tail_is_bounded_in_bytes_too() -> None:
    settings = replace(SETTINGS, log_lines=1000, log_bytes=100)
    done, _ = execute(
        shell("for i in $(seq 1 200); do echo line-$i-xxxxxxxxxxxxxxxxx; done"), settings
    )
    assert done.log is not None
    assert len(done.log.encode()) <= 100
    assert done.log.endswith("line-200-xxxxxxxxxxxxxxxxx\n")
    assert done.log_bytes == sum(len(f"line-{i}-xxxxxxxxxxxxxxxxx\n") for i in range(1, 201))


def test_output_without_final_newline_is_kept() -> None:
    done, _ = execute(shell("printf 'a\\nb\\nlast'"), replace(SETTINGS, log_lines=2))
    assert done.log == "b\nlast"


def test_no_output_is_an_empty_log() -> None:
    done, _ = execute(command("true"))
    assert done.log == "" and done.log_bytes == 0


def test_zero_log_lines_keeps_nothing_but_counts() -> None:
    done, _ = execute(shell("echo hello"), replace(SETTINGS, log_lines=0))
    assert done.log == "" and done.log_bytes == 6


def test_a_10_mb_single_line_keeps_memory_and_tail_bounded() -> None:
    settings = replace(SETTINGS, log_bytes=64 * 1024)
    script = "import sys; sys.stdout.write('x' * 10_000_000); sys.stdout.flush()"
    execution = Execution(command(sys.executable, "-c", script), settings)
    done = execution.finish(timeout=60)
    assert execution.outcome.status is Status.SUCCEEDED
    assert done.log_bytes == 10_000_000
    assert done.log == "x" * (64 * 1024)
    assert len(execution.process.tail._buf) <= 2 * settings.log_bytes + READ_CHUNK
    assert execution.elapsed < 20


def test_binary_and_invalid_utf8_output_is_stored_as_text() -> None:
    done, outcome = execute(shell(r"printf 'ok \377\376 nul:\000: caf\303\251\n'"))
    assert outcome.status is Status.SUCCEEDED
    assert done.log == "ok \ufffd\ufffd nul:\ufffd: café\n"
    assert done.log_bytes == 19


def test_a_multibyte_character_cut_by_the_byte_bound_is_dropped() -> None:
    settings = replace(SETTINGS, log_bytes=5)
    done, _ = execute(shell(r"printf 'aé1234'"), settings)  # é is 2 bytes; 5 bytes cut it
    # Its second byte alone would show as U+FFFD, 3 bytes: 7 in all, over the bound.
    assert done.log == "1234"


def test_binary_output_is_stored_within_log_bytes() -> None:
    settings = replace(SETTINGS, log_bytes=4096)
    done, _ = execute(shell("head -c 100000 /dev/urandom"), settings)
    assert done.log_bytes == 100000
    assert 2048 < len(done.log.encode()) <= 4096


def test_secret_env_values_are_masked_in_output() -> None:
    spec = shell(
        "echo token=$API_TOKEN; echo other=$PLAIN; echo $API_TOKEN >&2",
        env={"API_TOKEN": "tok-123-SECRET", "PLAIN": "visible"},
        secret_env=("API_TOKEN",),
    )
    done, _ = execute(spec)
    assert done.log == "token=***\nother=visible\n***\n"


def test_secret_cut_by_the_byte_bound_does_not_leak_its_rest() -> None:
    # The kept window starts inside the secret: its tail must not show either.
    secret = "SECRET-0123456789abcdefghij"
    spec = shell(f"printf '{secret}:after'", env={"K": secret}, secret_env=("K",))
    done, _ = execute(spec, replace(SETTINGS, log_bytes=20))
    assert done.log is not None
    assert "abcdefghij" not in done.log
    assert done.log.endswith(":after")


def test_progress_is_reported_while_the_run_goes_on() -> None:
    execution = Execution(shell("echo first; sleep 1.6; echo second"))
    execution.finish()
    logs = [e for e in execution.events if e.kind == "log"]
    assert logs and logs[0].log == "first\n" and logs[0].log_bytes == 6
    assert execution.events[-1].log == "first\nsecond\n"


# -- timeouts, cancels and the process group -------------------------------------------


def test_timeout_kills_the_whole_group() -> None:
    execution = Execution(shell("sleep 300 & sleep 300", timeout=0.5))
    pgid = execution.wait_started()
    wait_for(lambda: len(group_survivors(pgid)) >= 3, timeout=5)  # sh and both sleeps
    done = execution.finish()
    outcome = execution.outcome
    assert outcome.status is Status.TIMED_OUT
    assert outcome.signal == signal.SIGTERM
    assert outcome.error == "timed out after 0.50s"
    assert done.pid == pgid
    assert execution.elapsed < 5
    assert_group_gone(pgid, reaped=True)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    # Ignored signals stay ignored across exec, so the sleeps ignore SIGTERM too.
    execution = Execution(shell("trap '' TERM; sleep 300 & sleep 300", timeout=0.3))
    pgid = execution.wait_started()
    execution.finish()
    assert execution.outcome.status is Status.TIMED_OUT
    assert execution.outcome.signal == signal.SIGKILL
    assert 0.3 + SETTINGS.kill_grace - 0.1 <= execution.elapsed < 5
    assert_group_gone(pgid)


def test_a_grandchild_holding_stdout_neither_hangs_the_run_nor_survives() -> None:
    execution = Execution(shell("sleep 300 & echo $!"))
    pgid = execution.wait_started()
    done = execution.finish(timeout=10)
    assert execution.outcome == Outcome(Status.SUCCEEDED, 0)
    assert execution.elapsed < SETTINGS.kill_grace + 3
    assert done.log is not None
    wait_dead(int(done.log.strip()))
    assert_group_gone(pgid)


def test_a_grandchild_ignoring_sigterm_and_holding_stdout_is_killed() -> None:
    execution = Execution(shell("trap '' TERM; sleep 300 & echo $!"))
    pgid = execution.wait_started()
    done = execution.finish(timeout=10)
    assert execution.outcome.status is Status.SUCCEEDED
    assert execution.elapsed < SETTINGS.kill_grace + 3
    assert done.log is not None
    wait_dead(int(done.log.strip()))
    assert_group_gone(pgid)


def test_stop_cancels_the_run_and_its_group() -> None:
    execution = Execution(shell("sleep 300 & sleep 300"))
    pgid = execution.wait_started()
    execution.process.stop(Status.CANCELLED, "cancelled by request")
    execution.process.stop(Status.CANCELLED, "a later reason loses")
    execution.finish()
    assert execution.outcome.status is Status.CANCELLED
    assert execution.outcome.error == "cancelled by request"
    assert execution.outcome.signal == signal.SIGTERM
    assert execution.elapsed < 5
    assert_group_gone(pgid)


def test_a_timeout_wins_over_a_later_stop() -> None:
    execution = Execution(shell("trap '' TERM; sleep 300", timeout=0.2))
    execution.wait_started()
    time.sleep(0.5)  # let the timeout fire first; the stop then arrives during the grace
    execution.process.stop(Status.CANCELLED, "jobd was stopped")
    execution.finish()
    assert execution.outcome.status is Status.TIMED_OUT


# -- environment, working directory, user ----------------------------------------------


def test_env_and_cwd_are_applied(tmp_path: Path) -> None:
    base = {
        "PATH": os.defpath,
        "INHERITED": "yes",
        "JOBD_STORE": "postgresql://secret@db/jobd",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "1000",
    }
    spec = shell(
        'echo "$REGION|$INHERITED|$JOBD_JOB|$JOBD_EXECUTION_ID|$JOBD_ATTEMPT|'
        "$JOBD_TRIGGER|$JOBD_SCHEDULED_FOR|${JOBD_STORE-unset}|${NOTIFY_SOCKET-unset}|"
        '${WATCHDOG_USEC-unset}"; pwd',
        env={"REGION": "eu-west-1", "INHERITED": "overridden"},
        cwd=str(tmp_path),
    )
    done, outcome = execute(spec, base_env=base)
    assert outcome.status is Status.SUCCEEDED
    assert done.log == (
        "eu-west-1|overridden|job|7|2|schedule|2026-01-05T12:00:00+00:00|unset|unset|unset\n"
        f"{tmp_path}\n"
    )


def test_missing_cwd_fails_to_start(tmp_path: Path) -> None:
    _, outcome = execute(shell("true", cwd=str(tmp_path / "nope")))
    assert outcome.status is Status.FAILED
    assert outcome.error and outcome.error.startswith("cannot start /bin/sh")


def test_stdin_is_empty() -> None:
    done, _ = execute(shell("cat; echo done"))
    assert done.log == "done\n"


@pytest.mark.skipif(IS_ROOT, reason="the refusal applies when jobd does not run as root")
def test_user_is_refused_when_not_root() -> None:
    _, outcome = execute(shell("id -u", user="nobody"))
    assert outcome.status is Status.FAILED
    assert outcome.error and "needs jobd to run as root" in outcome.error


def test_user_refusal_names_the_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same check, exercised on any machine by pretending not to be root.
    monkeypatch.setattr(runner.os, "geteuid", lambda: 1234)
    _, outcome = execute(shell("id -u", user="nobody"))
    assert outcome.status is Status.FAILED
    assert outcome.error == (
        "cannot start /bin/sh: user = 'nobody' needs jobd to run as root (it runs as uid 1234)"
    )


@pytest.mark.skipif(not IS_ROOT, reason="running as another user needs root")
def test_user_runs_the_job_as_that_user() -> None:
    nobody = pwd.getpwnam("nobody")
    spec = shell('id -u; id -g; echo "$HOME|$USER|$LOGNAME"', user="nobody", cwd="/")
    done, outcome = execute(spec, base_env={"PATH": os.defpath, "HOME": "/root", "USER": "root"})
    assert outcome.status is Status.SUCCEEDED, outcome
    assert done.log == (f"{nobody.pw_uid}\n{nobody.pw_gid}\n{nobody.pw_dir}|nobody|nobody\n")


@pytest.mark.skipif(not IS_ROOT, reason="running as another user needs root")
def test_unknown_user_fails_to_start() -> None:
    _, outcome = execute(shell("true", user="no-such-user-jobd"))
    assert outcome.status is Status.FAILED
    assert outcome.error == "cannot start /bin/sh: unknown user 'no-such-user-jobd'"


# -- call jobs -------------------------------------------------------------------------

MODULE = textwrap.dedent(
    """
    import os
    import sys


    def ok():
        print("hello from", os.getpid() != int(os.environ["PARENT_PID"]))


    def code():
        return 3


    def boom():
        raise RuntimeError("boom in user code")


    class Nested:
        @staticmethod
        def run():
            print("nested", file=sys.stderr)
    """
)


@pytest.fixture
def job_module(tmp_path: Path) -> Path:
    (tmp_path / "myjobs.py").write_text(MODULE)
    return tmp_path


def call(target: str, cwd: Path) -> JobSpec:
    spec = JobSpec(name="job", schedule=None, kind=JobKind.CALL, call=target, cwd=str(cwd))
    return spec


def call_env() -> dict[str, str]:
    return {**os.environ, "PARENT_PID": str(os.getpid())}


def test_call_runs_the_function_in_a_child(job_module: Path) -> None:
    done, outcome = execute(call("myjobs:ok", job_module), base_env=call_env())
    assert outcome == Outcome(Status.SUCCEEDED, 0)
    assert done.log == "hello from True\n"


def test_call_returning_an_int_is_the_exit_code(job_module: Path) -> None:
    _, outcome = execute(call("myjobs:code", job_module), base_env=call_env())
    assert outcome == Outcome(Status.FAILED, 3, None, "exit code 3")


def test_call_raising_fails_with_the_traceback_in_the_log(job_module: Path) -> None:
    done, outcome = execute(call("myjobs:boom", job_module), base_env=call_env())
    assert outcome.status is Status.FAILED and outcome.exit_code == 1
    assert done.log and "RuntimeError: boom in user code" in done.log
    assert re.search(r"Traceback", done.log)


def test_call_of_a_dotted_attribute(job_module: Path) -> None:
    done, outcome = execute(call("myjobs:Nested.run", job_module), base_env=call_env())
    assert outcome.status is Status.SUCCEEDED
    assert done.log == "nested\n"


def test_call_of_a_missing_module_fails(job_module: Path) -> None:
    done, outcome = execute(call("nosuchmodule:run", job_module), base_env=call_env())
    assert outcome.status is Status.FAILED
    assert done.log and "ModuleNotFoundError" in done.log


# -- the tail on its own ---------------------------------------------------------------


def test_tail_masks_a_secret_split_across_feeds_and_the_trim_point() -> None:
    secret = "SECRET-0123456789"
    tail = OutputTail(max_lines=100, max_bytes=16, secrets=(secret,))
    data = b"a" * 5000 + secret.encode() + b"zz"
    for i in range(0, len(data), 7):
        tail.feed(data[i : i + 7])
    assert tail.total == len(data)
    assert tail.text() == "***zz"


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(["filler", "\n", "x" * 50, "SECRET", "S3CR37-LONGER"])),
    max_bytes=st.integers(min_value=1, max_value=120),
    chunk=st.integers(min_value=1, max_value=40),
)
def test_tail_never_shows_any_part_of_a_secret(
    pieces: list[str], max_bytes: int, chunk: int
) -> None:
    # Secrets use capitals and digits, the rest of the output never does.
    tail = OutputTail(max_lines=5, max_bytes=max_bytes, secrets=("SECRET", "S3CR37-LONGER"))
    data = "".join(pieces).encode()
    for i in range(0, len(data), chunk):
        tail.feed(data[i : i + chunk])
    text = tail.text()
    assert not set(text) & set("SECRT3-LONGE7")
    assert len(text.encode()) <= max_bytes + 2  # a cut "***" may stand in for 1 byte
    assert text.count("\n") <= 5


# -- leftovers of a killed daemon --------------------------------------------------------


def _sleeper(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "300"], env={**os.environ, **env}, start_new_session=True)


def test_leftovers_of_another_jobd_on_the_host_are_left_alone() -> None:
    # Two stores on one host both have a run 4242 of a job named "stray".
    ours = _sleeper(JOBD_EXECUTION_ID="4242", JOBD_JOB="stray", JOBD_INSTANCE="host-1-aaaaaa")
    theirs = _sleeper(JOBD_EXECUTION_ID="4242", JOBD_JOB="stray", JOBD_INSTANCE="host-2-bbbbbb")
    try:
        assert kill_leftovers(4242, "stray", "host-1-aaaaaa") == 1
        assert ours.wait(timeout=5) == -signal.SIGKILL
        assert theirs.poll() is None
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


def test_leftovers_match_whole_variables_only() -> None:
    lookalike = _sleeper(
        JOBD_EXECUTION_ID="1", X_JOBD_EXECUTION_ID="4242", JOBD_JOB="stray", JOBD_INSTANCE="i"
    )
    try:
        assert kill_leftovers(4242, "stray", "i") == 0
        assert lookalike.poll() is None
    finally:
        lookalike.kill()
        lookalike.wait()


def test_a_job_knows_the_instance_that_runs_it() -> None:
    env = runner.build_env(shell("true"), a_run(instance="host-1-abcdef"), {})
    assert env["JOBD_INSTANCE"] == "host-1-abcdef"
    assert "JOBD_INSTANCE" not in runner.build_env(shell("true"), a_run(), {})


# -- the job's environment -----------------------------------------------------------

DAEMON_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "JOBD_STORE": "postgresql://jobd:pw@db/jobd",
    "JOBD_CONFIG": "/etc/jobd/jobd.toml",
    "JOBD_NIGHTLY_SCHEDULE": "0 3 * * *",
    "PGPASSWORD": "pw",
    "PGPASSFILE": "/etc/jobd/pgpass",
    "PGHOST": "db",
    "CREDENTIALS_DIRECTORY": "/run/credentials/jobd.service",
    "NOTIFY_SOCKET": "/run/systemd/notify",
    "API_KEY": "k-123",
}
RUN_VARIABLES = {
    "JOBD_JOB",
    "JOBD_EXECUTION_ID",
    "JOBD_ATTEMPT",
    "JOBD_TRIGGER",
    "JOBD_SCHEDULED_FOR",
}


def test_a_job_inherits_none_of_the_daemons_private_variables() -> None:
    spec = JobSpec(name="j", schedule=None, kind=JobKind.COMMAND, command=("true",))
    env = runner.build_env(spec, a_run(), DAEMON_ENV, DAEMON_ENV["JOBD_STORE"])
    assert set(env) == {"PATH", "LANG", "API_KEY", *RUN_VARIABLES}


def test_a_job_gets_the_private_variables_it_names() -> None:
    spec = JobSpec(
        name="j",
        schedule=None,
        kind=JobKind.COMMAND,
        command=("true",),
        env={"PGHOST": "reports", "JOBD_COLOUR": "blue"},
        secret_env=("PGPASSWORD",),
    )
    env = runner.build_env(spec, a_run(), DAEMON_ENV, DAEMON_ENV["JOBD_STORE"])
    assert env["PGHOST"] == "reports" and env["JOBD_COLOUR"] == "blue"
    assert env["PGPASSWORD"] == "pw"  # named in secret_env: from the daemon, masked
    assert "PGPASSFILE" not in env and "JOBD_STORE" not in env


@pytest.mark.parametrize("database", [None, "postgresql://app@db/app", "store"])
def test_only_an_sql_job_that_names_the_store_gets_it(database: str | None) -> None:
    spec = JobSpec(name="q", schedule=None, kind=JobKind.SQL, sql="SELECT 1", database=database)
    env = runner.build_env(spec, a_run(), DAEMON_ENV, DAEMON_ENV["JOBD_STORE"])
    if database == "store":
        assert env["JOBD_SQL_DATABASE"] == DAEMON_ENV["JOBD_STORE"]
        assert env["PGPASSWORD"] == "pw" and env["PGPASSFILE"] == "/etc/jobd/pgpass"
    else:
        assert env["JOBD_SQL_DATABASE"] == (database or "")
        assert not [k for k in env if k.startswith("PG")]
    assert "JOBD_STORE" not in env


def test_jobds_own_children_run_isolated() -> None:
    for spec in (
        JobSpec(name="q", schedule=None, kind=JobKind.SQL, sql="SELECT 1", database="store"),
        JobSpec(name="h", schedule=None, kind=JobKind.HTTP, http={"url": "http://x/"}),
        JobSpec(name="c", schedule=None, kind=JobKind.CALL, call="m:f"),
    ):
        assert runner.build_argv(spec)[:3] == [sys.executable, "-I", "-m"]


def test_call_finds_the_jobs_module_on_its_pythonpath(job_module: Path, tmp_path: Path) -> None:
    # -I ignores PYTHONPATH for jobd itself; the runner adds it back for the job's code.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = replace(call("myjobs:ok", elsewhere), env={"PYTHONPATH": str(job_module)})
    done, outcome = execute(spec, base_env=call_env())
    assert outcome == Outcome(Status.SUCCEEDED, 0), done.log
