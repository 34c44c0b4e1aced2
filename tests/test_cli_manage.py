"""pause, resume, schedule, unschedule: the store-only jobs and their audit trail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Source, Status, Trigger
from tests.clihelp import add_job, invoke, jobd, postgresql_url

__all__ = ["postgresql_url"]  # the fixture alias, see tests.clihelp


def file_job(store: Any, name: str) -> None:
    config = parse_config(f'[jobs.{name}]\nschedule = "@daily"\ncommand = ["true"]\n', "jobd.toml")
    store.apply_config(config, store.now())


def test_pause_and_resume(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    result = jobd(store_url, tmp_path, "pause", "backup")
    assert (result.returncode, result.stdout) == (0, "paused backup\n")
    assert store.job("backup").paused
    listed = json.loads(invoke(store_url, "list", "--json").output)
    assert listed[0]["paused"] is True
    again = jobd(store_url, tmp_path, "pause", "backup")
    assert (again.returncode, again.stdout) == (0, "backup is already paused\n")
    result = jobd(store_url, tmp_path, "resume", "backup")
    assert (result.returncode, result.stdout) == (0, "resumed backup\n")
    assert not store.job("backup").paused
    actions = [(e["action"], e["target"]) for e in store.audit_events(10)]
    assert actions == [("resume", "backup"), ("pause", "backup")]


def test_pause_unknown_job_suggests(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    result = jobd(store_url, tmp_path, "pause", "bakcup")
    assert result.returncode == 2
    assert result.stderr == "jobd: unknown job 'bakcup' (did you mean 'backup'?)\n"


def test_schedule_creates_then_updates_by_name(store_url: str, store: Any, tmp_path: Path) -> None:
    result = jobd(
        store_url,
        tmp_path,
        "schedule",
        "vacuum",
        "0 3 * * *",
        "--tz",
        "Europe/Berlin",
        "--timeout",
        "5m",
        "--description",
        "nightly vacuum",
        "--",
        "psql",
        "-c",
        "VACUUM",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created vacuum: next fire ")
    spec = store.job("vacuum").spec
    assert spec.command == ("psql", "-c", "VACUUM") and spec.source is Source.CLI
    assert (spec.timezone, spec.timeout, spec.description) == (
        "Europe/Berlin",
        300.0,
        "nightly vacuum",
    )
    result = jobd(store_url, tmp_path, "schedule", "vacuum", "@hourly", "--", "true")
    assert result.stdout.startswith("updated vacuum")
    assert store.job("vacuum").spec.schedule == "@hourly"
    assert store.job("vacuum").spec.timezone == "UTC"
    event = store.audit_events(1)[0]
    assert (event["action"], event["target"], event["detail"]["command"]) == (
        "schedule",
        "vacuum",
        ["true"],
    )


def test_schedule_errors_are_config_errors(sqlite_url: str, tmp_path: Path) -> None:
    cases = {
        ("bad", "* * *", "--", "true"): "command line: job 'bad': key 'schedule'",
        ("bad", "@daily", "--tz", "Mars/Olympus", "--", "true"): "key 'timezone'",
        ("bad", "@daily", "--timeout", "soon", "--", "true"): "key 'timeout'",
        ("no space", "@daily", "--", "true"): "invalid job name",
    }
    for args, says in cases.items():
        result = jobd(sqlite_url, tmp_path, "schedule", *args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_schedule_without_double_dash_says_how(sqlite_url: str, tmp_path: Path) -> None:
    result = jobd(sqlite_url, tmp_path, "schedule", "x", "@daily", "ls", "-la")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "after --" in result.stderr
    missing = jobd(sqlite_url, tmp_path, "schedule", "x", "@daily")
    assert missing.returncode == 2 and "COMMAND" in missing.stderr


def test_schedule_refuses_a_file_job(store_url: str, store: Any, tmp_path: Path) -> None:
    file_job(store, "backup")
    result = jobd(store_url, tmp_path, "schedule", "backup", "@daily", "--", "true")
    assert result.returncode == 2
    assert "defined in the config file" in result.stderr
    assert store.job("backup").source is Source.FILE


def test_unschedule_keeps_history(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "vacuum")
    run = NewRun(job="vacuum", trigger=Trigger.MANUAL, not_before=store.now(), status=Status.FAILED)
    run_id = store.enqueue(run)
    result = jobd(store_url, tmp_path, "unschedule", "vacuum")
    assert result.returncode == 0, result.stderr
    assert store.job("vacuum").removed
    assert [r["name"] for r in json.loads(invoke(store_url, "list", "--json").output)] == []
    history = json.loads(invoke(store_url, "executions", "--job", "vacuum", "--json").output)
    assert [row["id"] for row in history] == [run_id]
    assert store.audit_events(1)[0]["action"] == "unschedule"
    again = jobd(store_url, tmp_path, "unschedule", "vacuum")
    assert again.returncode == 2 and "unknown job" in again.stderr


def test_unschedule_refuses_a_file_job(store_url: str, store: Any, tmp_path: Path) -> None:
    file_job(store, "backup")
    result = jobd(store_url, tmp_path, "unschedule", "backup")
    assert result.returncode == 2 and "comes from the config file" in result.stderr
    assert not store.job("backup").removed
