"""What the HTTP API answers and the Python client returns, built in one place
so that both edges give the same fields whichever way a request arrives: a
job as `jobd list --json` shows it, a run as `jobd show --json` does (without
its output), and a run's output as `jobd logs --follow` streams it.

How output is followed: the daemon keeps only the tail of a run's output and
counts every byte it has seen; new_output() finds what the new tail adds to
what was shown (see jobd.cli.follow for the whole rule).

The CLI's fast path imports this module too: cron maths waits inside the
function that needs it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

FINAL = frozenset(("succeeded", "failed", "timed_out", "cancelled", "abandoned", "skipped"))
NEXT_FIRES = 5
POLL_S = 0.05  # how often a waiter or a follower reads the run's state


def job_json(entry: Any, last: dict[str, Any], with_fires: bool = False) -> dict[str, Any]:
    """A jobd.ops.jobs.JobEntry; `last` is Store.last_statuses()."""
    spec = entry.spec
    body: dict[str, Any] = {
        "name": entry.name,
        "schedule": spec.schedule,
        "timezone": spec.timezone,
        "next_fire": entry.next_fire_at,
        "last_status": last[entry.name].value if entry.name in last else None,
        "paused": entry.paused,
        "enabled": spec.enabled,
        "source": spec.source.value,
        "applied": entry.applied.value,
        "description": spec.description,
        "group": spec.group,
    }
    if with_fires:
        body["next_fires"] = []
        if spec.schedule and spec.enabled and not entry.paused:
            from zoneinfo import ZoneInfo

            from jobd.core.cron import next_fires, parse_schedule

            zone = ZoneInfo(spec.timezone)
            now = datetime.now(UTC)
            body["next_fires"] = next_fires(parse_schedule(spec.schedule), zone, now, NEXT_FIRES)
    return body


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A run as the reader returns it, every column but its output."""
    from jobd.core.records import DETAIL_KEYS, RUN_KEYS

    return {key: row[key] for key in (*RUN_KEYS, *DETAIL_KEYS) if key in row and key != "log"}


def new_output(shown_tail: str, shown_total: int, tail: str, total: int) -> tuple[str, int]:
    """What to print after `shown_tail`, and how many bytes were lost in between."""
    if total == shown_total and tail == shown_tail:
        return "", 0
    data, old = tail.encode(), shown_tail.encode()
    grown = total - shown_total
    if grown > len(data):
        return tail, grown - len(data)
    if grown >= 0:
        head = data[: len(data) - grown]
        if old.endswith(head) or head.endswith(old):
            return data[len(data) - grown :].decode(errors="replace"), 0
    return _by_overlap(shown_tail, tail), 0


def _by_overlap(shown: str, tail: str) -> str:
    """The part of `tail` after its longest overlap with the end of `shown`."""
    if not shown:
        return tail
    anchor = tail[: min(len(tail), 64)]
    start = shown.find(anchor) if anchor else -1
    while start != -1:
        overlap = len(shown) - start
        if overlap <= len(tail) and tail[:overlap] == shown[start:]:
            return tail[overlap:]
        start = shown.find(anchor, start + 1)
    at = tail.rfind(shown)
    return tail[at + len(shown) :] if at != -1 else tail


def follow_output(
    reader: Any, run_id: int, stop: Callable[[], bool] = lambda: False
) -> Iterator[str]:
    """New output as the store receives it (the algorithm of `jobd logs --follow`),
    until the run is final or `stop()`; a gap the daemon did not keep is said in
    brackets."""
    shown_tail, shown_total = "", 0
    while not stop():
        state = reader.run_state(run_id)
        if state is None:
            return
        if state["log_bytes"] != shown_total or state["status"] in FINAL:
            tail, total = reader.log(run_id)
            text, lost = new_output(shown_tail, shown_total, tail, total)
            shown_tail, shown_total = tail, total
            if lost:
                yield f"[jobd: {lost} bytes of output not kept]\n"
            if text:
                yield text
        if state["status"] in FINAL:
            return
        time.sleep(POLL_S)


def wait_final(
    reader: Any, run_id: int, seconds: float, stop: Callable[[], bool] = lambda: False
) -> dict[str, Any] | None:
    """The run's state once final, or at the end of `seconds` or once `stop()`;
    None once it is gone."""
    deadline = time.monotonic() + seconds
    state = reader.run_state(run_id)
    while (
        state is not None
        and state["status"] not in FINAL
        and time.monotonic() < deadline
        and not stop()
    ):
        time.sleep(POLL_S)
        state = reader.run_state(run_id)
    return state
