"""The named statements (jobd.store.queries): each one valid on both backends,
and their column lists the schema's and the model's."""

from __future__ import annotations

from typing import Any

import pytest

from jobd.core.model import Run
from jobd.core.records import RUN_KEYS
from jobd.store import queries as q
from jobd.store.queries import Query

STATEMENTS = {
    name: value
    for name, value in vars(q).items()
    if isinstance(value, Query) and name not in {"NOW_EXPRESSION"}
}
# Run by one dialect only (jobd.store.dialect).
POSTGRES_ONLY = {"ADVISORY_LOCK", "NOTIFY", "LOCK_JOBS", "RUNNING_JOBS_AND_CLOCK", "RELAXED_COMMIT"}
SQLITE_ONLY = {"DATA_VERSION"}
NOT_EXPLAINED = {"RELAXED_COMMIT"}  # a setting
# Where NULL would leave the type of an operand unknown.
PARAMS: dict[str, list[Any]] = {
    "LEASE_TAKE": ["a", "a", "a", "h", 1.0, "scheduler", "a"],
    "ADVISORY_LOCK": [1],
    "NOTIFY": ["jobd_test"],
    "LOCK_JOBS": [["a"]],
    "RUNNING_JOBS_AND_CLOCK": ["running", ["a"]],
}


def test_the_column_lists_are_the_schemas(store: Any) -> None:
    assert q.EXECUTION_COLUMNS[: len(RUN_KEYS)] == RUN_KEYS
    assert set(q.EXECUTION_COLUMNS) == set(Run.__dataclass_fields__)
    columns = {m._meta.table_name: set(m._meta.columns) for m in store.m.all()}
    assert set(q.EXECUTION_COLUMNS) == columns["executions"]
    assert set(q.INSTANCE_COLUMNS) == columns["instances"]
    assert set(q.TOKEN_COLUMNS) == columns["api_tokens"]
    assert set(q.LEASE_COLUMNS) == columns["leader_lease"]
    assert set(q.AUDIT_COLUMNS) == columns["audit_events"]
    assert set(q.NEW_RUN_COLUMNS) <= columns["executions"]
    # A new job's row names every column that has no database default.
    required = {f.column_name for f in store.m.Job._meta.sorted_fields if not f.null}
    assert required <= set(q.NEW_JOB_COLUMNS) <= columns["jobs"]


def _runnable(name: str, text: str, param: str) -> str:
    for marker in ("{in}", "{final}", "{moment}"):
        text = text.replace(marker, param)
    text = text.replace("{doomed}", f"id = {param}")
    if name == "END_RUNS":  # execute_values fills VALUES with rows of this template
        text = text.replace(f"VALUES {param}", "VALUES " + q.END_RUNS_ROW)
    row = ", ".join([param] * len(q.NEW_RUN_COLUMNS))
    return text.replace(f"VALUES {param} ON", f"VALUES ({row}) ON")


@pytest.mark.parametrize("name", sorted(set(STATEMENTS) - NOT_EXPLAINED))
def test_every_statement_is_valid_on_each_backend(store: Any, name: str) -> None:
    """Each statement is planned by the database (EXPLAIN): a misspelt column, or
    a syntax the other backend lacks, fails here rather than in a daemon."""
    if name in (POSTGRES_ONLY if store.backend == "sqlite" else SQLITE_ONLY):
        pytest.skip(f"not run on {store.backend}")
    text = store.dialect.sql(STATEMENTS[name])
    if name.startswith("DOOMED_OF_"):  # a fragment of the DOOMED_ statements
        text = f"SELECT id FROM executions WHERE {text}"
    elif name == "RUNS_PAGE":  # with every filter
        filters = [(key, ["a"] if "{in}" in f.sqlite else None) for key, f in q.RUN_FILTERS.items()]
        text, _params = q.runs_page(store.backend, q.EXECUTION_COLUMNS, filters, 10)
    text = _runnable(name, text, store.dialect.param)
    params = PARAMS.get(name, [None] * text.count(store.dialect.param))
    cursor = store.db.cursor()
    cursor.execute("EXPLAIN " + text, params)
    cursor.fetchall()
