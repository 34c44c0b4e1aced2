"""The store's side of a metrics scrape: two statements, whatever the history's size.

1. Every job's pause state, next fire and last success: one pass over the jobs
   table, with the last success found per job by the (job, id) index, walking
   back from the newest run to the first success (a step or two for a healthy
   job), never by scanning the executions table.
2. The queued and running counts, by the (status, not_before) index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jobd.model import Status
from jobd.store.reader import Reader
from jobd.timeutil import from_db


@dataclass(frozen=True, slots=True)
class JobGauge:
    name: str
    paused: bool  # paused, or disabled in the config: its schedule does not fire
    next_fire_at: datetime | None
    last_success_at: datetime | None


JOBS_SQL = (
    "SELECT j.name, j.paused, j.enabled, j.next_fire_at, "
    "(SELECT e.finished_at FROM executions e WHERE e.job = j.name AND e.status = ? "
    "ORDER BY e.id DESC LIMIT 1) "
    "FROM jobs j WHERE j.removed = ? ORDER BY j.name"
)
ACTIVE_SQL = "SELECT status, COUNT(*) FROM executions WHERE status IN (?, ?) GROUP BY status"


def job_gauges(reader: Reader) -> list[JobGauge]:
    rows = reader._query(JOBS_SQL, (Status.SUCCEEDED.value, False))
    return [
        JobGauge(name, bool(paused) or not enabled, from_db(next_fire), from_db(success))
        for name, paused, enabled, next_fire, success in rows
    ]


def active_counts(reader: Reader) -> tuple[int, int]:
    """(queued, running) across every instance."""
    rows = dict(reader._query(ACTIVE_SQL, (Status.QUEUED.value, Status.RUNNING.value)))
    return int(rows.get(Status.QUEUED.value, 0)), int(rows.get(Status.RUNNING.value, 0))
