"""The store contract (SPEC section 3), on SQLite and PostgreSQL alike.

Every test taking `store` or `store_url` runs on both backends; each gets a fresh
SQLite file in tmp_path or a fresh PostgreSQL schema.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from jobd.core.config.parse import parse_config, parse_job
from jobd.core.model import Config, NewRun, Outcome, Source, Status, Trigger
from jobd.errors import ConfigError, ExitCode, StoreTooNew, StoreUnavailable
from jobd.store import Store, mask_url
from jobd.store.connect import connect
from jobd.store.migrations import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import finish_run, open_store, wait_for, write_output

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TABLES = {"jobd_schema", "jobs", "executions", "leader_lease", "instances", "audit_events"}


def config(text: str) -> Config:
    return parse_config(text, "jobd.toml", {})


def jobs_config(**schedules: str | None) -> Config:
    """A config with one `command` job per keyword; None means no schedule."""
    parts = []
    for name, schedule in schedules.items():
        line = f'schedule = "{schedule}"\n' if schedule else ""
        parts.append(f'[jobs.{name}]\n{line}command = ["true"]\n')
    return config("".join(parts))


def manual(job: str, at: datetime | None = None) -> NewRun:
    return NewRun(job=job, trigger=Trigger.MANUAL, not_before=at or NOW)


def fire(job: str, slot: datetime) -> NewRun:
    return NewRun(job=job, trigger=Trigger.SCHEDULE, not_before=slot, scheduled_for=slot)


def add_jobs(store: Store, text: str) -> None:
    store.apply_config(config(text), store.now())


def counts(store: Store) -> dict[str, int]:
    return {model._meta.table_name: model.select().count() for model in store.m.all()}


def versions(store: Store) -> list[tuple[int, int]]:
    schema = store.m.Schema
    return [(row.id, row.version) for row in schema.select().order_by(schema.id)]


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) in `count` threads started together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def opened(store_url: str) -> Iterator[Callable[[], Store]]:
    """Opens more stores on the same URL. peewee connections are per thread, so a
    thread closes its own; the ones left open here are closed at the end."""
    stores: list[Store] = []
    lock = threading.Lock()

    def open_one() -> Store:
        store = open_store(store_url)
        with lock:
            stores.append(store)
        return store

    yield open_one
    for store in stores:
        store.close()


# -- schema and migrations ------------------------------------------------------


def test_migrations_create_the_current_schema_version(store: Store) -> None:
    assert SCHEMA_VERSION == len(MIGRATIONS) == 6
    assert [version for _, version in versions(store)] == [SCHEMA_VERSION]
    assert set(store.db.get_tables()) >= TABLES
    assert store.schema_version == SCHEMA_VERSION


def test_reopening_is_a_no_op(store_url: str, store: Store) -> None:
    add_jobs(store, '[jobs.a]\nschedule = "@hourly"\ncommand = ["true"]\n')
    store.enqueue(manual("a"))
    before = (versions(store), counts(store))
    store.close()
    again = open_store(store_url)
    try:
        assert again.migrate() == SCHEMA_VERSION
        assert (versions(again), counts(again)) == before
    finally:
        again.close()


def test_concurrent_first_opens_migrate_once(store_url: str, opened: Callable[[], Store]) -> None:
    if store_url.startswith("sqlite"):
        # Only the migration race here: the file is already in WAL mode, with no
        # tables yet. Racing the switch to WAL is a known bug, see
        # test_opening_a_new_sqlite_store_waits_for_a_writer.
        connect(store_url).close()

    def open_and_look(_: int) -> tuple[list[tuple[int, int]], list[Any]]:
        mine = opened()
        seen = (versions(mine), mine.jobs())
        mine.close()
        return seen

    results = in_threads(6, open_and_look)
    assert all(seen == results[0] for seen in results)
    schema_rows, jobs = results[0]
    assert [version for _, version in schema_rows] == [SCHEMA_VERSION] and jobs == []


def test_a_version_2_store_loses_its_column_limits(store_url: str, store: Store) -> None:
    """Version 2 stores on PostgreSQL had varchar(64) instance ids and varchar(200)
    schedules, which a valid config exceeded; version 3 makes them text, keeping rows."""
    add_jobs(store, '[jobs.a]\nschedule = "@hourly"\ncommand = ["true"]\n')
    if store_url.startswith("postgresql"):
        for table, column, size in (("jobs", "schedule", 200), ("instances", "id", 64)):
            store.db.execute_sql(
                f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE varchar({size})'
            )
    store.m.Schema.update(version=2).execute()
    store.close()
    again = open_store(store_url)
    try:
        assert again.m.Schema.get().version == SCHEMA_VERSION
        long_id = "h" * 56 + "-123456-abcdef"
        again.register_instance(long_id, "h" * 56, 123456, "0")
        long_schedule = ",".join(map(str, range(60))) + " " + ",".join(map(str, range(24)))
        again.m.Job.update(schedule=long_schedule + " * * *").execute()
        assert [i["id"] for i in again.instances()] == [long_id]
        assert again.job("a").spec.name == "a"
    finally:
        again.close()


def test_a_newer_store_is_refused_and_not_modified(store_url: str, store: Store) -> None:
    add_jobs(store, '[jobs.a]\nschedule = "@hourly"\ncommand = ["true"]\n')
    store.enqueue(manual("a"))
    store.m.Schema.update(version=SCHEMA_VERSION + 1).execute()
    before = (versions(store), counts(store), sorted(store.db.get_tables()))
    store.close()

    with pytest.raises(StoreTooNew) as info:
        open_store(store_url)
    message = one_line(info.value)
    assert "newer" in message and "not modified" in message
    assert info.value.exit_code == ExitCode.UNAVAILABLE == 69

    # Look with a store that does not migrate: nothing moved.
    check = open_store(store_url, migrate_schema=False)
    try:
        assert (versions(check), counts(check), sorted(check.db.get_tables())) == before
    finally:
        check.close()


def test_store_too_new_is_a_store_unavailable() -> None:
    assert issubclass(StoreTooNew, StoreUnavailable)
    assert StoreTooNew("x").exit_code == 69


def test_store_clock_is_aware_utc_and_close_to_ours(store: Store) -> None:
    now = store.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


# -- SQLite specifics ------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "jobd.db"
    old = os.umask(0o022)  # a permissive umask must not leak into the store's files
    try:
        store = open_store(f"sqlite:///{path}")
        store.enqueue(manual("a"))
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert store.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.close()
        assert not Path(f"{path}-wal").exists()  # checkpointed away by the last close
        # A later reconnect (outside open_store's umask) recreates them, still private.
        store.enqueue(manual("a"))
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        store.close()
    finally:
        os.umask(old)


def test_opening_a_new_sqlite_store_waits_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "jobd.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    # The writer commits a moment later; the open should wait for it, not fail.
    timer = threading.Timer(0.3, writer.execute, args=("COMMIT",))
    timer.start()
    try:
        open_store(f"sqlite:///{path}").close()
    finally:
        timer.join()
        writer.close()


@pytest.mark.parametrize(
    "content",
    [b"hello, I am a text file\n", os.urandom(8192), b"SQLite format 3\x00" + os.urandom(8176)],
    ids=["text", "random", "bad pages"],
)
def test_corrupt_sqlite_file_is_unavailable_and_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "jobd.db"
    path.write_bytes(content)
    with pytest.raises(StoreUnavailable) as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in one_line(info.value)
    assert info.value.exit_code == 69
    assert path.read_bytes() == content


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'ada')")
    conn.close()
    try:
        with pytest.raises(StoreUnavailable) as info:
            open_store(f"sqlite:///{path}").close()
        one_line(info.value)
    finally:
        with sqlite3.connect(path) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
    assert tables == {"users"}


def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(StoreUnavailable) as info:
        open_store(f"sqlite:///{missing / 'jobd.db'}")
    message = one_line(info.value)
    assert "does not exist" in message and str(missing) in message
    assert info.value.exit_code == 69
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("url", ["mysql://db/jobd", "sqlite:/relative.db", "host=db dbname=x"])
def test_unsupported_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert "unsupported store URL" in one_line(info.value)
    assert info.value.exit_code == 2


def test_unreachable_postgres_is_unavailable_and_masks_the_password() -> None:
    with pytest.raises(StoreUnavailable) as info:
        open_store("postgresql://postgres:s3cret@127.0.0.1:1/test?connect_timeout=2")
    message = one_line(info.value)
    assert "s3cret" not in message and "postgres:***@127.0.0.1:1" in message
    assert info.value.exit_code == 69


# -- mask_url --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://jobd:s3cret@db:5432/jobd", "postgresql://jobd:***@db:5432/jobd"),
        ("postgres://jobd:s3cret@db/jobd?sslmode=require", "postgres://jobd:***@db/jobd?sslmode=require"),
        ("postgresql://jobd:p%40ss@db/jobd", "postgresql://jobd:***@db/jobd"),
        ("postgresql://jobd:s3cret@with@db/jobd", "postgresql://jobd:***@db/jobd"),
        ("postgresql://jobd:@db/jobd", "postgresql://jobd:***@db/jobd"),
        ("postgresql://jobd@db/jobd", "postgresql://jobd@db/jobd"),
        ("postgresql://db/jobd", "postgresql://db/jobd"),
        ("sqlite:////var/lib/jobd/jobd.db", "sqlite:////var/lib/jobd/jobd.db"),
        # Malformed ones are shown in errors: masked all the same.
        ("postgresql://u:S3cret@[::1/db", "postgresql://u:***@[::1/db"),
        ("postgresql://u:S3/cr@et@db:abc/db", "postgresql://u:***@db:abc/db"),
    ],
)  # fmt: skip
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    ["postgresql://jobd@db/jobd?sslmode=require&password=s3cret", "host=db password=s3cret"],
    ids=["query", "dsn"],
)
def test_mask_url_hides_every_password(url: str) -> None:
    assert "s3cret" not in mask_url(url)
    with pytest.raises((StoreUnavailable, ConfigError)) as info:
        open_store(url.replace("@db/", "@127.0.0.1:1/"))
    assert "s3cret" not in str(info.value)


# -- applying the config ---------------------------------------------------------


def test_apply_inserts_jobs_with_their_first_slot(store: Store) -> None:
    cfg = config(
        '[jobd]\ntimezone = "Europe/Berlin"\n'
        '[jobs.hourly]\nschedule = "0 * * * *"\ncommand = ["true"]\n'
        '[jobs.nightly]\nschedule = "30 2 * * *"\nshell = "true"\n'
        '[jobs.manual]\ncommand = ["true"]\n'
        '[jobs.off]\nschedule = "* * * * *"\ncommand = ["true"]\nenabled = false\n'
    )
    report = store.apply_config(cfg, NOW)
    assert report.added == ("hourly", "nightly", "manual", "off")
    assert (report.updated, report.removed, report.changed) == ((), (), True)
    records = {r.name: r for r in store.jobs()}
    assert list(records) == ["hourly", "manual", "nightly", "off"]  # by name
    assert records["hourly"].next_fire_at == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert records["nightly"].next_fire_at == datetime(2026, 1, 2, 1, 30, tzinfo=UTC)
    assert records["manual"].next_fire_at is None
    assert records["off"].next_fire_at is None
    for name, record in records.items():
        assert record.spec == cfg.jobs[name]
        assert (record.source, record.paused, record.removed) == (Source.FILE, False, False)
    assert [r.name for r in store.due_for_firing(NOW + timedelta(days=2)).jobs] == [
        "hourly",
        "nightly",
    ]


def test_apply_same_config_again_changes_nothing(store: Store) -> None:
    cfg = jobs_config(a="@hourly", b=None)
    store.apply_config(cfg, NOW)
    before = store.jobs()
    report = store.apply_config(cfg, NOW + timedelta(hours=5))
    assert not report.changed
    assert store.jobs() == before


def test_unchanged_schedule_keeps_its_next_fire(store: Store) -> None:
    store.apply_config(jobs_config(a="0 * * * *"), NOW)
    later = NOW + timedelta(hours=3, minutes=10)
    cfg = config('[jobs.a]\nschedule = "0 * * * *"\ncommand = ["true"]\ndescription = "new"\n')
    report = store.apply_config(cfg, later)
    assert report.updated == ("a",)
    record = store.job("a")
    assert record is not None and record.spec.description == "new"
    # Still the slot it had: overdue now, so it is not lost to the reload.
    assert record.next_fire_at == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "changed",
    [
        '[jobs.a]\nschedule = "30 * * * *"\ncommand = ["true"]\n',
        '[jobs.a]\nschedule = "0 * * * *"\ncommand = ["true"]\ntimezone = "Asia/Kolkata"\n',
    ],
    ids=["schedule", "timezone"],
)
def test_changed_timing_moves_to_the_next_slot_after_now(store: Store, changed: str) -> None:
    store.apply_config(jobs_config(a="0 * * * *"), NOW)
    later = NOW + timedelta(hours=3, minutes=10)  # 15:10Z, 20:40 in Kolkata
    store.apply_config(config(changed), later)
    record = store.job("a")
    assert record is not None
    assert record.next_fire_at == datetime(2026, 1, 1, 15, 30, tzinfo=UTC)


def test_jobs_gone_from_the_file_are_removed_but_keep_history(store: Store) -> None:
    store.apply_config(jobs_config(a="* * * * *", b="* * * * *"), NOW)
    run_id = store.enqueue(manual("b"))
    store.record_fires([fire("b", NOW + timedelta(minutes=1))], {})
    report = store.apply_config(jobs_config(a="* * * * *"), NOW + timedelta(minutes=5))
    assert report.removed == ("b",)
    assert [r.name for r in store.jobs()] == ["a"]
    gone = store.job("b")
    assert gone is not None and gone.removed and gone.next_fire_at is None
    assert [r.name for r in store.jobs(include_removed=True)] == ["a", "b"]
    assert len(store.executions(job="b")) == 2
    assert store.execution(run_id) is not None
    far = NOW + timedelta(days=400)
    assert [r.name for r in store.due_for_firing(far).jobs] == ["a"]
    assert store.next_fire_at() == store.job("a").next_fire_at  # type: ignore[union-attr]
    # Removing again is not reported again.
    assert not store.apply_config(jobs_config(a="* * * * *"), NOW).changed


def test_a_removed_job_comes_back_at_its_next_slot(store: Store) -> None:
    store.apply_config(jobs_config(a="0 * * * *", b="0 * * * *"), NOW)
    store.apply_config(jobs_config(a="0 * * * *"), NOW)
    later = NOW + timedelta(hours=5, minutes=1)
    report = store.apply_config(jobs_config(a="0 * * * *", b="0 * * * *"), later)
    assert report.updated == ("b",) and report.added == ()
    back = store.job("b")
    assert back is not None and not back.removed
    assert back.next_fire_at == datetime(2026, 1, 1, 18, 0, tzinfo=UTC)


def cli_spec(name: str, schedule: str = "@daily") -> Any:
    raw = {"schedule": schedule, "command": ["echo", "from the cli"]}
    return parse_job(name, raw, "(cli)", {}, "UTC", Source.CLI)


def test_apply_never_touches_cli_jobs(store: Store) -> None:
    assert store.upsert_cli_job(cli_spec("adhoc"), NOW) is True
    assert store.upsert_cli_job(cli_spec("adhoc", "@hourly"), NOW) is False
    before = store.job("adhoc")
    assert before is not None and before.source is Source.CLI
    assert before.spec.schedule == "@hourly"

    # Not in the file: not removed.
    report = store.apply_config(jobs_config(a="@daily"), NOW + timedelta(hours=1))
    assert "adhoc" not in report.removed
    # In the file under the same name: the file does not take it over.
    report = store.apply_config(jobs_config(a="@daily", adhoc="* * * * *"), NOW)
    assert "adhoc" not in report.added + report.updated
    assert store.job("adhoc") == before


def test_pause_survives_a_config_change(store: Store) -> None:
    store.apply_config(jobs_config(a="* * * * *"), NOW)
    store.set_paused("a", True, NOW)
    store.apply_config(jobs_config(a="*/5 * * * *"), NOW)
    record = store.job("a")
    assert record is not None and record.paused
    assert store.due_for_firing(NOW + timedelta(days=1)).jobs == []


# -- fires, runs, claims -----------------------------------------------------------


def test_replace_flags_the_running_run_when_a_fire_is_recorded(store: Store) -> None:
    store.apply_config(overlap_config("replace"), NOW)
    now = store.now()
    running = store.enqueue(manual("a", now))
    store.claim("i1", "h", 1)
    slot = NOW + timedelta(minutes=1)
    assert store.record_fires([fire("a", slot)], {}, cancel_jobs=["a"]) == 1
    assert store.execution(running).cancel_requested  # type: ignore[union-attr]


def test_due_for_firing_tells_which_due_jobs_are_busy_and_the_store_clock(store: Store) -> None:
    store.apply_config(jobs_config(busy="* * * * *", idle="* * * * *", later="0 0 1 1 *"), NOW)
    store.enqueue(manual("busy", store.now()))
    before = store.now()
    due = store.due_for_firing(NOW + timedelta(minutes=2))
    assert sorted(r.name for r in due.jobs) == ["busy", "idle"]
    assert due.active == {"busy"}
    assert due.store_now is not None and before <= due.store_now <= store.now()
    nothing = store.due_for_firing(NOW - timedelta(days=1))
    assert (nothing.jobs, nothing.active, nothing.store_now) == ([], set(), None)


def test_a_claim_told_not_to_probe_finds_nothing_when_nothing_is_due(store: Store) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    store.enqueue(manual("a", store.now() + timedelta(hours=1)))
    assert store.claim("i1", "h", 10, probe=False) == []
    due = store.enqueue(manual("a", store.now()))
    assert [run.id for run, _spec in store.claim("i1", "h", 10, probe=False)] == [due]


def test_a_slot_is_recorded_once(store: Store) -> None:
    store.apply_config(jobs_config(a="* * * * *"), NOW)
    slot, following = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    advance = {"a": (following, slot)}
    assert store.record_fires([fire("a", slot)], advance) == 1
    assert store.record_fires([fire("a", slot)], advance) == 0  # a second leader
    assert store.record_fires([fire("a", slot), fire("a", following)], {}) == 1
    slots = [r.scheduled_for for r in store.executions(job="a")]
    assert sorted(slots) == [slot, following]  # type: ignore[type-var]
    record = store.job("a")
    assert record is not None
    assert (record.next_fire_at, record.last_fire_at) == (following, slot)


def test_manual_runs_are_not_limited_by_the_slot_key(store: Store) -> None:
    store.apply_config(jobs_config(a=None), NOW)
    ids = [store.enqueue(manual("a")) for _ in range(3)]
    assert len(set(ids)) == 3 and len(store.executions(job="a")) == 3


def test_recorded_run_fields(store: Store) -> None:
    store.apply_config(jobs_config(a=None), NOW)
    berlin_noon = datetime.fromisoformat("2026-01-01T13:00:00+01:00")
    run_id = store.enqueue(
        NewRun(job="a", trigger=Trigger.MANUAL, not_before=berlin_noon, triggered_by="ada@host")
    )
    run = store.execution(run_id)
    assert run is not None
    assert (run.job, run.trigger, run.status, run.attempt) == (
        "a",
        Trigger.MANUAL,
        Status.QUEUED,
        1,
    )
    assert run.triggered_by == "ada@host"
    assert run.scheduled_for is None and run.started_at is None
    assert run.queued_at.tzinfo is not None and run.queued_at.utcoffset() == timedelta(0)
    # not_before is never earlier than the moment it was queued.
    assert run.not_before == max(berlin_noon, run.queued_at)


def test_executions_filters_newest_first(store: Store) -> None:
    store.apply_config(jobs_config(a=None, b=None), NOW)
    ids = [store.enqueue(manual(job)) for job in "abab"]
    store.request_cancel(ids[0])
    assert [r.id for r in store.executions()] == ids[::-1]
    assert [r.id for r in store.executions(job="a")] == [ids[2], ids[0]]
    assert [r.id for r in store.executions(status=["cancelled"])] == [ids[0]]
    assert [r.id for r in store.executions(limit=2)] == [ids[3], ids[2]]
    assert store.queue_depth() == 3
    assert store.last_statuses(["a", "b", "zz"]) == {"a": Status.QUEUED, "b": Status.QUEUED}


def overlap_config(overlap: str) -> Config:
    return config(f'[jobs.a]\ncommand = ["true"]\noverlap = "{overlap}"\n')


def test_claim_moves_a_due_run_to_running(store: Store) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    now = store.now()
    due = store.enqueue(manual("a", now))
    later = store.enqueue(manual("a", now + timedelta(hours=1)))
    claimed = store.claim("i1", "host-1", 10)
    assert [(run.id, spec.name) for run, spec in claimed] == [(due, "a")]
    run = store.execution(due)
    assert run is not None
    assert (run.status, run.instance, run.host) == (Status.RUNNING, "i1", "host-1")
    assert run.started_at is not None
    assert store.claim("i2", "host-2", 10) == []
    assert store.execution(later).status is Status.QUEUED  # type: ignore[union-attr]
    assert store.claim("i1", "host-1", 0) == []


def test_each_queued_run_is_claimed_by_exactly_one_claimer(
    store: Store, opened: Callable[[], Store]
) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    now = store.now()
    ids = {store.enqueue(manual("a", now)) for _ in range(60)}

    def claim_all(index: int) -> list[int]:
        mine = opened()
        got: list[int] = []
        while batch := mine.claim(f"i{index}", f"host-{index}", 3):
            got.extend(run.id for run, _ in batch)
        mine.close()
        return got

    per_claimer = in_threads(6, claim_all)
    claimed = Counter(run_id for got in per_claimer for run_id in got)
    assert set(claimed) == ids
    assert max(claimed.values()) == 1
    rows = store.executions(limit=None)
    owners = {r.id: r.instance for r in rows}
    for index, got in enumerate(per_claimer):
        assert all(owners[run_id] == f"i{index}" for run_id in got)
    assert {r.status for r in rows} == {Status.RUNNING}


@pytest.mark.parametrize("overlap", ["skip", "queue", "replace"])
def test_exclusive_jobs_never_run_twice_at_once(
    store: Store, opened: Callable[[], Store], overlap: str
) -> None:
    store.apply_config(overlap_config(overlap), NOW)
    now = store.now()
    for _ in range(10):
        store.enqueue(manual("a", now))

    def claim_once(index: int) -> tuple[str, list[int]]:
        instance, mine = f"i{index}", opened()
        got = [run.id for run, _ in mine.claim(instance, "h", 5)]
        mine.close()
        return instance, got

    winners = [(instance, got) for instance, got in in_threads(6, claim_once) if got]
    assert len(winners) == 1 and len(winners[0][1]) == 1
    owner, (run_id,) = winners[0]
    assert store.claim("late", "h", 5) == []
    # Once it ends, the next queued run may start, still one at a time.
    assert finish_run(store, run_id, owner, Outcome(Status.SUCCEEDED)) is True
    assert len(store.claim("late", "h", 5)) == 1
    assert store.claim("later", "h", 5) == []


def test_finish_only_by_the_owner_while_running(store: Store) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    now = store.now()
    first = store.enqueue(manual("a", now))
    second = store.enqueue(manual("a", now))
    assert {run.id for run, _ in store.claim("owner", "h", 2)} == {first, second}

    assert finish_run(store, first, "someone-else", Outcome(Status.SUCCEEDED)) is False
    assert store.execution(first).status is Status.RUNNING  # type: ignore[union-attr]

    retry = NewRun(job="a", trigger=Trigger.RETRY, not_before=now, attempt=2, retry_of=first)
    outcome = Outcome(Status.FAILED, exit_code=3, error="exit status 3")
    assert finish_run(store, first, "owner", outcome, follow_ups=[retry]) is True
    done = store.execution(first)
    assert done is not None
    assert (done.status, done.exit_code, done.error) == (Status.FAILED, 3, "exit status 3")
    assert done.finished_at is not None and done.duration_s is not None and done.duration_s >= 0
    follow = store.executions(job="a", status=["queued"])
    assert [(r.trigger, r.attempt, r.retry_of) for r in follow] == [(Trigger.RETRY, 2, first)]
    assert finish_run(store, first, "owner", Outcome(Status.SUCCEEDED)) is False  # already ended
    assert store.execution(first).status is Status.FAILED  # type: ignore[union-attr]

    # A run marked abandoned keeps that outcome when its instance reports late.
    lost = store.reap_lost_runs(30, lambda run, outcome, spec: [], dead_instances=["owner"])
    assert [r.id for r in lost] == [second]
    assert finish_run(store, second, "owner", Outcome(Status.SUCCEEDED)) is False
    late = store.execution(second)
    assert late is not None
    assert late.status is Status.ABANDONED and "instance owner" in (late.error or "")
    assert finish_run(store, 999_999, "owner", Outcome(Status.SUCCEEDED)) is False


def test_abandoned_runs_get_their_retries(store: Store) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    now = store.now()
    run_id = store.enqueue(manual("a", now))
    store.claim("gone", "h", 1)
    retry = NewRun(job="a", trigger=Trigger.RETRY, not_before=now, attempt=2, retry_of=run_id)
    store.reap_lost_runs(30, lambda run, outcome, spec: [retry], dead_instances=["gone"])
    queued = store.executions(job="a", status=["queued"])
    assert [(r.trigger, r.attempt, r.retry_of) for r in queued] == [(Trigger.RETRY, 2, run_id)]


def test_cancel(store: Store) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    now = store.now()
    queued = store.enqueue(manual("a", now + timedelta(hours=1)))
    running = store.enqueue(manual("a", now))
    store.claim("i1", "h", 1)

    assert store.request_cancel(queued) is Status.QUEUED
    cancelled = store.execution(queued)
    assert cancelled is not None
    assert cancelled.status is Status.CANCELLED and cancelled.finished_at is not None
    assert store.claim("i1", "h", 5) == []

    assert store.request_cancel(running) is Status.RUNNING
    flagged = store.execution(running)
    assert flagged is not None and flagged.status is Status.RUNNING and flagged.cancel_requested
    assert set(store.runs_to_stop("i1", [running])) == {running}

    assert store.request_cancel(queued) is Status.CANCELLED  # already ended: unchanged
    with pytest.raises(KeyError):
        store.request_cancel(999_999)


def test_write_log_keeps_the_tail(store: Store) -> None:
    store.apply_config(overlap_config("allow"), NOW)
    run_id = store.enqueue(manual("a", store.now()))
    store.claim("i1", "h", 1)
    write_output(store, run_id, "line 2\nline 3\n", 21)
    run = store.executions(job="a", with_log=True)[0]
    assert (run.log, run.log_bytes) == ("line 2\nline 3\n", 21)
    assert store.executions(job="a")[0].log == ""  # not read unless asked


# -- audit -------------------------------------------------------------------------


def test_audit_events_newest_first(store: Store) -> None:
    before = store.now()
    store.audit("trigger", "ada@host-1", "backup", {"run": 7, "reason": "manual"})
    store.audit("pause", "bob@host-2", "backup")
    store.audit("prune", "cron@host-1")
    events = store.audit_events(limit=2)
    assert [(e["action"], e["actor"], e["target"], e["detail"]) for e in events] == [
        ("prune", "cron@host-1", None, None),
        ("pause", "bob@host-2", "backup", None),
    ]
    everything = store.audit_events()
    assert everything[-1]["detail"] == {"reason": "manual", "run": 7}
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    for event in everything:
        assert event["at"].utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= event["at"] <= store.now() + timedelta(seconds=1)


# -- concurrency -------------------------------------------------------------------


def test_concurrent_writers_never_see_database_is_locked(
    store: Store, opened: Callable[[], Store]
) -> None:
    store.apply_config(jobs_config(a=None), NOW)

    def enqueue_50(index: int) -> int:
        mine = opened()
        for _ in range(50):
            mine.enqueue(manual("a"))
        mine.close()
        return index

    try:
        in_threads(8, enqueue_50)
    except (pw.OperationalError, sqlite3.OperationalError) as exc:  # pragma: no cover
        pytest.fail(f"a writer failed: {exc}")
    assert store.m.Execution.select().count() == 400
    assert len({r.id for r in store.executions(limit=None)}) == 400


def test_daemons_applying_the_same_config_at_once(
    store: Store, opened: Callable[[], Store], store_url: str, request: pytest.FixtureRequest
) -> None:
    cfg = jobs_config(**{f"j{i}": "@hourly" for i in range(30)})
    now = store.now()

    def apply(_: int) -> tuple[str, ...]:
        mine = opened()
        report = mine.apply_config(cfg, now)
        mine.close()
        return report.added

    added = in_threads(6, apply)
    assert sorted(name for names in added for name in names) == sorted(cfg.jobs)
    assert [r.name for r in store.jobs()] == sorted(cfg.jobs)


# -- PostgreSQL interleavings ------------------------------------------------------
# Another connection holds a row lock while the call under test runs in a thread;
# once that thread waits on the lock, the holder commits its change. This makes
# the races of several hosts deterministic.


def lock_waiting(admin: Any, pid: int) -> bool:
    with admin.cursor() as cur:
        cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
        row = cur.fetchone()
    return bool(row) and row[0] == "Lock"


def start_blocked(admin: Any, store: Store, call: Callable[[], Any]) -> Callable[[], Any]:
    """Start call() in a thread and return once it waits on a lock; the returned
    function joins it and returns its result (or raises its error)."""
    box: dict[str, Any] = {}

    def target() -> None:
        # peewee connections are per thread: this thread's backend is the one to watch.
        box["pid"] = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        try:
            box["value"] = call()
        except Exception as exc:
            box["error"] = exc
        finally:
            store.close()

    thread = threading.Thread(target=target)
    thread.start()
    wait_for(lambda: ("pid" in box and lock_waiting(admin, box["pid"])) or "error" in box)

    def join() -> Any:
        thread.join(timeout=30)
        assert not thread.is_alive()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join


@pytest.fixture
def pg_pair(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    first, second = open_store(postgres_url), open_store(postgres_url)
    yield first, second
    first.close()
    second.close()


def test_apply_config_racing_another_daemon_on_postgresql(
    postgres_admin: Any, pg_pair: tuple[Store, Store]
) -> None:
    holder, other = pg_pair
    cfg = jobs_config(a="@hourly", b="@daily")
    now = holder.now()
    with holder.atomic():
        holder.apply_config(cfg, now)
        join = start_blocked(postgres_admin, other, lambda: other.apply_config(cfg, now))
    join()
    assert [r.name for r in holder.jobs()] == ["a", "b"]


def test_finish_racing_abandon_on_postgresql(
    postgres_admin: Any, pg_pair: tuple[Store, Store]
) -> None:
    holder, other = pg_pair
    holder.apply_config(overlap_config("allow"), NOW)
    run_id = holder.enqueue(manual("a", holder.now()))
    holder.claim("owner", "h", 1)
    E = holder.m.Execution
    with holder.atomic():
        list(E.select(E.id).where(E.id == run_id).for_update())
        join = start_blocked(
            postgres_admin,
            other,
            lambda: finish_run(other, run_id, "owner", Outcome(Status.SUCCEEDED)),
        )
        holder.reap_lost_runs(30, lambda run, outcome, spec: [], dead_instances=["owner"])
    finished = join()
    assert holder.execution(run_id).status is Status.ABANDONED  # type: ignore[union-attr]
    assert finished is False


def test_cancel_racing_claim_on_postgresql(
    postgres_admin: Any, pg_pair: tuple[Store, Store]
) -> None:
    holder, other = pg_pair
    holder.apply_config(overlap_config("allow"), NOW)
    run_id = holder.enqueue(manual("a", holder.now()))
    with holder.atomic():
        assert [run.id for run, _ in holder.claim("owner", "h", 1)] == [run_id]
        join = start_blocked(postgres_admin, other, lambda: other.request_cancel(run_id))
    seen = join()
    run = holder.execution(run_id)
    assert run is not None
    # Either the cancel saw the claim (running: flag it) or it came first (queued:
    # cancel it); never a cancelled row that a daemon is running.
    assert (seen, run.status, run.cancel_requested) == (Status.RUNNING, Status.RUNNING, True)


def test_a_value_the_store_refuses_is_not_reported_as_unavailable(store: Store) -> None:
    """Exit 69 says "the store is not there, try later"; a refused value is not that."""
    from jobd.errors import StoreValueRefused, store_failure

    store.register_instance("twice", "h", 1, "0")
    with pytest.raises(pw.IntegrityError) as refused:
        store.m.Instance.insert(
            id="twice",
            host="h",
            pid=1,
            version="0",
            started_at=datetime.now(),
            heartbeat_at=datetime.now(),
        ).execute()
    failure = store_failure(refused.value)
    assert isinstance(failure, StoreValueRefused) and failure.exit_code == ExitCode.FAILURE
    assert "unavailable" not in str(failure)
    gone = pw.OperationalError("could not connect to server")
    assert store_failure(gone).exit_code == ExitCode.UNAVAILABLE  # type: ignore[union-attr]


def test_a_pause_that_commits_after_the_due_read_wins_over_the_fire(store: Store) -> None:
    """The daemon reads the due jobs, a `jobd pause` commits, then the fire is written:
    the paused job must not fire (nor record a skip), and other jobs still do."""
    add_jobs(
        store,
        '[jobs.a]\nschedule = "* * * * *"\ncommand = ["true"]\n'
        '[jobs.b]\nschedule = "* * * * *"\ncommand = ["true"]\n',
    )
    slot = store.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    due = store.due_for_firing(slot + timedelta(seconds=1)).jobs
    assert {r.name for r in due} == {"a", "b"}
    store.set_paused("a", True, store.now())
    earlier = slot - timedelta(minutes=1)
    skipped = NewRun(
        job="a", trigger=Trigger.CATCHUP, not_before=slot, scheduled_for=earlier,
        status=Status.SKIPPED, error="overlap = skip",
    )  # fmt: skip
    later = {name: (slot + timedelta(minutes=1), slot) for name in ("a", "b")}
    store.record_fires([fire("a", slot), fire("b", slot), skipped], later)
    assert [(r.job, r.scheduled_for) for r in store.executions(limit=None)] == [("b", slot)]
