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
from jobd.store.reader import Reader


@dataclass(frozen=True, slots=True)
class JobGauge:
    name: str
    paused: bool  # paused, or disabled in the config: its schedule does not fire
    next_fire_at: float | None  # Unix time
    last_success_at: float | None  # Unix time


# Each job's last success is found by walking its runs back from the newest on
# the (job, id) index, stopping at the first success. SQLite's planner would
# take the status index instead, which most runs share (24 s a scrape at
# 10,000 jobs and 1,000,000 runs): `status || ''` keeps it off that index.
# PostgreSQL plans the walk itself from its statistics, and the expression
# would spoil them (a bitmap scan of every run of each job, then a sort).
# Times come back as Unix seconds, computed by the database: converting 20,000
# of them in Python took longer than the query.
JOBS_SQL = (
    "SELECT j.name, j.paused, j.enabled, {epoch_next}, "
    "(SELECT {epoch_finished} FROM executions e WHERE e.job = j.name AND {status} = ? "
    "ORDER BY e.id DESC LIMIT 1) "
    "FROM jobs j WHERE j.removed = ? ORDER BY j.name"
)
ACTIVE_SQL = "SELECT status, COUNT(*) FROM executions WHERE status IN (?, ?) GROUP BY status"
# Stored times are naive UTC: SQLite's julianday reads them as UTC, and
# PostgreSQL's EXTRACT(EPOCH) reads a timestamp without time zone as UTC.
EPOCH = {
    "sqlite": "(julianday({column}) - 2440587.5) * 86400.0",
    "postgresql": "EXTRACT(EPOCH FROM {column})",
}
STATUS = {"sqlite": "e.status || ''", "postgresql": "e.status"}


def jobs_sql(backend: str) -> str:
    epoch = EPOCH[backend]
    return JOBS_SQL.format(
        epoch_next=epoch.format(column="j.next_fire_at"),
        epoch_finished=epoch.format(column="e.finished_at"),
        status=STATUS[backend],
    )


def job_gauges(reader: Reader) -> list[JobGauge]:
    rows = reader._query(jobs_sql(reader.backend), (Status.SUCCEEDED.value, False))
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
    rows = dict(reader._query(ACTIVE_SQL, (Status.QUEUED.value, Status.RUNNING.value)))
    return int(rows.get(Status.QUEUED.value, 0)), int(rows.get(Status.RUNNING.value, 0))
