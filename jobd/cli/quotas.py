"""Group quotas in the CLI's tables (the decisions are jobd.ops.quotas')."""

from __future__ import annotations


def quota_cell(used: int, limit: int) -> str:
    """`3/5`, or `3` when unlimited."""
    return f"{used}/{limit}" if limit else str(used)


def quota_style(cell: str) -> str | None:
    """Yellow when a quota is reached: the next request there is refused or skipped."""
    used, _, limit = cell.partition("/")
    return "yellow bold" if limit and int(used) >= int(limit) else None
