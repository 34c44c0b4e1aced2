"""jobd.toml -> Config (SPEC section 2): errors that name file, job and key;
every key's value and default; environment overrides; where the file is found."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobd.core import model
from jobd.core.config.parse import (
    JOB_KEYS,
    SETTINGS_KEYS,
    config_from_data,
    parse_config,
    parse_job,
    schedule_env_names,
)
from jobd.core.cron import CronError, parse_schedule
from jobd.core.model import Catchup, Config, JobKind, JobSpec, LeaderMode, Overlap, Settings, Source
from jobd.errors import ConfigError, ExitCode
from jobd.system import paths

FILE = "/srv/app/jobd.toml"
BASE = 'schedule = "*/5 * * * *"\ncommand = ["true"]\n'


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(text, FILE, environ or {})


def job(body: str, name: str = "a") -> str:
    return f"[jobs.{name}]\n{body}\n"


# -- errors ----------------------------------------------------------------------
# (id, text, env, job, key, fragments of the message). Every error is one line
# that names the file, then the job and the key when there is one.

BAD: list[tuple[str, str, dict[str, str], str | None, str | None, tuple[str, ...]]] = [
    (
        "unknown job key",
        job('schedul = "* * * * *"\ncommand = ["true"]'),
        {},
        "a",
        "schedul",
        ("unknown key", "did you mean 'schedule'?"),
    ),
    (
        "unknown job key without a near miss",
        job(BASE + "frobnicate = 1"),
        {},
        "a",
        "frobnicate",
        ("unknown key",),
    ),
    (
        "unknown settings key",
        "[jobd]\nmax_concurent = 2\n",
        {},
        None,
        "jobd.max_concurent",
        ("did you mean 'max_concurrent'?",),
    ),
    (
        "unknown history key",
        '[jobd]\nhistory = { keep = 1, max_ag = "1d" }\n',
        {},
        None,
        "jobd.history.max_ag",
        ("did you mean 'max_age'?",),
    ),
    (
        "unknown top-level table",
        '[job.a]\ncommand = ["true"]\n',
        {},
        None,
        "job",
        ("did you mean",),
    ),
    ("bad cron", job('schedule = "61 * * * *"\ncommand = ["true"]'), {}, "a", "schedule", ("61",)),
    ("cron with 4 fields", job('schedule = "* * * *"\ncommand = ["x"]'), {}, "a", "schedule", ()),
    ("@reboot", job('schedule = "@reboot"\ncommand = ["x"]'), {}, "a", "schedule", ("@reboot",)),
    ("bad duration", job(BASE + 'timeout = "5 minutes"'), {}, "a", "timeout", ("5 minutes",)),
    ("negative duration", job(BASE + 'retry_delay = "-1s"'), {}, "a", "retry_delay", ()),
    ("zero timeout", job(BASE + 'timeout = "0s"'), {}, "a", "timeout", ("greater than zero",)),
    ("negative number duration", job(BASE + "jitter = -3"), {}, "a", "jitter", ("non-negative",)),
    ("nan duration", job(BASE + "jitter = nan"), {}, "a", "jitter", ("finite",)),
    ("inf duration", job(BASE + "catchup_window = inf"), {}, "a", "catchup_window", ("finite",)),
    (
        "bool duration",
        job(BASE + "catchup_window = true"),
        {},
        "a",
        "catchup_window",
        ("expected a duration", "a boolean"),
    ),
    (
        "bad history max_age",
        '[jobd]\nhistory = { max_age = "forever" }\n',
        {},
        None,
        "jobd.history.max_age",
        (),
    ),
    (
        "zero lease",
        '[jobd]\nlease_ttl = "0s"\n',
        {},
        None,
        "jobd.lease_ttl",
        ("greater than zero",),
    ),
    (
        "unknown job time zone",
        job(BASE + 'timezone = "Mars/Olympus_Mons"'),
        {},
        "a",
        "timezone",
        ("unknown time zone", "Mars/Olympus_Mons"),
    ),
    (
        "unknown default time zone",
        '[jobd]\ntimezone = "Europe/Berln"\n',
        {},
        None,
        "jobd.timezone",
        ("unknown time zone",),
    ),
    ("path as time zone", job(BASE + 'timezone = "../../etc/passwd"'), {}, "a", "timezone", ()),
    (
        "command and shell",
        job('command = ["true"]\nshell = "true"'),
        {},
        "a",
        "shell",
        ("exactly one of command, shell, call", "found command and shell"),
    ),
    (
        "shell and call",
        job('shell = "true"\ncall = "m:f"'),
        {},
        "a",
        "call",
        ("found shell and call",),
    ),
    (
        "no command, shell or call",
        job('schedule = "* * * * *"'),
        {},
        "a",
        None,
        ("exactly one of command, shell, call", "found none"),
    ),
    (
        "unknown chained job on success",
        job(BASE + 'on_success = ["recomendations"]') + job('command = ["x"]', "recommendations"),
        {},
        "a",
        "on_success",
        ("unknown job 'recomendations'", "did you mean 'recommendations'?"),
    ),
    (
        "unknown chained job on failure",
        job(BASE + 'on_failure = ["page"]'),
        {},
        "a",
        "on_failure",
        ("unknown job 'page'",),
    ),
    (
        "int for string",
        job(BASE + "description = 5"),
        {},
        "a",
        "description",
        ("expected a string, got an integer",),
    ),
    (
        "bool for int",
        job(BASE + "retries = true"),
        {},
        "a",
        "retries",
        ("expected an integer, got a boolean",),
    ),
    ("float for int", job(BASE + "retries = 1.5"), {}, "a", "retries", ("got a number",)),
    ("negative retries", job(BASE + "retries = -1"), {}, "a", "retries", ("at least 0",)),
    (
        "string for list",
        job('command = "echo hi"'),
        {},
        "a",
        "command",
        ("expected an array of strings, got a string",),
    ),
    ("list of mixed", job('command = ["echo", 1]'), {}, "a", "command", ("array of strings",)),
    ("empty command", job("command = []"), {}, "a", "command", ("must not be empty",)),
    ("blank shell", job('shell = "  "'), {}, "a", "shell", ("must not be empty",)),
    ("bad call target", job('call = "myapp.jobs"'), {}, "a", "call", ("module:function",)),
    (
        "call target with a newline",
        job('call = "myapp.jobs:run\\n"'),
        {},
        "a",
        "call",
        ("module:function",),
    ),
    (
        "string for chain list",
        job(BASE + 'on_success = "b"') + job('command = ["x"]', "b"),
        {},
        "a",
        "on_success",
        ("array of strings",),
    ),
    ("string for bool", job(BASE + 'enabled = "yes"'), {}, "a", "enabled", ("true or false",)),
    (
        "env value not a string",
        job(BASE + "env = { A = 1 }"),
        {},
        "a",
        "env",
        ("table of strings",),
    ),
    ("env as string", job(BASE + 'env = "A=1"'), {}, "a", "env", ("table of strings",)),
    (
        "bad env name",
        job(BASE + 'env = { "1BAD" = "x" }'),
        {},
        "a",
        "env",
        ("invalid variable name",),
    ),
    (
        "env name with a newline",
        job(BASE + 'env = { "A\\n" = "x" }'),
        {},
        "a",
        "env",
        ("invalid variable name",),
    ),
    ("secret_env as string", job(BASE + 'secret_env = "X"'), {}, "a", "secret_env", ()),
    ("bad overlap", job(BASE + 'overlap = "never"'), {}, "a", "overlap", ("skip | queue",)),
    ("int catchup", job(BASE + "catchup = 1"), {}, "a", "catchup", ("expected a string",)),
    ("bad leader", '[jobd]\nleader = "raft"\n', {}, None, "jobd.leader", ("auto | file | table",)),
    (
        "string for max_concurrent",
        '[jobd]\nmax_concurrent = "4"\n',
        {},
        None,
        "jobd.max_concurrent",
        ("expected an integer, got a string",),
    ),
    (
        "zero max_concurrent",
        "[jobd]\nmax_concurrent = 0\n",
        {},
        None,
        "jobd.max_concurrent",
        ("at least 1",),
    ),
    ("jobd not a table", "jobd = 5\n", {}, None, "jobd", ("expected a table",)),
    ("jobs not a table", 'jobs = ["a"]\n', {}, None, "jobs", ("expected a table",)),
    ("history not a table", '[jobd]\nhistory = "1d"\n', {}, None, "jobd.history", ("table",)),
    ("job not a table", "jobs = { a = 5 }\n", {}, "a", None, ("expected a table",)),
    ("TOML syntax error", "[jobs.a\n", {}, None, None, ("TOML syntax error", "line 1")),
    ("duplicate table", job(BASE) + job(BASE), {}, None, None, ("TOML syntax error",)),
    (
        "TOML nested too deeply",
        "a = " + "[" * 5000,
        {},
        None,
        None,
        ("TOML",),
    ),
    (
        "bad store scheme",
        '[jobd]\nstore = "mysql://db/jobd"\n',
        {},
        None,
        "jobd.store",
        ("sqlite:///", "postgresql://"),
    ),
    (
        "store with two slashes",
        '[jobd]\nstore = "sqlite://jobd.db"\n',
        {},
        None,
        "jobd.store",
        (),
    ),
    ("store without a path", '[jobd]\nstore = "sqlite:///"\n', {}, None, "jobd.store", ()),
    ("store not a string", "[jobd]\nstore = 5\n", {}, None, "jobd.store", ("expected a string",)),
    ("bad job name", job(BASE, '"bad name!"'), {}, "bad name!", None, ("invalid job name",)),
    ("job name with a dash first", job(BASE, '"-a"'), {}, "-a", None, ("invalid job name",)),
    ("job name too long", job(BASE, "a" * 129), {}, "a" * 129, None, ("at most 128",)),
    ("job name with a newline", job(BASE, '"a\\n"'), {}, "a\n", None, ("invalid job name",)),
    (
        "bad schedule override",
        job(BASE),
        {"JOBD_A_SCHEDULE": "every day"},
        "a",
        "JOBD_A_SCHEDULE",
        ("environment",),
    ),
    (
        "bad plain schedule override",
        job(BASE),
        {"A_SCHEDULE": "@reboot"},
        "a",
        "A_SCHEDULE",
        ("environment",),
    ),
    (
        "bad store override",
        "",
        {"JOBD_STORE": "mysql://db/jobd"},
        None,
        "JOBD_STORE",
        ("environment",),
    ),
]


@pytest.mark.parametrize(
    ("text", "environ", "job_name", "key", "fragments"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_config(
    text: str,
    environ: dict[str, str],
    job_name: str | None,
    key: str | None,
    fragments: tuple[str, ...],
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    error = info.value
    message = str(error)
    assert error.job == job_name
    assert error.key == key
    assert "\n" not in message
    if job_name is not None and "\n" not in job_name:
        assert f"job '{job_name}'" in message
    if key is not None:
        assert f"key '{key}'" in message
    if "JOBD_STORE" not in environ and not any(k.endswith("_SCHEDULE") for k in environ):
        assert message.startswith(FILE + ": ")
    for fragment in fragments:
        assert fragment in message
    assert error.exit_code == ExitCode.USAGE


def test_error_names_file_job_and_key_in_that_order() -> None:
    with pytest.raises(ConfigError) as info:
        parse(job(BASE + 'timeout = "soon"', "backup"))
    assert str(info.value).startswith(f"{FILE}: job 'backup': key 'timeout': ")


def test_first_error_wins_and_is_stable() -> None:
    text = job('schedul = "x"\ncommand = 5', "a")
    messages = set()
    for _ in range(3):
        with pytest.raises(ConfigError) as info:
            parse(text)
        messages.add(str(info.value))
    assert messages == {f"{FILE}: job 'a': key 'schedul': unknown key (did you mean 'schedule'?)"}


def test_located_moves_an_error_to_another_file() -> None:
    error = ConfigError("bad", job="a", key="k", hint="did you mean 'x'?")
    assert str(error.located("/etc/jobd/jobd.toml")) == (
        "/etc/jobd/jobd.toml: job 'a': key 'k': bad (did you mean 'x'?)"
    )


# -- good configs ------------------------------------------------------------------

FULL = """
[jobd]
store = "postgresql://jobd:secret@db.internal/jobd"
timezone = "Europe/Berlin"
max_concurrent = 8
history = { keep = 50, max_age = "30d" }
log_lines = 200
log_bytes = 65536
leader = "table"
lease_ttl = "45s"
shutdown_grace = "1m"
kill_grace = "10s"
max_backoff = "5m"
max_clock_skew = "10s"

[jobs.drift_detection]
description = "Compare resources with baselines"
schedule = "0 */4 * * *"
command = ["infraudit-worker", "drift"]
timeout = "30m"
retries = 2
retry_delay = "30s"
jitter = "5s"
overlap = "queue"
catchup = "all"
catchup_window = "1d"
env = { REGION = "eu-west-1" }
secret_env = ["API_TOKEN"]
cwd = "/srv/app"
user = "infraudit"
on_success = ["recommendations"]
on_failure = ["page_oncall"]
enabled = false
timezone = "America/New_York"

[jobs.recommendations]
shell = "pg_dump app | gzip > /backups/app.gz"

[jobs.page_oncall]
call = "myapp.jobs:page"
schedule = "@every 10m"
timeout = 90
retry_delay = 1.5
"""


def test_every_key_is_parsed() -> None:
    config = parse(FULL)
    assert config.path == FILE
    assert config.settings == Settings(
        store="postgresql://jobd:secret@db.internal/jobd",
        timezone="Europe/Berlin",
        max_concurrent=8,
        history_keep=50,
        history_max_age=30 * 86400.0,
        log_lines=200,
        log_bytes=65536,
        leader=LeaderMode.TABLE,
        lease_ttl=45.0,
        shutdown_grace=60.0,
        kill_grace=10.0,
        max_backoff=300.0,
        max_clock_skew=10.0,
    )
    assert list(config.jobs) == ["drift_detection", "recommendations", "page_oncall"]
    assert config.jobs["drift_detection"] == JobSpec(
        name="drift_detection",
        schedule="0 */4 * * *",
        kind=JobKind.COMMAND,
        command=("infraudit-worker", "drift"),
        description="Compare resources with baselines",
        timezone="America/New_York",
        timeout=1800.0,
        retries=2,
        retry_delay=30.0,
        jitter=5.0,
        overlap=Overlap.QUEUE,
        catchup=Catchup.ALL,
        catchup_window=86400.0,
        env={"REGION": "eu-west-1"},
        secret_env=("API_TOKEN",),
        cwd="/srv/app",
        user="infraudit",
        on_success=("recommendations",),
        on_failure=("page_oncall",),
        enabled=False,
        source=Source.FILE,
    )
    shell = config.jobs["recommendations"]
    assert (shell.kind, shell.shell, shell.command, shell.call) == (
        JobKind.SHELL,
        "pg_dump app | gzip > /backups/app.gz",
        (),
        "",
    )
    assert shell.timezone == "Europe/Berlin"  # the [jobd] default
    call = config.jobs["page_oncall"]
    assert (call.kind, call.call, call.schedule) == (JobKind.CALL, "myapp.jobs:page", "@every 10m")
    assert (call.timeout, call.retry_delay) == (90.0, 1.5)  # numbers are seconds


def test_defaults() -> None:
    config = parse(job('command = ["true"]', "manual"))
    assert config.settings == Settings()
    assert config.settings.store is None
    assert config.settings.timezone == model.DEFAULT_TIMEZONE == "UTC"
    assert config.settings.max_concurrent == 4
    assert (config.settings.history_keep, config.settings.history_max_age) == (1000, 90 * 86400)
    assert config.settings.log_lines == 1000
    assert config.settings.leader is LeaderMode.AUTO
    assert config.settings.lease_ttl == 30.0
    assert config.jobs["manual"] == JobSpec(
        name="manual", schedule=None, kind=JobKind.COMMAND, command=("true",)
    )
    spec = config.jobs["manual"]
    assert spec.schedule is None
    assert (spec.timeout, spec.retries, spec.retry_delay, spec.jitter) == (None, 0, 30.0, 0.0)
    assert (spec.overlap, spec.catchup, spec.catchup_window) == (
        Overlap.SKIP,
        Catchup.LATEST,
        86400.0,
    )
    assert (spec.env, spec.secret_env, spec.cwd, spec.user) == ({}, (), None, None)
    assert (spec.on_success, spec.on_failure, spec.enabled) == ((), (), True)


def test_empty_config() -> None:
    assert parse("") == Config(settings=Settings(), jobs={}, path=FILE)


def test_every_documented_key_is_accepted() -> None:
    # SPEC section 2's keys; a key missing from the allowed list would be
    # refused as unknown.
    documented_job = {
        "description", "schedule", "command", "shell", "call", "timeout", "retries",
        "retry_delay", "jitter", "overlap", "catchup", "catchup_window", "env", "cwd",
        "user", "on_success", "on_failure", "enabled", "timezone",
    }  # fmt: skip
    documented_settings = {
        "store", "timezone", "max_concurrent", "history", "log_lines", "leader", "lease_ttl",
    }  # fmt: skip
    assert documented_job <= set(JOB_KEYS)
    assert documented_settings <= set(SETTINGS_KEYS)


def test_schedule_blanks_are_normalized() -> None:
    assert parse(job('schedule = "  0   2 * * * "\ncommand = ["x"]')).jobs["a"].schedule == (
        "0 2 * * *"
    )


@pytest.mark.parametrize("name", ["a", "A1", "nightly-backup", "db.vacuum", "x_y", "9lives"])
def test_good_job_names(name: str) -> None:
    assert name in parse(job(BASE, f'"{name}"')).jobs


def test_job_name_of_128_characters_is_accepted() -> None:
    assert "a" * 128 in parse(job(BASE, "a" * 128)).jobs


def test_parse_job_for_cli_jobs_records_the_source() -> None:
    raw = {"schedule": "@daily", "command": ["true"]}
    spec = parse_job("adhoc", raw, "(cli)", {}, "UTC", Source.CLI)
    assert spec.source is Source.CLI


def test_spec_json_round_trip() -> None:
    spec = parse(FULL).jobs["drift_detection"]
    assert JobSpec.from_json(spec.to_json()) == spec
    assert spec.config_hash == JobSpec.from_json(spec.to_json()).config_hash


def test_a_spec_stored_by_another_jobd_version_is_read_with_defaults() -> None:
    stored = json.loads(parse(FULL).jobs["drift_detection"].to_json())
    for newer in ("env", "jitter", "on_failure"):
        del stored[newer]  # an older jobd had no such keys
    stored["added_later"] = 1  # a newer one has one more
    first = JobSpec.from_json(json.dumps(stored))
    assert (first.env, first.jitter, first.on_failure) == ({}, 0.0, ())
    stored["name"] = "other"  # a fresh parse, so each gets its own default dict
    assert JobSpec.from_json(json.dumps(stored)).env is not first.env
    del stored["name"]
    with pytest.raises(TypeError, match="lacks 'name'"):
        JobSpec.from_json(json.dumps(stored))


# -- environment overrides ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "names"),
    [
        ("drift_detection", ("JOBD_DRIFT_DETECTION_SCHEDULE", "DRIFT_DETECTION_SCHEDULE")),
        ("nightly-backup.v2", ("JOBD_NIGHTLY_BACKUP_V2_SCHEDULE", "NIGHTLY_BACKUP_V2_SCHEDULE")),
        ("Cost9", ("JOBD_COST9_SCHEDULE", "COST9_SCHEDULE")),
    ],
)
def test_schedule_env_names(name: str, names: tuple[str, str]) -> None:
    assert schedule_env_names(name) == names


TWO_JOBS = job(BASE, "drift_detection") + job('command = ["x"]', '"nightly-backup.v2"')


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "*/5 * * * *"),
        ({"DRIFT_DETECTION_SCHEDULE": "0 */2 * * *"}, "0 */2 * * *"),
        ({"JOBD_DRIFT_DETECTION_SCHEDULE": "@hourly"}, "@hourly"),
        (
            {"JOBD_DRIFT_DETECTION_SCHEDULE": "@hourly", "DRIFT_DETECTION_SCHEDULE": "@daily"},
            "@hourly",
        ),
        ({"JOBD_DRIFT_DETECTION_SCHEDULE": "", "DRIFT_DETECTION_SCHEDULE": "@daily"}, "@daily"),
        ({"drift_detection_SCHEDULE": "@daily"}, "*/5 * * * *"),  # upper-case only
    ],
)
def test_schedule_override_order(environ: dict[str, str], expected: str) -> None:
    assert parse(TWO_JOBS, environ).jobs["drift_detection"].schedule == expected


def test_override_gives_a_manual_job_a_schedule() -> None:
    config = parse(TWO_JOBS, {"NIGHTLY_BACKUP_V2_SCHEDULE": "30 2 * * *"})
    assert config.jobs["nightly-backup.v2"].schedule == "30 2 * * *"
    assert config.jobs["drift_detection"].schedule == "*/5 * * * *"


def test_bad_override_beats_a_good_file_and_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        parse(TWO_JOBS, {"JOBD_DRIFT_DETECTION_SCHEDULE": "0 25 * * *"})
    message = str(info.value)
    assert "JOBD_DRIFT_DETECTION_SCHEDULE" in message and "drift_detection" in message
    assert FILE not in message  # the file is fine; the environment is not


def test_store_override() -> None:
    text = '[jobd]\nstore = "sqlite:////var/lib/jobd/jobd.db"\n'
    assert parse(text).settings.store == "sqlite:////var/lib/jobd/jobd.db"
    url = "postgresql://jobd@db/jobd"
    assert parse(text, {"JOBD_STORE": url}).settings.store == url
    assert parse("", {"JOBD_STORE": url}).settings.store == url


# -- where the file is found (paths.py) ---------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    layout = {name: tmp_path / name for name in ("cwd", "user", "etc", "data", "explicit")}
    for directory in layout.values():
        directory.mkdir()
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda app: str(layout["user"] / app))
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(layout["data"] / app))
    monkeypatch.setattr(paths, "SYSTEM_CONFIG", layout["etc"] / "jobd" / "jobd.toml")
    return layout


def write_config(path: Path, job_name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(job(BASE, job_name))
    path.chmod(0o644)
    return path


def test_candidates_in_order(dirs: dict[str, Path]) -> None:
    assert paths.config_candidates(None, {}, dirs["cwd"]) == [
        dirs["cwd"] / "jobd.toml",
        dirs["user"] / "jobd" / "jobd.toml",
        dirs["etc"] / "jobd" / "jobd.toml",
    ]
    assert paths.config_candidates("x.toml", {"JOBD_CONFIG": "y.toml"}, dirs["cwd"]) == [
        Path("x.toml")
    ]
    assert paths.config_candidates(None, {"JOBD_CONFIG": "y.toml"}, dirs["cwd"]) == [Path("y.toml")]


def test_lookup_first_match_wins(dirs: dict[str, Path]) -> None:
    def found(explicit: str | None = None, environ: dict[str, str] | None = None) -> str:
        config = paths.load_config(explicit, environ or {}, dirs["cwd"])
        return next(iter(config.jobs))

    write_config(dirs["etc"] / "jobd" / "jobd.toml", "from_etc")
    assert found() == "from_etc"
    write_config(dirs["user"] / "jobd" / "jobd.toml", "from_user")
    assert found() == "from_user"
    write_config(dirs["cwd"] / "jobd.toml", "from_cwd")
    assert found() == "from_cwd"
    env_file = write_config(dirs["explicit"] / "env.toml", "from_env")
    assert found(environ={"JOBD_CONFIG": str(env_file)}) == "from_env"
    flag_file = write_config(dirs["explicit"] / "flag.toml", "from_flag")
    assert found(str(flag_file), {"JOBD_CONFIG": str(env_file)}) == "from_flag"


def test_no_file_anywhere_is_an_empty_config(dirs: dict[str, Path]) -> None:
    config = paths.load_config(None, {}, dirs["cwd"])
    assert config.jobs == {} and config.settings == Settings()
    assert paths.locate_config(None, {}, dirs["cwd"]) is None


def test_a_directory_named_jobd_toml_is_skipped(dirs: dict[str, Path]) -> None:
    (dirs["cwd"] / "jobd.toml").mkdir()
    write_config(dirs["user"] / "jobd" / "jobd.toml", "from_user")
    assert list(paths.load_config(None, {}, dirs["cwd"]).jobs) == ["from_user"]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_named_file_must_exist(dirs: dict[str, Path], how: str) -> None:
    missing = str(dirs["explicit"] / "missing.toml")
    write_config(dirs["cwd"] / "jobd.toml", "from_cwd")  # never a silent fallback
    with pytest.raises(ConfigError) as info:
        if how == "flag":
            paths.load_config(missing, {}, dirs["cwd"])
        else:
            paths.load_config(None, {"JOBD_CONFIG": missing}, dirs["cwd"])
    assert str(info.value) == f"{missing}: config file not found"


def test_environment_reaches_the_parser(dirs: dict[str, Path]) -> None:
    write_config(dirs["cwd"] / "jobd.toml", "backup")
    environ = {"BACKUP_SCHEDULE": "@daily", "JOBD_STORE": "postgresql://db/jobd"}
    config = paths.load_config(None, environ, dirs["cwd"])
    assert config.jobs["backup"].schedule == "@daily"
    assert config.settings.store == "postgresql://db/jobd"
    assert config.path == str(dirs["cwd"] / "jobd.toml")


def test_unreadable_file(dirs: dict[str, Path]) -> None:
    path = dirs["cwd"] / "jobd.toml"
    path.write_bytes(b"[jobs.a]\ncommand = ['\xff']\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        paths.load_config(None, {}, dirs["cwd"])
    assert str(info.value).startswith(f"{path}: cannot read")


def test_syntax_error_names_the_found_file(dirs: dict[str, Path]) -> None:
    path = dirs["user"] / "jobd" / "jobd.toml"
    path.parent.mkdir()
    path.write_text("[jobs.a\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=f"^{path}: TOML syntax error"):
        paths.load_config(None, {}, dirs["cwd"])


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership check applies to root only")
def test_root_refuses_a_config_others_can_write(dirs: dict[str, Path]) -> None:
    path = write_config(dirs["cwd"] / "jobd.toml", "a")
    path.chmod(0o664)
    with pytest.raises(ConfigError, match="writable by group or others"):
        paths.load_config(None, {}, dirs["cwd"])
    path.chmod(0o644)
    os.chown(path, 12345, 12345)
    with pytest.raises(ConfigError, match="owned by a user other than root"):
        paths.load_config(None, {}, dirs["cwd"])


def test_default_store_is_in_the_user_data_dir(dirs: dict[str, Path]) -> None:
    url = paths.default_store_url()
    data = dirs["data"] / "jobd"
    assert url == f"sqlite:///{data / 'jobd.db'}"
    assert data.is_dir() and (data.stat().st_mode & 0o777) == 0o700
    config = parse("")
    assert paths.store_url(config) == url
    assert paths.store_url(config, "postgresql://db/x") == "postgresql://db/x"
    configured = parse('[jobd]\nstore = "sqlite:////srv/jobd.db"\n')
    assert paths.store_url(configured) == "sqlite:////srv/jobd.db"
    assert paths.store_url(configured, "postgresql://db/x") == "postgresql://db/x"


# -- robustness: nothing but ConfigError / CronError comes out ----------------------

KEYS = st.sampled_from([*JOB_KEYS, *SETTINGS_KEYS, "history", "keep", "max_age", "jobd", "jobs"])
# Values that have broken parsers before: huge ints, a newline, NaN, odd zones.
EDGES = st.sampled_from(
    [10**400, -(10**400), 2**63, -1, 0, float("nan"), float("-inf"), "a\n", "\n", "../x",
     "Europe/Berlin\n", "@every " + "9" * 400 + "d", "x" * 300, "* * * * * * *", "\x00"]
)  # fmt: skip
SCALARS = st.one_of(
    EDGES,
    st.sampled_from(
        ["* * * * *", "@daily", "@every 5m", "30s", "1h30m", "UTC", "Europe/Berlin", "skip",
         "latest", "auto", "a:b", "sqlite:////tmp/x.db", "postgresql://x", "", "a", "true"]
    ),
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.datetimes(),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(KEYS, st.text()), inner, max_size=3)
    ),
    max_leaves=8,
)
TABLE = st.dictionaries(st.one_of(KEYS, st.text(max_size=8)), VALUES, max_size=6)
# Mostly valid values per key, so that examples get past the first check and
# reach the deeper ones; any key may still get an arbitrary value.
GOOD_VALUES: dict[str, list[Any]] = {
    "schedule": ["* * * * *", "@daily", "0 30 2 * * *", "@every 10m"],
    "timezone": ["UTC", "Europe/Berlin"],
    "command": [["true"], ["echo", "hi"]],
    "shell": ["true"],
    "call": ["m:f", "a.b:c.d"],
    "retries": [0, 3],
    "overlap": ["skip", "allow"],
    "catchup": ["none", "all"],
    "leader": ["file"],
    "env": [{"A": "b"}],
    "secret_env": [["A"]],
    "on_success": [["a"], []],
    "on_failure": [["b"]],
    "enabled": [False],
    "store": ["sqlite:////tmp/x.db", "postgresql://x"],
    "max_concurrent": [1, 8],
    "log_lines": [0, 10],
    "log_bytes": [100],
    "history": [{"keep": 5, "max_age": "1d"}, {}],
}
DURATION_KEYS = {"timeout", "retry_delay", "jitter", "catchup_window", "lease_ttl",
                 "shutdown_grace", "kill_grace", "max_backoff", "max_clock_skew"}  # fmt: skip


def value_for(key: str) -> st.SearchStrategy[Any]:
    good = ["30s", 5, 1.5] if key in DURATION_KEYS else GOOD_VALUES.get(key, ["x"])
    return st.one_of(st.sampled_from(good), st.sampled_from(good), VALUES)


SETTINGS_TABLE = st.fixed_dictionaries({}, optional={k: value_for(k) for k in SETTINGS_KEYS})
JOB_TABLE = st.sampled_from(["command", "shell", "call"]).flatmap(
    lambda kind: st.fixed_dictionaries(
        {kind: value_for(kind)},
        optional={k: value_for(k) for k in JOB_KEYS if k not in ("command", "shell", "call")},
    )
)
NAMES = st.one_of(
    st.sampled_from(["a", "b", "nightly-backup", "x.y", "a\n", "-a", "x" * 129]),
    st.text(max_size=6),
)
DATA = st.fixed_dictionaries(
    {},
    optional={
        "jobd": st.one_of(SETTINGS_TABLE, SETTINGS_TABLE, TABLE, VALUES),
        "jobs": st.one_of(
            st.dictionaries(NAMES, st.one_of(JOB_TABLE, JOB_TABLE, TABLE, VALUES), max_size=3),
            VALUES,
        ),
    },
)
ENVIRON = st.dictionaries(
    st.sampled_from(["JOBD_A_SCHEDULE", "A_SCHEDULE", "JOBD_STORE", "B_SCHEDULE"]),
    st.one_of(st.sampled_from(["@hourly", "* * * * *", "sqlite:////x.db"]), st.text(max_size=8)),
    max_size=2,
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(DATA, ENVIRON)
def test_random_structures_give_config_or_config_error(
    data: dict[str, Any], environ: dict[str, str]
) -> None:
    try:
        config = config_from_data(data, FILE, environ)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    for spec in config.jobs.values():
        if spec.schedule is not None:
            parse_schedule(spec.schedule)


TOML_VALUES = ["true", "[]", '["x"]', "{}", "{ a = 1 }", "1979-05-27", "nan", "[[[",
               '"* * * * *"', '"@every 10m"', '"Europe/Berlin"', '"30s"']  # fmt: skip
TOML_LINES = st.one_of(
    st.sampled_from(["[jobd]", "[jobs.a]", "[jobs.b]", "[jobd.history]", "[[jobs]]", ""]),
    st.builds(
        lambda key, value: f"{key} = {value}",
        st.one_of(KEYS, st.text(alphabet="abcdefghij_.-\"' ", max_size=8)),
        st.one_of(
            st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "").replace('"', "") + '"'),
            st.integers().map(str),
            st.sampled_from(TOML_VALUES),
        ),
    ),
    st.text(max_size=20),
)


@FUZZ
@given(st.lists(TOML_LINES, max_size=8).map("\n".join), ENVIRON)
def test_random_toml_gives_config_or_config_error(text: str, environ: dict[str, str]) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, FILE, environ)


@FUZZ
@given(st.text(max_size=30))
def test_random_schedules_give_schedule_or_cron_error(expr: str) -> None:
    with contextlib.suppress(CronError):
        parse_schedule(expr)


def test_unknown_time_zone_suggests_the_closest_one() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[jobs.a]\ncommand = ["true"]\ntimezone = "Europe/Berln"\n')
    assert "did you mean 'Europe/Berlin'?" in str(info.value)
