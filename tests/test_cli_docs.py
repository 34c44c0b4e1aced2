"""Every command is registered where the lazy table says, documented in the man
page and the README, has an example in its help, and completes in the shell."""

from __future__ import annotations

import importlib
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from jobd.cli import COMMAND_MODULES, cli
from jobd.cli.app import all_commands
from tests.clihelp import ANSI, add_job, empty_config, postgresql_url
from tests.conftest import jobd_cmd

__all__ = ["postgresql_url"]  # the fixture alias, see tests.clihelp

ROOT = Path(__file__).resolve().parent.parent
READ_COMMANDS = {
    "validate",
    "list",
    "next",
    "executions",
    "show",
    "logs",
    "status",
    "check",
    "audit",
}


def test_the_lazy_table_matches_the_modules() -> None:
    declared: dict[str, str] = {}
    for module_name in set(COMMAND_MODULES.values()):
        module = importlib.import_module(f"jobd.cli.{module_name}")
        declared |= {command.name: module_name for command in module.COMMANDS}
    assert declared == COMMAND_MODULES
    assert sorted(all_commands()) == sorted(COMMAND_MODULES)
    assert cli.list_commands(click.Context(cli)) == sorted(COMMAND_MODULES)


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_documented_with_an_example(name: str) -> None:
    man = (ROOT / "man" / "jobd.1").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"^\.B[IR]? {name}\b", man, re.M), f"{name} missing from man/jobd.1"
    assert f"`jobd {name}" in readme or f"/ `jobd {name}" in readme, f"{name} missing in README"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"`jobd {name} --help` has no example"


def test_a_mistyped_command_is_told_the_closest_name() -> None:
    result = CliRunner().invoke(cli, ["executins"])
    assert result.exit_code == 2
    assert "Did you mean 'executions'?" in result.output


def test_read_commands_take_json() -> None:
    for name in READ_COMMANDS:
        options = {opt for param in all_commands()[name].params for opt in param.opts}
        assert "--json" in options, name


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    env = {**os.environ, "_JOBD_COMPLETE": f"{shell}_source"}
    result = subprocess.run(jobd_cmd(), capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "_JOBD_COMPLETE" in result.stdout


def test_job_names_complete_from_the_store(store_url: str, store: Any, tmp_path: Path) -> None:
    add_job(store, "backup")
    add_job(store, "billing")
    add_job(store, "report")
    env = {
        **os.environ,
        "_JOBD_COMPLETE": "bash_complete",
        "COMP_WORDS": "jobd trigger b",
        "COMP_CWORD": "2",
        "JOBD_STORE": store_url,
        "JOBD_CONFIG": empty_config(tmp_path),
    }
    result = subprocess.run(jobd_cmd(), capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["plain,backup", "plain,billing"]


def on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run jobd with stdout and stderr on a pseudo-terminal; return what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        jobd_cmd(*args), stdout=follower, stderr=follower, env={**env, "COLUMNS": "120"}
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_terminal_gets_colour_and_relative_times(
    store_url: str, store: Any, tmp_path: Path
) -> None:
    from datetime import timedelta

    from jobd.core.model import NewRun, Status, Trigger
    from jobd.core.timeutil import to_db

    add_job(store, "backup")
    run_id = store.enqueue(NewRun("backup", Trigger.MANUAL, store.now(), status=Status.FAILED))
    E = store.m.Execution
    E.update(queued_at=to_db(store.now() - timedelta(minutes=5))).where(E.id == run_id).execute()
    env = {**os.environ, "JOBD_STORE": store_url, "JOBD_CONFIG": empty_config(tmp_path)}
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    coloured = on_a_terminal(["executions"], env)
    assert ANSI.search(coloured) and "failed" in coloured and re.search(r"5m0\ds ago", coloured)
    plain = on_a_terminal(["executions"], {**env, "NO_COLOR": "1"})
    assert not ANSI.search(plain) and "failed" in plain


def test_spinner_on_a_terminal_only(store_url: str, store: Any, tmp_path: Path) -> None:
    from tests.clihelp import Executor, Step

    add_job(store, "backup")
    env = {**os.environ, "JOBD_STORE": store_url, "JOBD_CONFIG": empty_config(tmp_path)}
    env["TERM"] = "xterm-256color"
    started = time.monotonic()
    step = Step(
        hold=lambda: time.monotonic() - started > 4.0
    )  # long enough for a loaded machine to start the CLI
    with Executor(store_url, step):
        shown = on_a_terminal(["trigger", "backup", "--wait"], env)
    assert "backup (run " in shown and "running" in shown  # the spinner's line
    assert "succeeded in" in shown
