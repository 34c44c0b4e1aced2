"""`jobd executions` itself, without click: the click command and fast.py both call it."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobd.cli import render
from jobd.ops.context import Context
from jobd.ops.listing import find_runs

HEADERS = ["ID", "JOB", "TRIGGER", "STATUS", "STARTED", "DURATION", "EXIT", "HOST"]


def list_runs(
    ctx: Context,
    job: str | None,
    statuses: Sequence[str],
    since: str | None,
    limit: int,
    as_json: bool,
    local_time: bool,
) -> None:
    """Print runs newest first: a table for people, RUN_KEYS objects with --json."""
    now = ctx.now()
    rows = find_runs(ctx.reader, now, job, [s.lower() for s in statuses], since, limit or None)
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        sys.stderr.write("no runs match\n")
        return
    table = [
        [
            str(row["id"]),
            row["job"],
            row["trigger"],
            row["status"],
            render.moment(row["started_at"] or row["queued_at"], now, local_time),
            took(row, now),
            exit_text(row),
            row["host"] or "-",
        ]
        for row in rows
    ]
    render.table(HEADERS, table, styles={3: render.status_style})


def took(row: dict[str, Any], now: datetime) -> str:
    """The duration, or the time so far (with an ellipsis) while it runs."""
    if row["status"] == "running" and row["started_at"] is not None:
        return render.duration((now - row["started_at"]).total_seconds()) + "…"
    return render.duration(row["duration_s"])


def exit_text(row: dict[str, Any]) -> str:
    if row["exit_code"] is not None:
        return str(row["exit_code"])
    if row["signal"] is not None:
        return f"sig {row['signal']}"
    return "-"
