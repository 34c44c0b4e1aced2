"""Output for humans (rich tables on a terminal, plain aligned text on a pipe) and JSON."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobd.core.durations import format_duration
from jobd.core.timeutil import ago, rfc3339

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

# Keyed by the statuses' values, so that rendering a history does not import the
# model's dataclasses; tests check the keys against model.Status.
STATUS_STYLE = {
    "queued": "cyan",
    "running": "blue bold",
    "succeeded": "green",
    "failed": "red bold",
    "timed_out": "red",
    "cancelled": "yellow",
    "abandoned": "magenta",
    "skipped": "dim",
}


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def interactive(err: bool = False) -> bool:
    """Whether a person watches this stream: a terminal that can redraw (spinners)."""
    stream = sys.stderr if err else sys.stdout
    return is_terminal(stream) and os.environ.get("TERM") != "dumb"


def use_color(stream: Any = None) -> bool:
    return (
        is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )


def print_json(value: Any) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def local_zone() -> ZoneInfo | None:
    """The system's zone for `--local`; None falls back to the platform offset."""
    name = os.environ.get("TZ")
    if name:
        from zoneinfo import ZoneInfo

        try:
            return ZoneInfo(name.lstrip(":"))
        except Exception:
            return None
    return None


def when(moment: datetime | None, local: bool = False) -> str:
    if moment is None:
        return "-"
    if local:
        zone = local_zone()
        shown = moment.astimezone(zone) if zone else moment.astimezone()
        return shown.strftime("%Y-%m-%d %H:%M:%S %Z")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def size(count: int) -> str:
    """Bytes for people: 812 B, 12.3 KB, 4.0 MB."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover - the loop always returns


def relative_times(local: bool = False) -> bool:
    """Whether tables give times relative to now ("3m ago"): for a person at a
    terminal; a pipe, and --local, get absolute times."""
    return is_terminal() and not local


def moment(value: datetime | None, now: datetime, local: bool = False) -> str:
    """Relative ("3m ago") for a person at a terminal, absolute on a pipe or with --local."""
    if value is None:
        return "-"
    if relative_times(local):
        return ago(value, now)
    return when(value, local)


def fields(pairs: Sequence[tuple[str, str]]) -> None:
    """Aligned `key  value` lines, as `show` and `status` print them."""
    width = max((len(key) for key, _ in pairs), default=0)
    for key, value in pairs:
        sys.stdout.write(f"{key.ljust(width)}  {value}\n")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    styles: dict[int, Any] | None = None,
    whole: Sequence[int] = (),
) -> None:
    """One table: rich on a colour terminal, aligned plain text otherwise.

    `styles` maps a column index to a function cell -> rich style. The columns
    in `whole` are never cut or wrapped on a narrow terminal (names, times):
    the others give way first.
    """
    if use_color():
        from rich.console import Console
        from rich.table import Table

        out = Table(box=None, header_style="bold", pad_edge=False)
        for index, header in enumerate(headers):
            if index in whole:
                widest = max((len(row[index]) for row in rows), default=0)
                out.add_column(header, no_wrap=True, min_width=max(widest, len(header)))
            else:
                out.add_column(header)
        for row in rows:
            cells = []
            for index, cell in enumerate(row):
                style = styles.get(index)(cell) if styles and index in styles else None
                cells.append(f"[{style}]{_escape(cell)}[/]" if style else _escape(cell))
            out.add_row(*cells)
        console = Console()
        # The terminal's own width: COLUMNS, which rich prefers, is stale once
        # the window is resized, and a table laid out wider than it wraps.
        with contextlib.suppress(OSError, ValueError):
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
            if columns > 0:  # 0: a terminal that never said its size
                console.width = columns
        console.print(out)
        return
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    for line in lines:
        text = "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        sys.stdout.write(text + "\n")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def status_style(cell: str) -> str | None:
    return STATUS_STYLE.get(cell)
