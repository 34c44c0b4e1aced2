"""`jobd top`: a live view of the store, redrawn every second until `q` or Ctrl-C.

gather() reads the store (a handful of indexed queries); view() turns what it
read into rich renderables for a terminal of a given size, and says so plainly
when the terminal is too small for them. Both are tested without a terminal;
the loop is tested in tmux.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from jobd.cli import render
from jobd.core.model import Status

MIN_WIDTH, MIN_HEIGHT = 60, 12
BLOCKS = "▁▂▃▄▅▆▇█"
TREND_RUNS = 20  # durations per job in its sparkline
HISTORY_READ = 500  # latest runs read for the sparklines
FAILURES_SHOWN = 5
FIRES_SHOWN = 5
FAILED = (Status.FAILED.value, Status.TIMED_OUT.value, Status.ABANDONED.value)


@dataclass
class TopData:
    now: datetime
    leader: str
    instances: list[dict[str, Any]]
    queue_depth: int
    running: list[dict[str, Any]]
    next_fires: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    trends: dict[str, list[float]] = field(default_factory=dict)  # job → durations, oldest first


def gather(store: Any, ttl: float) -> TopData:
    from jobd.store import admin
    from jobd.store.reader import Reader

    now = store.now()
    reader = Reader.over(store)
    instances = [i for i in admin.instances(store, ttl, now, seen_within=ttl) if i["live"]]
    recent = reader.executions(limit=HISTORY_READ)
    trends: dict[str, list[float]] = {}
    for run in recent:  # newest first
        if run["status"] == Status.SUCCEEDED.value and run["duration_s"] is not None:
            durations = trends.setdefault(run["job"], [])
            if len(durations) < TREND_RUNS:
                durations.append(float(run["duration_s"]))
    return TopData(
        now=now,
        leader=leader_text(admin.leader_lease(store, now), instances),
        instances=instances,
        queue_depth=store.queue_depth(),
        running=reader.executions(statuses=[Status.RUNNING.value], limit=None),
        next_fires=admin.upcoming(store, FIRES_SHOWN),
        failures=reader.executions(statuses=list(FAILED), limit=FAILURES_SHOWN),
        trends={job: list(reversed(d)) for job, d in sorted(trends.items())},
    )


def leader_text(lease: dict[str, Any] | None, live: Sequence[dict[str, Any]]) -> str:
    if lease is not None and lease["holder"] and not lease["expired"]:
        return f"{lease['holder']} on {lease['host']} (epoch {lease['epoch']})"
    leading = [i for i in live if i["role"] == "leader"]
    if leading:
        return f"{leading[0]['id']} on {leading[0]['host']}"
    return "NONE: no schedule fires"


def sparkline(values: Sequence[float], width: int = TREND_RUNS) -> str:
    """The last `width` values as block characters, scaled from the least to the most."""
    values = list(values)[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return BLOCKS[len(BLOCKS) // 2 - 1] * len(values)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - low) / (high - low) * top)] for v in values)


def view(data: TopData, width: int, height: int) -> RenderableType:
    """What one screen shows; plain text on a terminal too small for the tables."""
    summary = (
        f"leader {data.leader} | {len(data.instances)} instance(s) | "
        f"{len(data.running)} running | {data.queue_depth} queued"
    )
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        return Text(
            f"jobd top: terminal {width}x{height}, needs {MIN_WIDTH}x{MIN_HEIGHT}\n"
            f"{summary}\nq quits",
            overflow="fold",
        )
    # Rows left for the tables once the header, titles and borders are drawn.
    budget = max(1, (height - 8) // 3)
    header = Text.assemble(
        ("jobd top", "bold"),
        f"  {render.when(data.now, False)}  ",
        ("q quits", "dim"),
        "\n",
        summary,
    )
    running = _table("RUNNING", ["ID", "JOB", "ELAPSED", "HOST"])
    for run in data.running[:budget]:
        elapsed = (data.now - run["started_at"]).total_seconds() if run["started_at"] else 0.0
        running.add_row(str(run["id"]), run["job"], _duration(elapsed), run["host"] or "-")
    _more(running, len(data.running) - budget)
    fires = _table("NEXT FIRES", ["JOB", "AT", "IN"])
    for fire in data.next_fires[:budget]:
        fires.add_row(fire["job"], render.when(fire["at"], False), render.ago(fire["at"], data.now))
    failures = _table("RECENT FAILURES", ["ID", "JOB", "STATUS", "ENDED"])
    for run in data.failures[:budget]:
        ended = run["finished_at"]
        failures.add_row(
            str(run["id"]),
            run["job"],
            Text(run["status"], style="red"),
            render.ago(ended, data.now) if ended else "-",
        )
    trends = _table("DURATIONS (last runs, oldest first)", ["JOB", "TREND", "LAST"])
    for job, durations in list(data.trends.items())[:budget]:
        trends.add_row(job, sparkline(durations), _duration(durations[-1]))
    _more(trends, len(data.trends) - budget)
    return Group(header, running, fires, failures, trends)


def _table(title: str, headers: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left", expand=True, box=None, padding=(0, 1))
    for name in headers:
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    return table


def _more(table: Table, hidden: int) -> None:
    if hidden > 0:
        table.add_row(f"... {hidden} more", *[""] * (len(table.columns) - 1))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """Standard input, a key at a time without echo; None when it is no terminal."""
    fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
    if fd is None:
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, timeout: float) -> bool:
    """Wait up to `timeout` for a key; True for q."""
    if fd is None:
        select.select([], [], [], timeout)
        return False
    readable, _, _ = select.select([fd], [], [], timeout)
    if not readable:
        return False
    key = os.read(fd, 32)
    return b"q" in key.lower() or not key  # end of input quits too


def _terminal_size(console: Console) -> tuple[int, int]:
    """The terminal's size now, from the terminal itself: COLUMNS and LINES
    (which rich prefers) are stale once the window is resized."""
    try:
        size = os.get_terminal_size(console.file.fileno())
    except (AttributeError, OSError, ValueError):
        return console.size
    return size.columns, size.lines


def run(store: Any, ttl: float, interval: float = 1.0) -> None:
    """Redraw every `interval` seconds until q or Ctrl-C."""
    from rich.live import Live

    console = Console()
    if not console.is_terminal:  # a pipe gets one screen, like `top -b -n 1`
        width, height = console.size
        console.print(view(gather(store, ttl), max(width, MIN_WIDTH), max(height, 40)))
        return
    try:
        with _keys() as fd, Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                width, height = console.size = _terminal_size(console)
                live.update(view(gather(store, ttl), width, height), refresh=True)
                if _quit_pressed(fd, interval):
                    return
    except KeyboardInterrupt:
        return
    except OSError as exc:
        if exc.errno != errno.EIO:  # EIO: the terminal went away (closed window, ssh)
            raise
