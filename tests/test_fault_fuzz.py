"""Fault: bad input, generated. Every command line, config and value a user can type
must end in a documented error (one line, a documented exit code), never in a
traceback, and a config jobd accepts must never crash the daemon later.

tests/test_config.py fuzzes the config parser's structure and TOML,
tests/test_cron.py cron expressions, tests/test_durations.py the listed bad
durations; here: durations at random, accepted configs driven through the
planner and the retry policy, config files of random bytes, and random argument
lists for every command, run as `jobd` runs them (the fast path, then click)
against a real store.
"""

from __future__ import annotations

import contextlib
import os
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobd.core.config.parse import config_from_data, parse_config
from jobd.core.durations import DurationError, parse_duration
from jobd.core.model import NewRun, Outcome, Run, Status, Trigger
from jobd.core.planner import first_fire_after, plan_job
from jobd.core.policies import follow_ups, jitter_offset, overlap_decision, retry_delay
from jobd.errors import ConfigError
from jobd.system.paths import load_config
from tests.conftest import finish_run, open_store
from tests.faults import jobd_main, write_config
from tests.reliability import Recorder, sized
from tests.test_config import DATA, ENVIRON

pytestmark = [pytest.mark.fault]

EXIT_CODES = {0, 1, 2, 69, 75, 124, 130}  # README "Exit codes"
FUZZ = settings(
    max_examples=sized(150, 1500),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def tally(reliability: Recorder, what: str) -> None:
    """Count one generated case on this test's scoreboard row (the fixture outlives
    the examples, so the row holds them all)."""
    if not reliability.observations:
        reliability.observe(
            "bad-input",
            "sqlite",
            runs=0,
            detail=f"random {what}: only documented errors and exit codes, no traceback",
        )
    observation = reliability.observations[0]
    observation.runs = (observation.runs or 0) + 1


# -- durations ---------------------------------------------------------------------

DURATION_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="0123456789.smhdw ", max_size=30),
    st.builds(lambda n, u: f"{n}{u}", st.integers(min_value=0), st.sampled_from(list("smhdw"))),
)


@FUZZ
@given(DURATION_TEXT)
def test_random_durations_give_seconds_or_duration_error(reliability: Recorder, text: str) -> None:
    tally(reliability, "durations")
    try:
        seconds = parse_duration(text)
    except DurationError as exc:
        assert "\n" not in str(exc)
        return
    assert 0 <= seconds < float("inf")
    # Whatever is accepted can be added to a date: jobd does that with every duration.
    now = datetime.now(UTC)
    assert now - timedelta(seconds=seconds) <= now + timedelta(seconds=seconds)


# -- accepted configs never fail later ---------------------------------------------

HUGE = st.sampled_from(["9" * 25 + "d", "99999999w", 10**30, 1e300, "1e9d", 2**63])
EXTREME_JOB = st.fixed_dictionaries(
    {"command": st.just(["true"]), "schedule": st.sampled_from(["* * * * *", "*/7 * * * * *"])},
    optional={
        "retry_delay": HUGE,
        "catchup_window": HUGE,
        "jitter": HUGE,
        "timeout": HUGE,
        "retries": st.sampled_from([0, 1, 10**6, 2**63, 10**30]),
        "catchup": st.sampled_from(["none", "latest", "all"]),
    },
)
EXTREME = st.fixed_dictionaries(
    {"jobs": st.fixed_dictionaries({"a": EXTREME_JOB})},
    optional={
        "jobd": st.fixed_dictionaries(
            {},
            optional={k: HUGE for k in ("lease_ttl", "shutdown_grace", "kill_grace", "max_backoff")}
            | {"log_lines": st.sampled_from([10**30, 2**63]), "history": st.just({"keep": 10**30})},
        )
    },
)


def job(**keys: Any) -> dict[str, Any]:
    return {"jobs": {"a": {"command": ["true"], "schedule": "* * * * *", **keys}}}


@FUZZ
@given(st.one_of(DATA, EXTREME), ENVIRON, st.integers(0, 10**6), st.integers(0, 3000))
# Configs that were accepted and then stopped the daemon with an OverflowError.
@example(job(retries=3, retry_delay="9999999999999999999999999d"), {}, 60, 1)
@example(job(catchup="all", catchup_window="9999999999999999999999999d"), {}, 7200, 0)
@example(job(jitter="99999999w"), {}, 60, 0)
@example(job(retries=2**31 - 1, retry_delay="1s"), {}, 60, 3000)
def test_an_accepted_config_can_be_planned_and_retried(
    reliability: Recorder, data: dict[str, Any], environ: dict[str, str], down: int, attempt: int
) -> None:
    """The daemon plans, jitters and retries every job of an accepted config; none
    of it may raise (an OverflowError there would stop the daemon)."""
    tally(reliability, "configs, planned and retried")
    try:
        config = config_from_data(data, "jobd.toml", environ)
    except ConfigError:
        return
    now = datetime(2026, 3, 29, 0, 59, 30, tzinfo=UTC)
    for spec in config.jobs.values():
        assert type(spec).from_json(spec.to_json()) == spec
        next_fire = first_fire_after(spec, now - timedelta(seconds=down))
        if next_fire is not None:
            plan = plan_job(spec, next_fire, now, now - timedelta(seconds=down // 2))
            for fire in plan.fires:
                fire.slot + timedelta(seconds=jitter_offset(spec, fire.slot))
                overlap_decision(spec, True)
        run = Run(1, spec.name, Trigger.SCHEDULE, Status.RUNNING, now, now, attempt=attempt + 1)
        for status in (Status.FAILED, Status.TIMED_OUT, Status.SUCCEEDED, Status.ABANDONED):
            for follow in follow_ups(spec, run, Outcome(status), now, 0.999):
                assert follow.not_before >= now
        retry_delay(spec, attempt + 1, 0.5)
    s = config.settings
    for seconds in (s.lease_ttl, s.shutdown_grace, s.kill_grace, s.max_backoff, s.history_max_age):
        now + timedelta(seconds=seconds)


@FUZZ
@given(st.binary(max_size=300))
def test_a_config_file_of_random_bytes_is_a_config_error(
    tmp_path: Path, reliability: Recorder, data: bytes
) -> None:
    tally(reliability, "config files")
    path = tmp_path / "jobd.toml"
    path.write_bytes(data)
    path.chmod(0o644)
    with contextlib.suppress(ConfigError):
        load_config(str(path), environ={})


# -- command lines -------------------------------------------------------------------


def _commands() -> dict[str, list[str]]:
    """Every command and its option names, read from the click application."""
    from jobd.cli.app import all_commands

    found = {}
    for name, command in all_commands().items():
        found[name] = sorted({o for p in command.params for o in getattr(p, "opts", [])})
    return found


COMMANDS = _commands()
VALUES = st.one_of(
    st.sampled_from(
        ["backup", "report", "nope", "1", "2", "0", "-1", "99999999999999999999999", "--",
         "1d", "30s", "-5m", "9" * 30 + "d", "2026-03-29T02:30:00", "9999-12-31T23:59:59Z",
         "0001-01-01T00:00:00Z", "2026-13-45", "Z", "* * * * *", "@daily", "@every 0s",
         "61 * * * *", "queued", "FAILED", "done", "Europe/Berlin", "Mars/Base", "true", "-n",
         "-h", "", " ", "sqlite:///nowhere/x.db", "mysql://x", "postgresql://127.0.0.1:1/x",
         "é", "\t", "9223372036854775807", "9223372036854775808", "10000", "10001"]
    ),
    st.text(alphabet=string.printable.replace("\x0b", "").replace("\x0c", ""), max_size=8),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)  # fmt: skip
ANY_OPTION = st.sampled_from(sorted({o for opts in COMMANDS.values() for o in opts}))
# Mostly one command with its own options and values, as people type them; now and
# then words in any order, command names included.
ARGVS = st.one_of(
    st.sampled_from(sorted(COMMANDS)).flatmap(
        lambda name: st.lists(
            st.one_of(st.sampled_from(COMMANDS[name] or ["--json"]), VALUES, VALUES),
            max_size=5,
        ).map(lambda words: [name, *words])
    ),
    st.lists(st.one_of(st.sampled_from(sorted(COMMANDS)), ANY_OPTION, VALUES), max_size=6),
)


class _NoServer:
    """The HTTP server of `jobd serve`, stubbed like the daemon: it returns at once."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def serve_forever(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def fuzz_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A store with two jobs and finished runs, a config, and the daemon stubbed out:
    a random command line must not start one, detach, or run a job."""
    config = write_config(
        tmp_path / "jobd.toml",
        '[jobs.backup]\nschedule = "30 2 * * *"\ncommand = ["true"]\n'
        '[jobs.report]\ncommand = ["true"]\nenv = { TOKEN = "s3cret-value" }\n',
    )
    url = f"sqlite:///{tmp_path / 'jobd.db'}"
    store = open_store(url)
    store.apply_config(parse_config(config.read_text()), store.now())
    for job in ("backup", "report"):
        run_id = store.enqueue(NewRun(job, Trigger.MANUAL, store.now()))
        store.claim_run(run_id, "old", "h")
        finish_run(store, run_id, "old", Outcome(Status.FAILED, 1, error="exit code 1"))
    store.close()
    cwd = Path.cwd()
    os.chdir(tmp_path)  # a relative path in a random argument lands here
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("jobd.daemon.loop.serve", lambda *a, **k: 0)
        mp.setattr("jobd.api.server.ApiServer", _NoServer)  # `jobd serve` binds nothing
        mp.setattr("jobd.system.detach.detach", lambda *a, **k: None)
        mp.setattr("jobd.runs.local.run_local", lambda *a, **k: Outcome(Status.SUCCEEDED, 0))
        mp.setattr("jobd.system.log.setup_logging", lambda *a, **k: None)
        try:
            yield {
                "JOBD_CONFIG": str(config),
                "JOBD_STORE": url,
                "XDG_DATA_HOME": str(tmp_path / "data"),
                "XDG_CONFIG_HOME": str(tmp_path / "config"),
                "NO_COLOR": "1",
            }
        finally:
            os.chdir(cwd)


@FUZZ
@given(argv=ARGVS)
def test_random_command_lines_end_in_documented_errors(
    fuzz_env: dict[str, str], reliability: Recorder, argv: list[str]
) -> None:
    tally(reliability, "command lines")
    code, out, err, error = jobd_main(argv, fuzz_env)
    assert error is None, f"jobd {argv}: uncaught {type(error).__name__}: {error}"
    assert code in EXIT_CODES, (argv, code, err)
    assert "Traceback" not in out + err, (argv, err)
    assert "s3cret-value" not in out + err
    if code == 2 and "Usage:" not in err:  # a usage error is one line (help is not)
        assert err.count("\n") == 1, (argv, err)


# Command lines that ended in a traceback before they were found here.
FOUND = [
    ["show", "99999999999999999999999"],
    ["logs", "99999999999999999999999"],
    ["cancel", "99999999999999999999999"],
    ["audit", "--limit", "99999999999999999999999"],
    ["executions", "--limit", "99999999999999999999999"],
    ["executions", "--since", "99999999999999999999d"],
    ["executions", "--since", "9999-12-31T23:59:59-12:00"],
    ["prune", "--older-than", "9999999999999d"],
    ["next", "backup", "--after", "9999-12-31T23:59:59Z"],
]


@pytest.mark.parametrize("argv", FOUND, ids=" ".join)
def test_command_lines_that_once_failed_are_usage_errors(
    fuzz_env: dict[str, str], argv: list[str]
) -> None:
    code, out, err, error = jobd_main(argv, fuzz_env)
    assert error is None and code == 2, (code, err, error)
    assert err.count("\n") == 1 and not out
