"""The shape of the code (STYLE.md): a pure core free of I/O, and docs that keep
up with the commands."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ["jobd.model", "jobd.cron", "jobd.config", "jobd.durations", "jobd.errors"]
PURE += ["jobd.config_fields", "jobd.config_kinds", "jobd.importers", "jobd.childlog", "jobd.urls"]
PURE += ["jobd.masking"]
PURE += [name for name in ("jobd.policies", "jobd.planner") if importlib.util.find_spec(name)]

# Top-level modules the pure core must not load, directly or through another module.
IO_MODULES = {
    "peewee", "playhouse", "click", "rich", "psycopg2", "platformdirs", "daemon", "schedule",
    "subprocess", "socket", "sqlite3", "_sqlite3", "selectors", "asyncio", "multiprocessing",
}  # fmt: skip
# jobd modules that do I/O (or are the edge): the core never imports them.
IO_JOBD = ("jobd.store", "jobd.cli", "jobd.paths", "jobd.daemon", "jobd.runner", "jobd.clock",
           "jobd.leader", "jobd.signals", "jobd.log")  # fmt: skip


def forbidden(module: str) -> bool:
    return module.split(".")[0] in IO_MODULES or any(
        module == name or module.startswith(name + ".") for name in IO_JOBD
    )


@pytest.mark.parametrize("module", PURE)
def test_pure_core_loads_no_io_modules(module: str) -> None:
    # A fresh interpreter, so nothing imported by the tests themselves counts.
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(result.stdout)
    assert [name for name in loaded if forbidden(name)] == []


def imports_in(path: Path) -> list[tuple[int, str]]:
    """Every module an `import` names, including ones inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_core_has_no_io_imports_even_lazily(module: str) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    bad = [f"{path.name}:{line}: {name}" for line, name in imports_in(path) if forbidden(name)]
    assert bad == []


def test_the_forbidden_list_catches_what_it_should() -> None:
    assert forbidden("peewee") and forbidden("jobd.store.schema") and forbidden("subprocess")
    assert not forbidden("jobd.storekeeper") and not forbidden("zoneinfo")


# -- docs ----------------------------------------------------------------------------


def commands() -> list[str]:
    from jobd.cli import cli

    return sorted(cli.commands)


def test_there_are_commands_to_document() -> None:
    assert {"run", "validate", "list", "next"} <= set(commands())


@pytest.mark.parametrize("command", commands())
def test_every_command_is_in_the_man_page(command: str) -> None:
    page = (ROOT / "man" / "jobd.1").read_text()
    section = page.split(".SH COMMANDS", 1)[1].split("\n.SH ", 1)[0]
    # Each command opens a .TP entry: `.B name`, `.BR name ...` or `.BI name " ARG"`.
    assert re.search(rf"^\.B[RI]? {re.escape(command)}(\s|$)", section, re.MULTILINE), (
        f"`jobd {command}` is missing from man/jobd.1 COMMANDS"
    )


@pytest.mark.parametrize("command", commands())
def test_every_command_is_in_the_readme(command: str) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert re.search(rf"^\|.*`jobd {re.escape(command)}[` ]", table, re.MULTILINE), (
        f"`jobd {command}` is missing from the README's command table"
    )


def test_exit_codes_are_documented() -> None:
    from jobd.errors import ExitCode

    page = (ROOT / "man" / "jobd.1").read_text().split(".SH EXIT STATUS", 1)[1]
    readme = (ROOT / "README.md").read_text().split("## Exit codes", 1)[1]
    for code in ExitCode:
        assert re.search(rf"^\.B {code.value}$", page, re.MULTILINE), f"man page: {code!r}"
        assert re.search(rf"^\| {code.value} \|", readme, re.MULTILINE), f"README: {code!r}"


# -- the operations layer ---------------------------------------------------------------

# Store writes that are operations: validation, quotas, audit rows and wake-ups come
# with them in jobd.ops, so a front end that wrote them itself would skip those.
OPERATION_WRITES = (
    "audit", "enqueue", "set_paused", "upsert_cli_job", "remove_job", "request_cancel",
    "add_unapplied_job", "prune",
)  # fmt: skip


@pytest.mark.parametrize("path", sorted((ROOT / "jobd" / "cli").glob("*.py")), ids=str)
def test_front_ends_leave_store_writes_to_the_operations_layer(path: Path) -> None:
    calls = [
        f"{path.name}:{node.lineno}: .{node.func.attr}()"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in OPERATION_WRITES
    ]
    assert calls == [], "call jobd.ops instead"
