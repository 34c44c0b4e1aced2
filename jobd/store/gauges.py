"""The store's side of a metrics scrape: two statements, whatever the history's size.

1. Every job's pause state, next fire and last success: one pass over the jobs
   table, with the last success found per job by the (job, id) index, walking
   back from the newest run to the first success (a step or two for a healthy
   job), never by scanning the executions table.
2. The queued and running counts, by the (status, not_before) index.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobd.core.model import Status
from jobd.store import queries as q
from jobd.store.reader import Reader


@dataclass(frozen=True, slots=True)
class JobGauge:
    name: str
    paused: bool  # paused, or disabled in the config: its schedule does not fire
    next_fire_at: float | None  # Unix time
    last_success_at: float | None  # Unix time


def job_gauges(reader: Reader) -> list[JobGauge]:
    rows = reader._query(q.JOB_GAUGES, (Status.SUCCEEDED.value, False))
    return [
        JobGauge(
            name,
            bool(paused) or not enabled,
            None if next_fire is None else round(float(next_fire), 3),
            None if success is None else round(float(success), 3),
        )
        for name, paused, enabled, next_fire, success in rows
    ]


def active_counts(reader: Reader) -> tuple[int, int]:
    """(queued, running) across every instance."""
    rows = dict(reader._query(q.ACTIVE_COUNTS, (Status.QUEUED.value, Status.RUNNING.value)))
    return int(rows.get(Status.QUEUED.value, 0)), int(rows.get(Status.RUNNING.value, 0))
