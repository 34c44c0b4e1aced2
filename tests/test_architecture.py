"""The shape of the code (STYLE.md): a folder per layer, each importing only the
layers below it, a pure core free of I/O, and docs that keep up with the commands."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBD = ROOT / "jobd"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# The pure core: every module under jobd/core, the error types, and the line
# format jobd's own child programs share with the runner.
PURE = sorted(module_name(p) for p in (JOBD / "core").rglob("*.py"))
PURE += ["jobd.errors", "jobd.runs.childlog"]

# Top-level modules the pure core must not load, directly or through another module.
IO_MODULES = {
    "peewee", "playhouse", "click", "rich", "psycopg2", "platformdirs", "daemon", "schedule",
    "subprocess", "socket", "sqlite3", "_sqlite3", "selectors", "asyncio", "multiprocessing",
}  # fmt: skip


def forbidden(module: str) -> bool:
    """What the pure core may not load: an I/O library, or any jobd module outside it."""
    if module.split(".")[0] in IO_MODULES:
        return True
    if module == "jobd.runs":  # childlog's package: its __init__ is a docstring
        return False
    return module.startswith("jobd.") and not any(
        module == name or module.startswith(name + ".") for name in ("jobd.core", *PURE)
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
    path = JOBD.parent / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    bad = [f"{path.name}:{line}: {name}" for line, name in imports_in(path) if forbidden(name)]
    assert bad == []


def test_the_forbidden_list_catches_what_it_should() -> None:
    assert forbidden("peewee") and forbidden("jobd.store.schema") and forbidden("subprocess")
    assert forbidden("jobd.system.clock") and forbidden("jobd.runs.process")
    assert not forbidden("jobd.core.cron") and not forbidden("zoneinfo")
    assert not forbidden("jobd.errors") and not forbidden("jobd.runs.childlog")


# -- layers ------------------------------------------------------------------------------

# Which layers each layer's modules may import (itself, jobd.errors and the package's
# version always). A layer below never reaches up: the store knows nothing of the
# daemon, the runs or a front end; the front ends (api, client) reach the store's
# state through the operations layer and never through each other. The CLI is the
# launcher of everything (the daemon, the API server), so it may import any layer.
LAYERS: dict[str, set[str]] = {
    "core": set(),
    "store": {"core"},
    "system": {"core", "store"},
    "leader": {"core", "store", "system"},
    "runs": {"core", "store", "system"},
    "observe": {"core", "store", "system"},
    "daemon": {"core", "store", "system", "leader", "runs", "observe"},
    "ops": {"core", "store", "system", "runs"},
    "api": {"core", "store", "system", "ops", "observe"},
    "client": {"core", "store", "ops"},
    "cli": {"core", "store", "system", "leader", "runs", "observe", "daemon", "ops", "api"},
}
TOP_LEVEL = {"__init__", "__main__", "errors"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "jobd" else None


def wrong_imports(path: Path, module: str | None = None) -> list[str]:
    own = layer_of(module or module_name(path))
    assert own is not None
    allowed = LAYERS[own] | {own, "errors", "__version__"}
    return [
        f"{path.name}:{line}: {name}"
        for line, name in imports_in(path)
        if (layer := layer_of(name)) is not None and layer not in allowed
    ]


def test_every_module_sits_in_a_layer() -> None:
    folders = {p.parent.name for p in JOBD.glob("*/__init__.py")}
    modules = {p.stem for p in JOBD.glob("*.py")}
    assert folders | (modules - {"__init__", "__main__", "errors"}) == set(LAYERS)
    assert modules <= TOP_LEVEL


@pytest.mark.parametrize(
    "path",
    sorted(p for p in JOBD.rglob("*.py") if p.parent != JOBD),
    ids=lambda p: str(p.relative_to(JOBD)),
)
def test_each_layer_imports_only_the_layers_below_it(path: Path) -> None:
    assert wrong_imports(path) == []


def test_the_layer_rule_catches_a_wrong_import(tmp_path: Path) -> None:
    """A store module that imported the daemon would be caught (and lazily too)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import jobd.core.cron\n\ndef f():\n    from jobd.daemon.loop import Daemon\n")
    assert wrong_imports(probe, "jobd.store.probe") == [
        "probe.py:4: jobd.daemon.loop",
        "probe.py:4: jobd.daemon.loop.Daemon",
    ]


# -- docs ----------------------------------------------------------------------------


def commands() -> list[str]:
    from jobd.cli.app import all_commands

    return sorted(all_commands())


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
