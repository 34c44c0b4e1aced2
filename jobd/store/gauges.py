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
from jobd.store import queries as q
from jobd.store.reader import Reader

# (name, paused, next fire, last success): paused is true when the job's
# schedule does not fire (paused, or enabled = false); times are Unix time in
# whole milliseconds (queries.py says why not seconds), or None.
JobGauge = tuple[str, bool, int | None, int | None]


def job_gauges(reader: Reader) -> list[JobGauge]:
    """Every job that is not removed, in no particular order."""
    return reader._query(q.JOB_GAUGES, (False,))  # type: ignore[return-value]


def active_counts(reader: Reader) -> tuple[int, int]:
    """(queued, running) across every instance."""
    rows = dict(reader._query(q.ACTIVE_COUNTS, (Status.QUEUED.value, Status.RUNNING.value)))
    return int(rows.get(Status.QUEUED.value, 0)), int(rows.get(Status.RUNNING.value, 0))
