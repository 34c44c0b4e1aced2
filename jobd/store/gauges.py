"""The store's side of a metrics scrape: two statements, whatever the history's size.

1. Every job's pause state, next fire and last success: one pass over the jobs
   table, joined on its name with job_successes (each job's latest successful
   end, kept by a trigger on executions: see migrations.py, version 5). The
   history itself is not read: an index walk per job to its latest success
   cost 10,000 index probes and table reads at 10,000 jobs, over 50 ms on
   SQLite and several times that on PostgreSQL.
2. The queued and running counts, by the (status, not_before) index.
"""

from __future__ import annotations

from jobd.core.model import Status
from jobd.store.reader import Reader

# (name, paused, next fire, last success): paused is true when the job's
# schedule does not fire (paused, or enabled = false); times are Unix seconds,
# rounded to the millisecond, or None.
JobGauge = tuple[str, bool, float | None, float | None]

# Times come back as Unix seconds computed by the database: converting 20,000
# stored times in Python took longer than the query. Stored times are naive
# UTC: SQLite's julianday reads them as UTC, and PostgreSQL's date_part('epoch')
# reads a timestamp without time zone as UTC. No ORDER BY: the text format
# needs no order, and SQLite would read the table through its name index.
JOBS_SQL = (
    "SELECT j.name, j.paused OR NOT j.enabled, {next_fire}, {success} "
    "FROM jobs j LEFT JOIN job_successes s ON s.job = j.name WHERE j.removed = ?"
)
# Rounded to the millisecond by arithmetic: SQLite's round() formats and
# parses text, which cost a third of the statement; PostgreSQL's EXTRACT gives
# numeric where date_part gives float8.
EPOCH = {
    "sqlite": "CAST((julianday({column}) - 2440587.5) * 86400000.0 + 0.5 AS INTEGER) / 1000.0",
    "postgresql": "round(date_part('epoch', {column}) * 1000) / 1000",
}
ACTIVE_SQL = "SELECT status, COUNT(*) FROM executions WHERE status IN (?, ?) GROUP BY status"


def jobs_sql(backend: str) -> str:
    epoch = EPOCH[backend]
    return JOBS_SQL.format(
        next_fire=epoch.format(column="j.next_fire_at"),
        success=epoch.format(column="s.finished_at"),
    )


def job_gauges(reader: Reader) -> list[JobGauge]:
    """Every job that is not removed, in no particular order."""
    return reader._query(jobs_sql(reader.backend), (False,))  # type: ignore[return-value]


def active_counts(reader: Reader) -> tuple[int, int]:
    """(queued, running) across every instance."""
    rows = dict(reader._query(ACTIVE_SQL, (Status.QUEUED.value, Status.RUNNING.value)))
    return int(rows.get(Status.QUEUED.value, 0)), int(rows.get(Status.RUNNING.value, 0))
