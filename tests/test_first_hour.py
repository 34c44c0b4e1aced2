"""The first hour with jobd, before and beside a daemon, on both stores: every
command knows the config file's jobs, a broken file does not lock the operator
out of the store, and the small things a newcomer trips on."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import open_store, run_jobd, wait_for
from tests.daemons import Daemons

TICK = {"schedule": "*/2 * * * * *", "command": ["true"]}
LATER = {"schedule": "0 3 * * *", "command": ["echo", "nightly"]}


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path, uuid.uuid4().hex)
    yield started
    started.cleanup()


def jobd(config: Path, store_url: str, *args: str, **env: str) -> Any:
    return run_jobd("--config", str(config), "--store", store_url, *args, env=env or None)


def listed(config: Path, store_url: str, **env: str) -> dict[str, dict[str, Any]]:
    result = jobd(config, store_url, "list", "--json", **env)
    assert result.returncode == 0, result.stderr
    return {job["name"]: job for job in json.loads(result.stdout)}


def test_config_jobs_are_known_before_any_daemon_ran(
    daemons: Daemons, store_url: str, tmp_path: Path
) -> None:
    config = daemons.write_config({"tick": TICK, "nightly": LATER})
    jobs = listed(config, store_url)
    assert {name: job["applied"] for name, job in jobs.items()} == {
        "nightly": "not applied",
        "tick": "not applied",
    }
    assert jobs["nightly"]["next_fire"].endswith("T03:00:00.000Z")
    # A schedule override from the environment shows before any daemon applies it.
    overridden = listed(config, store_url, NIGHTLY_SCHEDULE="15 4 * * *")
    assert overridden["nightly"]["schedule"] == "15 4 * * *"
    table = jobd(config, store_url, "list")
    assert "file (not applied)" in table.stdout and "jobd run" in table.stderr

    # Without a daemon, `trigger` explains why nothing would run it: exit 69, nothing queued.
    queued = jobd(config, store_url, "trigger", "tick")
    assert queued.returncode == 69, queued.stderr
    assert "no live jobd daemon" in queued.stderr and "--local" in queued.stderr
    # --local runs the file's definition and records it.
    local = jobd(config, store_url, "trigger", "nightly", "--local", "--wait")
    assert local.returncode == 0, local.stderr
    history = jobd(config, store_url, "executions", "--json")
    [run] = json.loads(history.stdout)
    assert (run["job"], run["status"], run["trigger"]) == ("nightly", "succeeded", "manual")
    shown = json.loads(jobd(config, store_url, "show", str(run["id"]), "--json").stdout)
    assert shown["log"].strip() == "nightly"
    assert shown["not_before"] == shown["started_at"]  # held for the claim, not "in 7000 years"
    # Pausing works before any daemon ran, and the daemon keeps the pause.
    assert jobd(config, store_url, "pause", "tick").returncode == 0
    assert listed(config, store_url)["tick"]["paused"] is True
    # The one-shot instance of --local leaves no row for `status` to list.
    status = json.loads(jobd(config, store_url, "status", "--json").stdout)
    assert status["instances"] == []

    daemon = daemons.start(store_url)
    jobs = listed(config, store_url)
    assert {job["applied"] for job in jobs.values()} == {"applied"}
    assert jobs["tick"]["paused"] is True
    assert jobs["nightly"]["last_status"] == "succeeded"
    store = open_store(store_url)
    try:
        assert store.executions(job="tick", limit=None) == []  # paused: never fired
    finally:
        store.close()
    daemon.stop()


def test_a_daemon_on_an_older_config_is_not_surprised(
    daemons: Daemons, store_url: str, tmp_path: Path
) -> None:
    config = daemons.write_config({"nightly": LATER})
    daemon = daemons.start(store_url)
    # The file changes under the running daemon, which has not reloaded yet.
    daemons.write_config({"nightly": {**LATER, "schedule": "0 4 * * *"}, "fresh": TICK})
    jobs = listed(config, store_url)
    assert jobs["nightly"]["applied"] == "pending reload"
    assert jobs["nightly"]["schedule"] == "0 3 * * *"  # what the daemon runs
    assert jobs["fresh"]["applied"] == "not applied"
    # The daemon would not run a job it never applied: say so, queue nothing.
    refused = jobd(config, store_url, "trigger", "fresh")
    assert refused.returncode == 69 and "no daemon has applied" in refused.stderr
    assert "SIGHUP" in refused.stderr
    # A changed job runs as applied, and the command says so.
    changed = jobd(config, store_url, "trigger", "nightly", "--wait")
    assert changed.returncode == 0, changed.stderr
    assert "uses the applied definition" in changed.stderr
    # --local of the new job records a run without the daemon starting to fire it.
    local = jobd(config, store_url, "trigger", "fresh", "--local", "--wait")
    assert local.returncode == 0, local.stderr
    assert listed(config, store_url)["fresh"]["applied"] == "not applied"
    store = open_store(store_url)
    try:
        assert [r.trigger.value for r in store.executions(job="fresh", limit=None)] == ["manual"]
    finally:
        store.close()
    # Only a reload applies the file.
    daemon.signal(1)  # SIGHUP
    daemon.wait_log("updated: nightly, fresh")
    assert {job["applied"] for job in listed(config, store_url).values()} == {"applied"}
    daemon.stop()


BROKEN = '[jobs.nightly]\nschedule = "0 3 * * *"\ncommand = ["echo", "nightly"\n'


def test_a_broken_config_does_not_lock_the_operator_out(
    daemons: Daemons, store_url: str, tmp_path: Path
) -> None:
    config = daemons.write_config({"nightly": LATER, "tick": TICK})
    daemon = daemons.start(store_url)
    run_id = jobd(config, store_url, "trigger", "nightly", "--wait").stdout.split()[0]
    good = config.read_text()
    config.write_text(good + BROKEN.replace("nightly", "extra"))
    warning = "went on without the config's jobs"

    for args in (
        ["list"],
        ["executions"],
        ["status"],
        ["show", run_id],
        ["logs", run_id],
        ["audit"],
        ["pause", "tick"],
        ["resume", "tick"],
        ["trigger", "nightly", "--wait"],
    ):
        result = jobd(config, store_url, *args)
        assert result.returncode == 0, (args, result.stderr)
        # Once, from commands that read the file (`--store` spares history reads it).
        assert result.stderr.count(warning) <= 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
    cancel = jobd(config, store_url, "cancel", run_id)  # ended already: exit 1, as always
    assert cancel.returncode == 1 and "already ended" in cancel.stderr
    check = jobd(config, store_url, "check", "--json")
    assert check.returncode == 1
    assert [r["check"] for r in json.loads(check.stdout)["reasons"]] == ["config"]
    # What needs the broken part still fails, as before, in one line.
    for args in (["validate"], ["trigger", "nightly", "--local"], ["next", "extra"]):
        result = jobd(config, store_url, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "TOML syntax error" in result.stderr and "Traceback" not in result.stderr
        if args[0] != "next":  # next may name a store job: it warns, then looks there
            assert result.stderr.count("\n") == 1, (args, result.stderr)
    # The daemon keeps running on its last good config through a reload.
    daemon.signal(1)
    daemon.wait_log("reload rejected, keeping the running config")
    assert daemon.running
    daemon.stop()


def test_a_config_broken_where_the_store_is_named_is_still_an_error(tmp_path: Path) -> None:
    config = tmp_path / "jobd.toml"
    config.write_text('[jobd]\nstore = "sqlite:////nowhere.db\n[jobs.a]\ncommand = ["true"]\n')
    config.chmod(0o644)
    result = run_jobd("--config", str(config), "executions")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "TOML syntax error" in result.stderr
    assert not Path("/nowhere.db").exists()


def test_validate_without_a_config_file_says_so(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    result = run_jobd("validate", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "no config file found" in result.stderr and str(tmp_path / "jobd.toml") in result.stderr
    assert "ok, 0 jobs" not in result.stderr


def test_status_tells_a_dead_leader_and_a_released_lease(daemons: Daemons, store_url: str) -> None:
    config = daemons.write_config({"nightly": LATER})
    first = daemons.start(store_url)
    assert first.stop() == 0
    clean = jobd(config, store_url, "status")
    assert clean.returncode == 0, clean.stderr
    assert "None" not in clean.stdout
    assert "leader     none" in clean.stdout
    second = daemons.start(store_url)
    instance = second.instance_id
    second.kill()

    seen: list[str] = []

    def shown_gone() -> bool:
        # PostgreSQL judges an instance by its heartbeat: gone after lease_ttl.
        killed = jobd(config, store_url, "status", NO_COLOR="1")
        seen.append(killed.stdout + killed.stderr)
        rows = [line for line in killed.stdout.splitlines() if line.startswith(instance)]
        return bool(rows) and "gone (was leader)" in rows[0]

    try:
        wait_for(shown_gone, timeout=15)
    except AssertionError:
        raise AssertionError(seen[-1]) from None
