"""What notifications read and write in the store: the outcome before a run (for
`recovered`), and delivery results kept as audit events (`jobd show` lists them)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobd.core.model import Status
from jobd.store import queries as q

if TYPE_CHECKING:
    from jobd.store import Store
    from jobd.store.reader import Reader

DELIVERED = "notify.delivered"
FAILED = "notify.failed"
# Outcomes that say whether a job works; skipped and cancelled runs say nothing.
TELLING = (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.ABANDONED)


def previous_outcome(store: Store, job: str, before_id: int) -> Status | None:
    """The job's latest telling outcome before run `before_id`, by the (job, id) index."""
    row = store.dialect.one(q.PREVIOUS_OUTCOME, (job, before_id, *(s.value for s in TELLING)))
    return Status(row[0]) if row is not None else None


def record_delivery(
    store: Store, actor: str, job: str, run_id: int, channel: str, event: str, **detail: Any
) -> None:
    failed = "error" in detail
    store.audit(
        FAILED if failed else DELIVERED,
        actor,
        job,
        {"run": run_id, "channel": channel, "event": event, **detail},
    )


def deliveries(reader: Reader, job: str, run_id: int, scan: int = 200) -> list[dict[str, Any]]:
    """The delivery results of one run, oldest first: the job's latest `scan`
    notification events, read newest first (audit rows have no run column)."""
    rows = reader._query(q.DELIVERIES, (job, DELIVERED, FAILED, int(scan)))
    found = []
    for at, action, detail in rows:
        data = json.loads(detail) if detail else {}
        if data.get("run") == run_id:
            found.append({"at": at, "delivered": action == DELIVERED, **data})
    return list(reversed(found))
