"""Claims walk the queue by the executions (status, id) index (schema version 6):
their cost does not grow with the queue, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Trigger
from jobd.store import queries as q
from jobd.store.migrations import SCHEMA_VERSION
from tests.conftest import open_store

JOBS = '[jobs.a]\ncommand = ["true"]\noverlap = "allow"\n'


def _queue(store: Any, count: int) -> list[int]:
    now = store.now()
    run = NewRun("a", Trigger.MANUAL, not_before=now)
    with store.atomic():
        return [store.insert_run(run, now) for _ in range(count)]


def _index_names(store: Any) -> set[str]:
    return {index.name for index in store.db.get_indexes("executions")}


def test_a_claim_reads_the_queue_in_id_order_by_its_index(store: Any) -> None:
    store.apply_config(parse_config(JOBS), store.now())
    ids = _queue(store, 3000)
    if store.backend == "postgresql":
        store.db.execute_sql("ANALYZE executions")
    text = store.dialect.sql(q.CLAIM_CANDIDATES).replace("{moment}", store.dialect.param)
    explain = "EXPLAIN QUERY PLAN " if store.backend == "sqlite" else "EXPLAIN "
    cursor = store.db.cursor()
    cursor.execute(explain + text, ["queued", store.now(), 8])
    plan = " ".join(str(cell) for row in cursor.fetchall() for cell in row)
    # No sort of the whole queue: an index walked in id order, stopped after 8 rows
    # (PostgreSQL's planner may take the primary key while every row is queued).
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    if store.backend == "sqlite":
        assert "executions_status_id" in plan, plan
    claimed = store.claim("i", "h", 3)
    assert [run.id for run, _spec in claimed] == ids[:3]


def test_a_store_at_version_5_gets_the_claim_index(store_url: str) -> None:
    store = open_store(store_url)
    store.db.execute_sql("DROP INDEX executions_status_id")
    store.m.Schema.update(version=5).execute()
    assert "executions_status_id" not in _index_names(store)
    store.close()

    store = open_store(store_url)
    try:
        assert store.schema_version == SCHEMA_VERSION == 6
        assert "executions_status_id" in _index_names(store)
    finally:
        store.close()
