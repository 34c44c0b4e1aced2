"""The plain forms of `jobd executions`, served without importing click.

Importing click costs about as much as starting Python itself (some 20 ms on a
small VM), and scripts run `jobd executions` in loops: bench/cli_latency.py
holds it to 2x a bare driver query, which click alone would exceed. So main()
offers every command line here first. This module accepts only what it fully
understands: `executions` with --job/--job-type, --status, --since, --limit,
--json, --local, and --config/--store before or after the command name, each
value as the next word or after `=`. Anything else (help, completion, a typo,
a value click would reject) returns None, and click parses the line and gives
its usual messages. Both paths run history.list_runs; tests run them side by
side on the same arguments.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

GLOBAL = {"--config": "config", "--store": "store"}
VALUES = {"--job": "job", "--job-type": "job", "--status": "status", "--since": "since"}
VALUES |= {"--limit": "limit", **GLOBAL}
FLAGS = {"--json": "as_json", "--local": "local_time"}
STATUSES = frozenset(
    ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "abandoned", "skipped")
)


def parse(argv: Sequence[str]) -> dict[str, Any] | None:
    """The options of a plain `executions` command line, or None to leave it to click."""
    if os.environ.get("_JOBD_COMPLETE"):
        return None
    found: dict[str, Any] = {"config": None, "store": None, "job": None, "since": None}
    found |= {"limit": 10, "as_json": False, "local_time": False, "statuses": []}
    command = None
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        name, equals, value = word.partition("=")
        if command is None and word == "executions":
            command = word
            continue
        if command is not None and word in FLAGS:
            found[FLAGS[word]] = True
            continue
        key = (GLOBAL if command is None else VALUES).get(name)
        if key is None:
            return None
        if not equals:
            if index >= len(words):
                return None
            value = words[index]
            index += 1
        if not value or value.startswith("-"):
            return None  # click decides what `--job --json` means
        if key == "status":
            if value.lower() not in STATUSES:
                return None
            found["statuses"].append(value)
        elif key == "limit":
            if not value.isdigit() or int(value) >= 2**63:
                return None  # click says why
            found["limit"] = int(value)
        else:
            found[key] = value
    return found if command is not None else None


def run(argv: Sequence[str]) -> int | None:
    """Serve a plain `executions` line and return its exit code; None for click."""
    found = parse(argv)
    if found is None:
        return None
    from jobd.cli import history
    from jobd.errors import ExitCode, JobdError, store_failure
    from jobd.ops.context import Context

    ctx = Context(found.pop("config"), found.pop("store"))
    try:
        history.list_runs(ctx, **found)
        sys.stdout.flush()
    except JobdError as exc:
        sys.stderr.write(f"jobd: {exc}\n")
        return int(exc.exit_code)
    except Exception as exc:
        failure = store_failure(exc)
        if failure is None:
            raise
        sys.stderr.write(f"jobd: {failure}\n")
        return int(failure.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("jobd: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # A reader such as `head` left; as click does, say nothing, exit 1.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed pipe
        return 1
    finally:
        ctx.close()
    return 0
