"""The `jobd` command line. Thin: parse arguments, call the store or daemon, render.

Nothing imports this package. The click application is in app.py; main() first
offers the arguments to fast.py, which serves the plain forms of `jobd
executions` without importing click at all (see fast.py and bench/cli_latency.py).
So this module imports nothing heavy, and `cli` loads on first use.

Why the CLI's modules import inside their commands: one command is one short
process, and each should load only what it uses (`jobd executions` neither
click's whole app nor the ORM; a SQLite command never the PostgreSQL driver,
which jobd.store.drivers hides until the store's backend is known). Those
deferred imports live in jobd/cli, and on the fast path beneath it
(jobd.ops.context, jobd.ops.history, jobd.ops.shapes, jobd.system.paths), each
module saying so; every other layer imports at the top.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    from jobd.cli import fast
    from jobd.store import drivers

    drivers.one_store_process = True

    code = fast.run(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from jobd.cli.app import cli
    from jobd.errors import ExitCode

    try:
        cli.main(prog_name="jobd")
    except KeyboardInterrupt:  # pragma: no cover - raised outside a command
        sys.exit(int(ExitCode.INTERRUPTED))


def __getattr__(name: str) -> Any:
    if name in ("cli", "JobdGroup", "COMMAND_MODULES"):
        from jobd.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'jobd.cli' has no attribute {name!r}")
