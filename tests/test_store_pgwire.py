"""PostgreSQL transactions with held statements (jobd.store.pgwire), on the real
server: what is sent together, and that a transaction means what it meant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import peewee as pw
import pytest

from jobd.core.model import NewRun, Trigger
from jobd.store import Store, pgwire
from tests.conftest import open_store
from tests.test_store import config


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Store]:
    store = open_store(postgres_url)
    store.db.execute_sql("CREATE TABLE notes (id integer PRIMARY KEY, text text)")
    yield store
    store.close()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The messages sent to the server, one per round trip."""
    sent: list[str] = []
    execute = pgwire.HoldingCursor.execute

    def counting(self: Any, query: Any, vars: Any = None) -> None:
        held = b";\n".join(self.connection.held).decode()
        sent.append(f"{held};\n{query}" if held else str(query))
        execute(self, query, vars)

    monkeypatch.setattr(pgwire.HoldingCursor, "execute", counting)
    return sent


def notes(store: Store) -> list[tuple]:
    return store.db.execute_sql("SELECT id, text FROM notes ORDER BY id").fetchall()


def test_begin_and_held_writes_ride_on_the_statements_that_need_an_answer(
    pg: Store, round_trips: list[str]
) -> None:
    pg.db.execute_sql("SELECT 1")  # the connection has just answered
    round_trips.clear()
    with pg.db.atomic():
        pg.db.execute_sql("INSERT INTO notes VALUES (1, 'first')")
        pg.db.hold("INSERT INTO notes VALUES (%s, %s)", [(2, "second"), (3, "third")])
    assert len(round_trips) == 2
    assert round_trips[0].startswith("BEGIN;")
    assert round_trips[1].endswith("COMMIT")
    assert notes(pg) == [(1, "first"), (2, "second"), (3, "third")]


def test_a_held_statement_runs_before_the_next_one_in_its_transaction(pg: Store) -> None:
    with pg.db.atomic():
        pg.db.hold("INSERT INTO notes VALUES (%s, %s)", [(1, "50% done")])
        # The held literal's % is not taken for a parameter of this statement.
        (count,) = pg.db.execute_sql(
            "SELECT count(*) FROM notes WHERE text LIKE %s", ("50%%",)
        ).fetchone()
    assert count == 1


def test_a_transaction_that_sent_nothing_costs_no_round_trip(
    pg: Store, round_trips: list[str]
) -> None:
    pg.db.execute_sql("SELECT 1")
    round_trips.clear()
    with pg.db.atomic():
        pass
    with pytest.raises(RuntimeError), pg.db.atomic():
        pg.db.hold("INSERT INTO notes VALUES (%s, %s)", [(1, "never")])
        raise RuntimeError("changed my mind")
    assert round_trips == []
    assert notes(pg) == []


def test_an_error_in_a_held_write_undoes_the_whole_transaction(pg: Store) -> None:
    with pg.db.atomic():
        pg.db.execute_sql("INSERT INTO notes VALUES (1, 'kept')")
    with pytest.raises(pw.IntegrityError), pg.db.atomic():
        pg.db.execute_sql("INSERT INTO notes VALUES (2, 'undone')")
        pg.db.hold("INSERT INTO notes VALUES (%s, %s)", [(1, "duplicate")])
    assert notes(pg) == [(1, "kept")]
    with pg.db.atomic():  # the connection is usable again
        pg.db.execute_sql("INSERT INTO notes VALUES (3, 'after')")
    assert notes(pg) == [(1, "kept"), (3, "after")]


def test_holding_needs_a_transaction(pg: Store) -> None:
    with pytest.raises(pw.InterfaceError):
        pg.db.hold("INSERT INTO notes VALUES (1, 'x')")


def _terminate(store: Store, admin: Any) -> None:
    (pid,) = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_an_idle_connection_the_server_dropped_is_replaced_before_a_transaction(
    pg: Store, postgres_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _terminate(pg, postgres_admin)
    monkeypatch.setattr(pgwire, "PROVEN_ALIVE_S", 0.0)  # as after a second of quiet
    with pg.db.atomic():
        pg.db.execute_sql("INSERT INTO notes VALUES (1, 'after a reconnect')")
    assert notes(pg) == [(1, "after a reconnect")]


def test_a_connection_dropped_right_after_answering_fails_one_transaction_only(
    pg: Store, postgres_admin: Any
) -> None:
    _terminate(pg, postgres_admin)
    with pytest.raises(pw.OperationalError), pg.db.atomic():
        pg.db.execute_sql("INSERT INTO notes VALUES (1, 'lost with the connection')")
    pg.reset_connection()
    with pg.db.atomic():
        pg.db.execute_sql("INSERT INTO notes VALUES (2, 'on a new connection')")
    assert notes(pg) == [(2, "on a new connection")]


def test_a_fire_does_not_wait_for_the_disk_and_leaves_the_connection_as_it_was(
    pg: Store, round_trips: list[str]
) -> None:
    pg.apply_config(config('[jobs.a]\nschedule = "* * * * *"\ncommand = ["true"]\n'), pg.now())
    now = pg.now()
    slot = now.replace(second=0, microsecond=0)
    fired = NewRun(job="a", trigger=Trigger.SCHEDULE, not_before=now, scheduled_for=slot)
    assert pg.record_fires([fired], {"a": (slot + timedelta(minutes=1), slot)}) == 1
    assert any("SET LOCAL synchronous_commit = off" in trip for trip in round_trips)
    (setting,) = pg.db.execute_sql("SHOW synchronous_commit").fetchone()
    assert setting == "on"


def test_a_claim_in_the_tick_of_its_fire_does_not_read_the_spec_again(
    pg: Store, round_trips: list[str]
) -> None:
    pg.apply_config(config('[jobs.a]\nschedule = "* * * * *"\ncommand = ["true"]\n'), pg.now())

    def claim_trips(fired_first: bool) -> tuple[int, Any]:
        pg.specs.forget()
        if fired_first:
            pg.due_for_firing(pg.now() + timedelta(minutes=2))
        pg.enqueue(NewRun(job="a", trigger=Trigger.MANUAL, not_before=pg.now()))
        round_trips.clear()
        [(_run, spec)] = pg.claim("i1", "h", 1)
        return len(round_trips), spec

    cold, cold_spec = claim_trips(fired_first=False)
    pg.db.execute_sql("UPDATE executions SET status = 'succeeded'")
    warm, warm_spec = claim_trips(fired_first=True)
    assert warm == cold - 1
    assert warm_spec == cold_spec
    assert not any("SELECT name, spec FROM jobs" in trip for trip in round_trips)
