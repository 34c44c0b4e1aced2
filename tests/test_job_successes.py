"""Each job's latest success, kept by the store's trigger for metrics scrapes
(job_successes, schema version 5), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import jobd.observe.metrics
from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Outcome, Status, Trigger
from jobd.store import admin, open_store
from jobd.store.gauges import job_gauges
from jobd.store.migrations import SCHEMA_VERSION
from jobd.store.reader import Reader
from tests.conftest import finish_run


def ended(store: Any, job: str, status: Status) -> float:
    """Run `job` once to `status`, as a daemon does; its end as Unix seconds."""
    run_id = store.enqueue(NewRun(job, Trigger.MANUAL, not_before=store.now()))
    assert store.claim_run(run_id, "inst-1", "host-1") is not None
    assert finish_run(store, run_id, "inst-1", Outcome(status, exit_code=0))
    return round(store.execution(run_id).finished_at.timestamp(), 3)


def successes(store: Any) -> dict[str, float | None]:
    """Each job's last success as Unix seconds (the scrape's rows give milliseconds)."""
    rows = job_gauges(Reader.over(store))
    return {name: None if success is None else success / 1000 for name, _, _, success in rows}


def test_the_latest_success_is_kept_through_failures_and_pruning(store: Any) -> None:
    store.apply_config(
        parse_config('[jobs.a]\ncommand = ["true"]\n[jobs.b]\ncommand = ["true"]\n'), store.now()
    )
    assert successes(store) == {"a": None, "b": None}
    first = ended(store, "a", Status.SUCCEEDED)
    ended(store, "b", Status.FAILED)
    assert successes(store) == {"a": first, "b": None}
    ended(store, "a", Status.FAILED)
    assert successes(store) == {"a": first, "b": None}
    second = ended(store, "a", Status.SUCCEEDED)
    assert second >= first and successes(store)["a"] == second
    # Pruning the history never lowers it: the job did succeed then.
    assert admin.prune(store, 0, None, store.now()) == {"a": 3, "b": 1}
    assert successes(store) == {"a": second, "b": None}


def test_an_older_success_written_late_does_not_lower_it(store: Any) -> None:
    store.apply_config(parse_config('[jobs.a]\ncommand = ["true"]\n'), store.now())
    late = store.enqueue(NewRun("a", Trigger.MANUAL, not_before=store.now()))
    assert store.claim_run(late, "inst-1", "host-1") is not None
    newest = ended(store, "a", Status.SUCCEEDED)
    E = store.m.Execution
    store.m.Execution.update(status="succeeded", finished_at="2020-01-01 00:00:00").where(
        E.id == late
    ).execute()
    assert successes(store) == {"a": newest}


def test_upgrading_a_store_fills_it_from_the_history(store_url: str) -> None:
    store = open_store(store_url)
    store.apply_config(parse_config('[jobs.a]\ncommand = ["true"]\n'), store.now())
    success = ended(store, "a", Status.SUCCEEDED)
    ended(store, "a", Status.FAILED)
    # Make it what a jobd at schema version 4 left behind.
    if store.backend == "postgresql":
        store.db.execute_sql("DROP TRIGGER executions_success ON executions")
        store.db.execute_sql("DROP FUNCTION jobd_note_success()")
    else:
        store.db.execute_sql("DROP TRIGGER executions_success_insert")
        store.db.execute_sql("DROP TRIGGER executions_success_update")
    store.db.execute_sql("DROP TABLE job_successes")
    store.m.Schema.update(version=4).execute()
    store.close()

    store = open_store(store_url)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert successes(store) == {"a": success}
        later = ended(store, "a", Status.SUCCEEDED)
        assert successes(store) == {"a": later}
    finally:
        store.close()


def test_one_insert_of_many_finished_runs_notes_the_newest_success(store: Any) -> None:
    """A history copied in by one INSERT (on PostgreSQL a statement trigger, so
    that the job's row is not updated once per run) keeps the newest success."""
    store.apply_config(parse_config('[jobs.a]\ncommand = ["true"]\n'), store.now())
    rows = [
        {"job": "a", "trigger": "manual", "status": status, "queued_at": at,
         "not_before": at, "started_at": at, "finished_at": at}
        for status, at in (
            ("succeeded", "2026-01-01 00:00:01"),
            ("succeeded", "2026-01-01 00:00:03"),
            ("failed", "2026-01-01 00:00:05"),
            ("succeeded", "2026-01-01 00:00:02"),
        )
    ]  # fmt: skip
    store.m.Execution.insert_many(rows).execute()
    assert successes(store) == {"a": 1767225603.0}


def test_a_scrape_writes_the_times_in_seconds_to_the_millisecond(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement gives whole milliseconds; the text gives seconds, as before."""
    monkeypatch.setattr(jobd.observe.metrics, "_instance", None)  # no daemon in this process
    monkeypatch.setattr(jobd.observe.metrics, "_written", {})
    store.apply_config(parse_config('[jobs.a]\ncommand = ["true"]\n'), store.now())
    run_id = store.enqueue(NewRun("a", Trigger.MANUAL, not_before=store.now()))
    assert store.claim_run(run_id, "inst-1", "host-1") is not None
    store.m.Execution.update(status="succeeded", finished_at="2026-03-04 05:06:07.891234").where(
        store.m.Execution.id == run_id
    ).execute()
    text = jobd.observe.metrics.render(store).decode()
    assert 'jobd_job_last_success_timestamp_seconds{job_name="a"} 1772600767.891\n' in text
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["jobd_job_last_success_timestamp_seconds"] == 1772600767.891
    assert samples["jobd_job_paused"] == 0.0
