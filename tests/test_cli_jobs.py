"""`jobd validate`, `jobd list` and `jobd next` as real subprocesses: exit codes,
JSON, and plain text on a pipe (SPEC section 5)."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobd.core.model import NewRun, Trigger
from tests.conftest import jobd_cmd, open_store, run_jobd, wait_for
from tests.terminal import Terminal

CONFIG = """
[jobd]
timezone = "Europe/Berlin"

[jobs.nightly]
description = "Back up the database"
schedule = "30 2 * * *"
command = ["true"]

[jobs.halfhourly]
schedule = "*/30 * * * *"
shell = "true"
timezone = "UTC"

[jobs.notify]
command = ["echo", "a job failed"]

[jobs.off]
schedule = "@hourly"
command = ["true"]
enabled = false
"""
RFC3339_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # As root, jobd refuses a config writable by group or others, as cron does:
    # do not depend on the umask the tests run with.
    path.chmod(0o644)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, Any]:
    """A working directory with a jobd.toml, and user dirs that are ours alone."""
    work = tmp_path / "work"
    work.mkdir()
    write(work / "jobd.toml", CONFIG)
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "HOME": str(tmp_path),
        "JOBD_STORE": "",
        "NO_COLOR": "",
        "TERM": "xterm-256color",  # a colour terminal, were stdout one: it is a pipe here
    }
    return {"cwd": work, "env": env, "store": f"sqlite:///{tmp_path / 'jobd.db'}"}


def jobd(home: dict[str, Any], *args: str, **env: str) -> subprocess.CompletedProcess:
    result = run_jobd(*args, env={**home["env"], **env}, cwd=home["cwd"])
    assert "\x1b[" not in result.stdout + result.stderr, "colour codes on a pipe"
    assert "Traceback" not in result.stderr
    return result


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobd: ")
    return lines[0]


def instant(text: str) -> datetime:
    return datetime.strptime(text, RFC3339_Z).replace(tzinfo=UTC)


# -- validate ----------------------------------------------------------------------


def test_validate_prints_the_jobs(home: dict[str, Any]) -> None:
    result = jobd(home, "validate")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["JOB", "KIND", "SCHEDULE", "TZ", "NEXT", "FIRE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == ["nightly", "halfhourly", "notify", "off"]
    assert "(manual)" in rows["notify"] and "Europe/Berlin" in rows["nightly"]
    assert result.stderr == f"{home['cwd'] / 'jobd.toml'}: ok, 4 jobs\n"
    assert not Path(home["env"]["XDG_DATA_HOME"]).exists()  # no store needed


def test_validate_json(home: dict[str, Any]) -> None:
    result = jobd(home, "validate", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["config"] == str(home["cwd"] / "jobd.toml")
    jobs = {job["name"]: job for job in data["jobs"]}
    assert list(jobs) == ["nightly", "halfhourly", "notify", "off"]
    assert set(jobs["nightly"]) == {"name", "kind", "schedule", "timezone", "next_fire", "enabled"}
    assert (jobs["nightly"]["kind"], jobs["nightly"]["timezone"]) == ("command", "Europe/Berlin")
    assert (jobs["halfhourly"]["kind"], jobs["halfhourly"]["timezone"]) == ("shell", "UTC")
    assert jobs["notify"]["schedule"] is None and jobs["notify"]["next_fire"] is None
    assert jobs["off"]["enabled"] is False and jobs["off"]["next_fire"] is None
    nightly = instant(jobs["nightly"]["next_fire"]).astimezone(ZoneInfo("Europe/Berlin"))
    # 02:30 local, or 03:00 on the one night a year 02:30 does not exist.
    assert (nightly.hour, nightly.minute) in {(2, 30), (3, 0)}
    assert instant(jobs["halfhourly"]["next_fire"]).minute in {0, 30}


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            '[jobs.a]\nschedule = "0 25 * * *"\ncommand = ["true"]\n',
            ["job 'a'", "key 'schedule'"],
        ),
        (
            '[jobs.a]\nschedul = "* * * * *"\ncommand = ["true"]\n',
            ["key 'schedul'", "did you mean 'schedule'?"],
        ),
        ("[jobs.a\n", ["TOML syntax error"]),
    ],
    ids=["bad cron", "unknown key", "syntax"],
)
def test_validate_bad_config_is_one_line_exit_2(
    home: dict[str, Any], text: str, fragments: list[str]
) -> None:
    bad = home["cwd"] / "bad.toml"
    write(bad, text)
    result = jobd(home, "validate", "--config", str(bad))
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith(f"jobd: {bad}: ")
    for fragment in fragments:
        assert fragment in line
    assert result.stdout == ""


def test_config_is_found_through_the_environment(home: dict[str, Any]) -> None:
    other = home["cwd"].parent / "other.toml"
    write(other, '[jobs.elsewhere]\ncommand = ["true"]\n')
    result = jobd(home, "validate", "--json", JOBD_CONFIG=str(other))
    assert [job["name"] for job in json.loads(result.stdout)["jobs"]] == ["elsewhere"]
    missing = jobd(home, "validate", "--config", str(home["cwd"] / "nope.toml"))
    assert missing.returncode == 2
    assert error_line(missing) == f"jobd: {home['cwd'] / 'nope.toml'}: config file not found"


def test_schedule_override_from_the_environment(home: dict[str, Any]) -> None:
    result = jobd(home, "validate", "--json", NIGHTLY_SCHEDULE="@hourly")
    jobs = {job["name"]: job for job in json.loads(result.stdout)["jobs"]}
    assert jobs["nightly"]["schedule"] == "@hourly"
    bad = jobd(home, "validate", JOBD_NIGHTLY_SCHEDULE="every night")
    assert bad.returncode == 2
    assert "JOBD_NIGHTLY_SCHEDULE" in error_line(bad)


# -- list --------------------------------------------------------------------------


def test_list_after_run_once(home: dict[str, Any]) -> None:
    # Reading never creates a store: an empty one here could be where a daemon's vanished.
    # Before any store, list shows the file's jobs and says there is none yet.
    missing = jobd(home, "list", "--store", home["store"])
    assert missing.returncode == 0 and "jobd: no store at " in missing.stderr
    before = jobd(home, "list", "--json", "--store", home["store"])
    assert before.returncode == 0, before.stderr
    assert {job["applied"] for job in json.loads(before.stdout)} == {"not applied"}
    assert not Path(home["store"].removeprefix("sqlite:///")).exists()

    applied = jobd(home, "run", "--once", "--store", home["store"])
    assert applied.returncode == 0, applied.stderr
    assert "4 jobs (4 added, 0 updated, 0 removed)" in applied.stderr

    # A queued run, so that LAST shows something.
    store = open_store(home["store"])
    store.enqueue(NewRun(job="notify", trigger=Trigger.MANUAL, not_before=store.now()))
    store.close()

    result = jobd(home, "list", "--json", "--store", home["store"])
    assert result.returncode == 0, result.stderr
    jobs = {job["name"]: job for job in json.loads(result.stdout)}
    assert list(jobs) == ["halfhourly", "nightly", "notify", "off"]
    assert set(jobs["nightly"]) == {
        "name", "schedule", "timezone", "next_fire", "left_s", "last_run_at", "last_status",
        "paused", "enabled", "source", "applied", "description", "group",
    }  # fmt: skip
    nightly = jobs["nightly"]
    assert (nightly["schedule"], nightly["timezone"]) == ("30 2 * * *", "Europe/Berlin")
    assert (nightly["paused"], nightly["enabled"], nightly["source"]) == (False, True, "file")
    assert nightly["description"] == "Back up the database"
    assert instant(nightly["next_fire"]) > datetime.now(UTC)
    assert (jobs["notify"]["last_status"], jobs["nightly"]["last_status"]) == ("queued", None)
    assert jobs["notify"]["next_fire"] is None and jobs["off"]["next_fire"] is None
    # LEFT and LAST, as systemctl list-timers has them.
    left = (instant(nightly["next_fire"]) - datetime.now(UTC)).total_seconds()
    assert abs(nightly["left_s"] - left) < 60 and jobs["notify"]["left_s"] is None
    assert nightly["last_run_at"] is None
    queued_at = datetime.now(UTC) - instant(jobs["notify"]["last_run_at"])
    assert 0 <= queued_at.total_seconds() < 60  # not started yet: when it was queued

    text = jobd(home, "list", "--store", home["store"])
    lines = text.stdout.splitlines()
    headers = ["JOB", "SCHEDULE", "TZ", "NEXT", "FIRE", "LEFT", "LAST", "PASSED", "STATUS"]
    assert lines[0].split() == [*headers, "PAUSED", "SOURCE"]
    assert [line.split()[0] for line in lines[1:]] == ["halfhourly", "nightly", "notify", "off"]
    assert "queued" in lines[3] and lines[3].split()[-2:] == ["no", "file"]
    assert re.search(r" (ago|now) +queued", lines[3])  # PASSED, then STATUS
    # nightly: LEFT (under an hour or a minute away at some hours), no run
    assert re.search(r"Z +(\d+h\d\dm|\d+m\d\ds|[\d.]+s) +- +- +-", lines[2])


def test_list_at_a_narrow_terminal_gives_times_relative_to_now_on_one_line(
    home: dict[str, Any],
) -> None:
    """At an 80-column terminal (tmux; COLUMNS says 200, stale), each job is one
    line: NEXT FIRE and LAST relative to now, no absolute times, nothing wrapped."""
    assert jobd(home, "run", "--once", "--store", home["store"]).returncode == 0
    store = open_store(home["store"])
    store.enqueue(NewRun(job="notify", trigger=Trigger.MANUAL, not_before=store.now()))
    store.close()
    config = str(Path(home["cwd"]) / "jobd.toml")
    terminal = Terminal(jobd_cmd("--config", config, "--store", home["store"], "list"), 80, 20)
    try:
        shown = wait_for(lambda: terminal.exit_status() is not None and terminal.screen())
        assert terminal.exit_status() == 0, shown
        lines = [line for line in shown.splitlines() if line.strip()]
        assert lines[0].split() == [
            "JOB", "SCHEDULE", "TZ", "NEXT", "FIRE", "LAST", "STATUS", "PAUSED", "SOURCE"
        ]  # fmt: skip
        rows = {line.split()[0]: line for line in lines[1:5]}
        assert list(rows) == ["halfhourly", "nightly", "notify", "off"], shown
        # How far away a fire is, in the largest two units: the test may run at any hour.
        left = r"in (\d+d\d\dh|\d+h\d\dm|\d+m\d\ds|[\d.]+s)"
        assert re.search(rf"30 2 \* \* \* +\S+ +{left} +- +- +no +file", rows["nightly"])
        assert re.search(r"\(manual\) +\S+ +- +(\S+ ago|now) +queued", rows["notify"])
        assert "(paused)" not in rows["off"] and re.search(left, rows["halfhourly"])
        assert lines[5].startswith("EXITED=0"), shown  # no row wrapped onto a line of its own
        assert not re.search(r"\d{4}-\d\d-\d\d", shown)  # no absolute time
    finally:
        print(terminal.screen())  # shown by pytest when the test failed
        terminal.close()


def test_run_once_and_list_never_show_the_store_password(
    home: dict[str, Any], postgres_url: str
) -> None:
    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret@", 1)
    assert url != postgres_url
    applied = jobd(home, "run", "--once", "--store", url)
    assert applied.returncode == 0, applied.stderr
    assert "s3cret" not in applied.stderr and "postgres:***@" in applied.stderr
    listed = jobd(home, "list", "--json", "--store", url)
    assert [job["name"] for job in json.loads(listed.stdout)] == [
        "halfhourly", "nightly", "notify", "off",
    ]  # fmt: skip
    unreachable = jobd(home, "list", "--store", "postgresql://jobd:s3cret@127.0.0.1:1/jobd")
    assert unreachable.returncode == 69
    assert "s3cret" not in error_line(unreachable)


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["next", "not_in_config"]])
def test_store_in_a_missing_directory_is_exit_69(home: dict[str, Any], command: list[str]) -> None:
    missing = home["cwd"] / "no" / "such" / "jobd.db"
    result = jobd(home, *command, "--store", f"sqlite:///{missing}")
    assert result.returncode == 69
    assert "does not exist" in error_line(result)
    assert result.stdout == ""


def test_store_from_the_environment(home: dict[str, Any]) -> None:
    jobd(home, "run", "--once", JOBD_STORE=home["store"])
    result = jobd(home, "list", "--json", JOBD_STORE=home["store"])
    assert len(json.loads(result.stdout)) == 4
    assert not Path(home["env"]["XDG_DATA_HOME"]).exists()  # the default was not used


# -- next --------------------------------------------------------------------------


def test_next_across_the_fall_back_fold(home: dict[str, Any]) -> None:
    after = ("--after", "2026-10-24T23:00:00Z", "--json")
    result = jobd(home, "next", "nightly", "-n", "3", *after, "--store", home["store"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "job": "nightly",
        "timezone": "Europe/Berlin",
        "fires": [
            "2026-10-25T00:30:00.000Z",
            "2026-10-26T01:30:00.000Z",
            "2026-10-27T01:30:00.000Z",
        ],
        "local": [
            "2026-10-25T02:30:00.000+02:00",
            "2026-10-26T02:30:00.000+01:00",
            "2026-10-27T02:30:00.000+01:00",
        ],
    }


def test_next_wildcard_job_fires_on_real_time_through_the_fold(home: dict[str, Any]) -> None:
    berlin = home["cwd"] / "berlin.toml"
    write(berlin, '[jobs.h]\nschedule = "*/30 * * * *"\ntimezone = "Europe/Berlin"\nshell = ":"')
    args = ("next", "h", "-n", "4", "--after", "2026-10-25T01:45:00+02:00", "--json")
    result = jobd(home, *args, "--config", str(berlin))
    assert json.loads(result.stdout)["local"] == [
        "2026-10-25T02:00:00.000+02:00",
        "2026-10-25T02:30:00.000+02:00",
        "2026-10-25T02:00:00.000+01:00",
        "2026-10-25T02:30:00.000+01:00",
    ]


def test_next_as_text(home: dict[str, Any]) -> None:
    result = jobd(home, "next", "nightly", "-n", "2", "--after", "2026-03-28T12:00:00Z")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "2026-03-29 01:00:00Z  (Europe/Berlin: 2026-03-29T03:00:00+02:00)",
        "2026-03-30 00:30:00Z  (Europe/Berlin: 2026-03-30T02:30:00+02:00)",
    ]


def test_next_unknown_job_suggests_the_closest(home: dict[str, Any]) -> None:
    open_store(home["store"]).close()
    result = jobd(home, "next", "nightyl", "--store", home["store"])
    assert result.returncode == 2
    assert error_line(result) == "jobd: unknown job 'nightyl' (did you mean 'nightly'?)"


def test_next_finds_store_only_jobs_and_suggests_them(home: dict[str, Any]) -> None:
    from jobd.core.config.parse import parse_job
    from jobd.core.model import Source

    store = open_store(home["store"])
    raw = {"schedule": "0 12 * * *", "command": ["true"]}
    store.upsert_cli_job(
        parse_job("adhoc_report", raw, "(cli)", {}, "UTC", Source.CLI), store.now()
    )
    store.close()
    args = ("-n", "1", "--after", "2026-01-01T00:00:00Z", "--json", "--store", home["store"])
    found = jobd(home, "next", "adhoc_report", *args)
    assert json.loads(found.stdout)["fires"] == ["2026-01-01T12:00:00.000Z"]
    typo = jobd(home, "next", "adhoc_reprt", "--store", home["store"])
    assert typo.returncode == 2
    assert error_line(typo) == "jobd: unknown job 'adhoc_reprt' (did you mean 'adhoc_report'?)"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["next", "notify"], "has no schedule"),
        (["next", "nightly", "--after", "tomorrow"], "--after: not an RFC 3339 time"),
    ],
)
def test_next_usage_errors(home: dict[str, Any], args: list[str], fragment: str) -> None:
    result = jobd(home, *args)
    assert result.returncode == 2
    assert fragment in error_line(result)


def test_bad_count_is_a_usage_error(home: dict[str, Any]) -> None:
    result = jobd(home, "next", "nightly", "-n", "0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
