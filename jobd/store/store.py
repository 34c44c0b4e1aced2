"""The store: every fact jobd keeps, behind one small API over peewee.

Transactions are short and explicit. On SQLite they begin IMMEDIATE (see
connect.py); on PostgreSQL claims use FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import peewee as pw

from jobd.core.cron import parse_schedule
from jobd.core.model import (
    Config,
    JobSpec,
    NewRun,
    Outcome,
    Overlap,
    Run,
    Source,
    Status,
    Trigger,
    spec_text_hash,
)
from jobd.core.timeutil import from_db, to_db
from jobd.errors import StoreUnavailable, first_line
from jobd.store import files
from jobd.store.connect import backend_of, connect, mask_url, sqlite_path
from jobd.store.lease import LeaseLost, LeaseOps, LeaseState
from jobd.store.migrations import SCHEMA_VERSION, migrate
from jobd.store.schema import build_models
from jobd.store.specs import SpecCache
from jobd.system.liveness import LockState, Presence, forget, lock_state

APPLY_LOCK = zlib.crc32(b"jobd-apply-config")
BATCH = 500  # rows per statement or IN list in batched writes
# The executions table's columns, which are also Run's fields.
RUN_COLUMNS = tuple(f for f in Run.__dataclass_fields__)
CLAIM_COLUMNS = ", ".join(f'e."{c}"' for c in RUN_COLUMNS)
WAKE_CHANNEL = "jobd_wake"
EXCLUSIVE = (Overlap.SKIP.value, Overlap.QUEUE.value, Overlap.REPLACE.value)
STORE_ERRORS = (pw.OperationalError, pw.InterfaceError, sqlite3.OperationalError)


@dataclass(frozen=True)
class JobRecord:
    spec: JobSpec
    paused: bool
    removed: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def source(self) -> Source:
        return self.spec.source


@dataclass(frozen=True)
class DueJobs:
    jobs: list[JobRecord]
    active: set[str]  # those with a queued run, or one running on a live instance
    store_now: datetime | None  # the store's clock when any are due


@dataclass(frozen=True)
class ApplyReport:
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # Among `updated`: jobs whose stored spec had been rewritten behind the file's
    # unchanged hash, by something other than jobd; the file's spec is back.
    restored: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def first_fire_after(spec: JobSpec, now: datetime) -> datetime | None:
    from zoneinfo import ZoneInfo

    if spec.schedule is None:
        return None
    return parse_schedule(spec.schedule).next_after(now, ZoneInfo(spec.timezone))


class Store(LeaseOps):
    def __init__(self, db: pw.Database, url: str) -> None:
        self.db = db
        self.url = url
        self.backend = backend_of(url)
        self.m = build_models(db)
        self.specs = SpecCache()  # parsed specs, forgotten by the daemon after each tick
        # A wake-up owed to the daemons once the enclosing transaction commits (SQLite).
        self._wake_owed = False

    # -- lifecycle ---------------------------------------------------------

    def migrate(self) -> int:
        return migrate(self.db, self.m, mask_url(self.url), self._migration_lock)

    def _migration_lock(self) -> None:
        if self.backend == "postgresql":
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(b"jobd-migrate"),))

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        try:
            with self.db.atomic():
                yield
        except BaseException:
            if not self.db.in_transaction():
                self._wake_owed = False  # rolled back: nothing changed
            raise
        if self._wake_owed and not self.db.in_transaction():
            self._wake_owed = False
            self._wake_after_commit()

    def now(self) -> datetime:
        """The database's clock, aware UTC: the one clock all hosts share.

        On PostgreSQL this is clock_timestamp(), not now(): now() is frozen at the
        start of the transaction, so a claim that waited for a lock would record
        a start before the end of the run it waited for."""
        moment = from_db(self.db.execute_sql(f"SELECT {self._clock_sql()}").fetchone()[0])
        assert moment is not None
        return moment

    # -- jobs --------------------------------------------------------------

    def _record(self, row: Any) -> JobRecord:
        return JobRecord(
            spec=self.specs.parse(row.spec),
            paused=row.paused,
            removed=row.removed,
            next_fire_at=from_db(row.next_fire_at),
            last_fire_at=from_db(row.last_fire_at),
            updated_at=from_db(row.updated_at),  # type: ignore[arg-type]
        )

    def jobs(self, include_removed: bool = False) -> list[JobRecord]:
        query = self.m.Job.select().order_by(self.m.Job.name)
        if not include_removed:
            query = query.where(~self.m.Job.removed)
        return [self._record(row) for row in query]

    def job(self, name: str) -> JobRecord | None:
        row = self.m.Job.get_or_none(self.m.Job.name == name)
        return self._record(row) if row else None

    def apply_config(self, config: Config, now: datetime) -> ApplyReport:
        """Insert or update the file's jobs by name; mark file jobs gone from it removed.

        Jobs created from the CLI are never touched. A job whose schedule did not
        change keeps its next fire; a changed one fires at its next slot after now,
        never immediately because of the change.
        """
        added, updated, removed = [], [], []
        Job = self.m.Job
        first_fires: dict[tuple[str | None, str], datetime | None] = {}
        with self._moving_fires() as changed:
            if self.backend == "postgresql":
                # Daemons starting together with one config would race on the inserts.
                self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (APPLY_LOCK,))
            # The stored spec too, not only its hash: anyone who can write the jobs
            # table can rewrite a spec and leave the file's hash beside it. Each row
            # is compared as it is read, so the texts are not all held at once.
            existing: dict[str, tuple[str, bool, bool]] = {}
            rewritten: set[str] = set()
            for name, source, config_hash, is_removed, text in (
                Job.select(Job.name, Job.source, Job.config_hash, Job.removed, Job.spec)
                .tuples()
                .iterator()
            ):
                spec = config.jobs.get(name)
                same = spec is not None and config_hash == spec.config_hash
                if same and text != spec.to_json():
                    same = False
                    rewritten.add(name)
                existing[name] = (source, same, is_removed)
            new_rows = []
            for name, spec in config.jobs.items():
                row = existing.get(name)
                if row is not None and row[0] == Source.CLI.value:
                    continue  # the CLI owns it; the file may not silently take it over
                if row is None:
                    new_rows.append(self._job_row(spec, now, first_fires))
                    added.append(name)
                elif row[2] or not row[1]:
                    self._update_job(Job.get(Job.name == name), spec, now)
                    updated.append(name)
            for start in range(0, len(new_rows), BATCH):
                Job.insert_many(new_rows[start : start + BATCH]).execute()
            for name, (source, _same, was_removed) in existing.items():
                if source == Source.FILE.value and not was_removed and name not in config.jobs:
                    Job.update(removed=True, next_fire_at=None, updated_at=to_db(now)).where(
                        Job.name == name
                    ).execute()
                    removed.append(name)
            changed.append(bool(added or updated or removed))
        restored = tuple(name for name in updated if name in rewritten)
        return ApplyReport(tuple(added), tuple(updated), tuple(removed), restored)

    @staticmethod
    def _definition(spec: JobSpec, next_fire: datetime | None, now: datetime) -> dict[str, Any]:
        """The jobs-table columns that follow from a spec."""
        return {
            "source": spec.source.value,
            "spec": spec.to_json(),
            "config_hash": spec.config_hash,
            "schedule": spec.schedule,
            "timezone": spec.timezone,
            "overlap": spec.overlap.value,
            "enabled": spec.enabled,
            "group_name": spec.group,
            "next_fire_at": to_db(next_fire if spec.enabled else None),
            "updated_at": to_db(now),
        }

    def _insert_job(self, spec: JobSpec, now: datetime) -> None:
        self.m.Job.insert(self._job_row(spec, now)).execute()

    def _job_row(
        self,
        spec: JobSpec,
        now: datetime,
        first_fires: dict[tuple[str | None, str], datetime | None] | None = None,
    ) -> dict[str, Any]:
        """A new job's row; `first_fires` shares the first fire of jobs with the same
        schedule and zone (it depends on nothing else at one `now`)."""
        first: datetime | None = None
        if spec.enabled:
            key = (spec.schedule, spec.timezone)
            if first_fires is None or key not in first_fires:
                first = first_fire_after(spec, now)
                if first_fires is not None:
                    first_fires[key] = first
            else:
                first = first_fires[key]
        return {"name": spec.name, "created_at": to_db(now), **self._definition(spec, first, now)}

    def _update_job(self, row: Any, spec: JobSpec, now: datetime) -> None:
        old = self.specs.parse(row.spec)
        timing_changed = (old.schedule, old.timezone) != (spec.schedule, spec.timezone)
        next_fire = from_db(row.next_fire_at)
        if timing_changed or row.removed or next_fire is None or not old.enabled:
            next_fire = first_fire_after(spec, now)
        columns = self._definition(spec, next_fire, now)
        self.m.Job.update(removed=False, **columns).where(self.m.Job.name == spec.name).execute()

    def upsert_cli_job(self, spec: JobSpec, now: datetime) -> bool:
        """Create or update a store-only job; True when it was created."""
        with self._moving_fires():
            row = self.m.Job.get_or_none(self.m.Job.name == spec.name)
            if row is None:
                self._insert_job(spec, now)
                return True
            self._update_job(row, spec, now)
            return False

    def add_unapplied_job(self, spec: JobSpec, now: datetime) -> None:
        """Give a config-file job that no daemon has applied yet a row, so that a
        command can pause it or record a `trigger --local` run of it.

        The row stays `removed`, which no daemon fires or lists, until a daemon
        applies a config holding the job (apply_config then takes the row over
        with its own definition, keeping the pause). So a daemon running an
        older config is not surprised by a job it never applied."""
        row = {**self._job_row(spec, now), "removed": True, "next_fire_at": None}
        self.m.Job.insert(row).on_conflict_ignore().execute()

    def remove_job(self, name: str, now: datetime) -> None:
        with self._moving_fires():
            self.m.Job.update(removed=True, next_fire_at=None, updated_at=to_db(now)).where(
                self.m.Job.name == name
            ).execute()

    def set_paused(self, name: str, paused: bool, now: datetime) -> None:
        """Pause or resume. A resumed job fires at its next slot after now: the slots
        it slept through are not missed fires to catch up on."""
        Job = self.m.Job
        with self._moving_fires() as changed:
            row = Job.get_or_none(Job.name == name)
            if row is None:
                changed.append(False)
                return
            changes: dict[Any, Any] = {Job.paused: paused, Job.updated_at: to_db(now)}
            if not paused and row.paused:
                spec = self.specs.parse(row.spec)
                if spec.enabled and not row.removed:
                    changes[Job.next_fire_at] = to_db(first_fire_after(spec, now))
            Job.update(changes).where(Job.name == name).execute()

    def due_for_firing(
        self, now: datetime, limit: int = 1000, active_within: float | None = None
    ) -> DueJobs:
        """The jobs due at `now`, which of them have an active run, and the store's
        clock (as now() reads it): all a fire needs. Nothing but the due read when
        none is due, which is most of the time.

        A queued run is active. A running one is, unless `active_within` is given
        and its instance is gone: stopped, its lock free, or (without a lock) no
        heartbeat for `active_within` seconds. Such a run is only waiting to be
        marked abandoned; a fire that took it for active would skip its slot."""
        # Thousands may be due at once: straight through the driver, no query object.
        p = self.db.param
        cursor = self.db.execute_sql(
            "SELECT spec, config_hash, paused, removed, next_fire_at, last_fire_at, "
            f"updated_at, {self._clock_sql()} FROM jobs "
            f"WHERE next_fire_at IS NOT NULL AND next_fire_at <= {p} "
            f"AND NOT paused AND NOT removed AND enabled ORDER BY next_fire_at LIMIT {p}",
            (to_db(now), limit),
        )
        rows = cursor.fetchall()
        if not rows:
            return DueJobs([], set(), None)
        jobs = []
        for text, _column_hash, paused, removed, next_fire, last_fire, updated, _ in rows:
            spec = self.specs.parse(text)
            # By the hash of the text read, never the hash column: see claim().
            self.specs.remember(spec_text_hash(text), spec)
            jobs.append(
                JobRecord(
                    spec=spec,
                    paused=bool(paused),
                    removed=bool(removed),
                    next_fire_at=from_db(next_fire),
                    last_fire_at=from_db(last_fire),
                    updated_at=from_db(updated),  # type: ignore[arg-type]
                )
            )
        store_now = from_db(rows[0][-1])
        assert store_now is not None
        return DueJobs(jobs, self._active_jobs(jobs, store_now, active_within), store_now)

    def _active_jobs(
        self, jobs: Sequence[JobRecord], now: datetime, active_within: float | None
    ) -> set[str]:
        """Those of `jobs` with a run queued, or running on an instance still there."""
        rows = self._select_in(
            "SELECT DISTINCT e.job, e.status, e.instance, i.heartbeat_at, i.stopped_at "
            "FROM executions e LEFT JOIN instances i ON i.id = e.instance "
            "WHERE e.status IN ({p}, {p}) AND e.job IN ({in})",
            [job.name for job in jobs],
            (Status.QUEUED.value, Status.RUNNING.value),
        )
        active: set[str] = set()
        presence: dict[str | None, bool] = {}
        for job, status, instance, heartbeat_at, stopped_at in rows:
            if job in active:
                continue
            if status == Status.QUEUED.value or active_within is None:
                active.add(job)
                continue
            if instance not in presence:
                presence[instance] = stopped_at is None and (
                    instance is None  # not this store's to judge: count it
                    or self.instance_state(instance, from_db(heartbeat_at), active_within, now)
                    is Presence.LIVE
                )
            if presence[instance]:
                active.add(job)
        return active

    def next_fire_at(self) -> datetime | None:
        # Read before every sleep: straight through the driver.
        (value,) = self.db.execute_sql(
            "SELECT MIN(next_fire_at) FROM jobs WHERE next_fire_at IS NOT NULL "
            "AND NOT paused AND NOT removed AND enabled"
        ).fetchone()
        return from_db(value)

    def record_fires(
        self,
        runs: Sequence[NewRun],
        advances: dict[str, tuple[datetime | None, datetime]],
        cancel_jobs: Sequence[str] = (),
        epoch: int | None = None,
    ) -> int:
        """Insert fired runs (a slot already recorded is ignored) and move each job's
        next fire, in one transaction. Returns the number of rows inserted.

        With an `epoch`, the write happens only while that lease term is current
        (LeaseLost otherwise). Other daemons are woken to share the new runs."""
        E = self.m.Execution
        with self.db.atomic():
            if self.backend == "postgresql":
                # Not waiting for the flush to disk: should the server crash before
                # it, the runs and their jobs' next fires are lost together, and
                # the slots fire again. A claim of these runs waits for its own
                # flush, which writes this transaction's too: no run starts from
                # a fire that could still be lost.
                self.db.hold("SET LOCAL synchronous_commit = off")
            # Queued when written: the fencing check reads the clock anyway.
            now = self.check_epoch(epoch) if epoch is not None else self.now()
            inserted = self._insert_fires([self._run_row(run, now, epoch) for run in runs])
            if inserted:
                self._unfire_paused(now, {run.job for run in runs})
            self._advance(advances)
            if cancel_jobs:
                E.update(cancel_requested=True).where(
                    E.job.in_(list(cancel_jobs)), E.status == Status.RUNNING
                ).execute()
            queued = any(not run.status.final for run in runs)
            if inserted and queued:
                self._wake_in_transaction()
        if inserted and queued:
            self._wake_after_commit()
        return inserted

    def _unfire_paused(self, queued_at: datetime, jobs: set[str]) -> None:
        """Take back this transaction's fires of jobs paused or removed since the due
        read: a pause that committed meanwhile must win, or a paused job fires.

        Only the fired jobs are looked up, by key, and their runs found through the
        executions' job index (the fires are this transaction's by their queued_at):
        no scan of either table on the fire path. On PostgreSQL the statement rides
        with the next one (nothing waits for its answer)."""
        p = self.db.param
        names = sorted(jobs)
        for start in range(0, len(names), BATCH):
            chunk = names[start : start + BATCH]
            marks = ", ".join([p] * len(chunk))
            sql = (
                "DELETE FROM executions WHERE job IN (SELECT name FROM jobs "
                f"WHERE name IN ({marks}) AND (paused OR removed)) "
                f"AND queued_at = {p} AND trigger IN ({p}, {p})"
            )
            params = (*chunk, to_db(queued_at), Trigger.SCHEDULE.value, Trigger.CATCHUP.value)
            if self.backend == "postgresql":
                self.db.hold(sql, [params])
            else:
                self.db.execute_sql(sql, params)

    def _select_in(self, sql: str, values: Sequence[Any], params: Sequence[Any] = ()) -> list:
        """Rows of `sql`, whose `{in}` is an IN list of `values`, run in chunks. The
        hot paths read hundreds of rows by key: straight through the driver, this is
        several times cheaper than building and iterating a query object."""
        rows: list = []
        for start in range(0, len(values), BATCH):
            chunk = list(values[start : start + BATCH])
            marks = ", ".join([self.db.param] * len(chunk))
            cursor = self.db.execute_sql(sql.format(p=self.db.param, **{"in": marks}),
                                         [*params, *chunk])  # fmt: skip
            rows += cursor.fetchall()
        return rows

    def _advance(self, advances: dict[str, tuple[datetime | None, datetime]]) -> None:
        """Move each job's next and last fire. Jobs fired together mostly move to the
        same slots (the same schedule): on SQLite they then move with one UPDATE per
        500 of them."""
        p = self.db.param
        groups: dict[tuple[datetime | None, datetime], list[str]] = {}
        for name, fires in advances.items():
            groups.setdefault(fires, []).append(name)
        if self.backend == "postgresql" or len(groups) * 4 > len(advances):
            # Job rows are locked in name order, as claim() locks them: two
            # transactions taking the same rows in different orders deadlock.
            # (SQLite has one writer at a time, and an IN list locks nothing there.)
            self._executemany(
                f"UPDATE jobs SET next_fire_at = {p}, last_fire_at = {p} WHERE name = {p}",
                [(to_db(nxt), to_db(last), name) for name, (nxt, last) in sorted(advances.items())],
            )
            return
        for (nxt, last), names in groups.items():
            for start in range(0, len(names), BATCH):
                part = names[start : start + BATCH]
                marks = ", ".join([p] * len(part))
                self.db.execute_sql(
                    f"UPDATE jobs SET next_fire_at = {p}, last_fire_at = {p} "
                    f"WHERE name IN ({marks})",
                    [to_db(nxt), to_db(last), *part],
                )

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many rows, a write whose results nobody reads: one call
        into the driver, not one per row. On PostgreSQL, up to a batch of them inside
        a transaction ride on its next round trip (see pgwire)."""
        if not rows:
            return
        if self.backend == "postgresql":
            if len(rows) <= BATCH and self.db.in_transaction():
                self.db.hold(sql, rows)
                return
            from psycopg2.extras import execute_batch

            execute_batch(self.db.cursor(), sql, rows, page_size=BATCH)
        else:
            self.db.cursor().executemany(sql, rows)

    def _insert_fires(self, rows: list[dict[str, Any]]) -> int:
        """Insert run rows, ignoring a slot already recorded; returns how many were new."""
        if not rows:
            return 0
        columns = list(rows[0])
        values = [tuple(row[c] for c in columns) for row in rows]
        names = ", ".join(f'"{c}"' for c in columns)
        cursor = self.db.cursor()
        if self.backend == "postgresql":
            from psycopg2.extras import execute_values

            returned = execute_values(
                cursor,
                f"INSERT INTO executions ({names}) VALUES %s ON CONFLICT DO NOTHING RETURNING id",
                values,
                page_size=BATCH,
                fetch=True,
            )
            return len(returned)
        marks = ", ".join("?" for _ in columns)
        cursor.executemany(f"INSERT OR IGNORE INTO executions ({names}) VALUES ({marks})", values)
        return cursor.rowcount

    def _run_row(self, run: NewRun, now: datetime, epoch: int | None = None) -> dict[str, Any]:
        final = run.status.final
        return {
            "job": run.job,
            "trigger": run.trigger.value,
            "scheduled_for": to_db(run.scheduled_for),
            "queued_at": to_db(now),
            "not_before": to_db(max(run.not_before, now) if not final else now),
            "status": run.status.value,
            "attempt": run.attempt,
            "retry_of": run.retry_of,
            "triggered_by": run.triggered_by,
            "error": run.error,
            "finished_at": to_db(now) if final else None,
            "epoch": epoch,
            # Model defaults, spelled out for the batched insert that bypasses the model.
            "cancel_requested": False,
            "log": "",
            "log_bytes": 0,
        }

    def enqueue(self, run: NewRun) -> int:
        with self.db.atomic():
            run_id = int(self.m.Execution.insert(self._run_row(run, self.now())).execute())
        self.wake_daemons()
        return run_id

    # -- waking daemons --------------------------------------------------------

    def wake_dir(self) -> str | None:
        """SQLite: a directory of per-daemon sockets beside the database."""
        if self.backend != "sqlite":
            return None
        return files.wake_dir(sqlite_path(self.url))

    def wake_daemons(self) -> None:
        """Tell running daemons that there is new work, so they need not poll."""
        if self.backend == "postgresql":
            # The payload names the schema, so jobd stores in other schemas of the
            # same database (NOTIFY is database-wide) are not woken for nothing.
            self.db.execute_sql("SELECT pg_notify(%s, current_schema())", (WAKE_CHANNEL,))
            return
        self._wake_after_commit()

    @contextmanager
    def _moving_fires(self) -> Iterator[list[bool]]:
        """A transaction that can move jobs' next fires (pause, resume, schedule,
        unschedule, applying a config): the daemons are woken when it commits, so a
        daemon asleep until its next known fire learns of an earlier one at once.

        The caller may append False to the yielded list when it changed nothing."""
        changed: list[bool] = []
        with self.atomic():
            yield changed
            if all(changed):
                self._wake_in_transaction()
                if self.backend == "sqlite":
                    # Read by atomic() once the outermost transaction has committed:
                    # a daemon woken before that would read the jobs as they were.
                    self._wake_owed = True

    def _wake_in_transaction(self) -> None:
        """PostgreSQL delivers a NOTIFY at commit, and only if the transaction commits:
        it goes with the COMMIT, no round trip of its own."""
        if self.backend == "postgresql":
            self.db.hold("SELECT pg_notify(%s, current_schema())", [(WAKE_CHANNEL,)])

    def _wake_after_commit(self) -> None:
        if self.backend == "postgresql":
            return
        from jobd.system.waker import poke_all

        directory = self.wake_dir()
        if directory:
            poke_all(directory)
            poke_all(files.legacy_wake_dir(sqlite_path(self.url)))

    # -- executions ----------------------------------------------------------

    def _run(self, row: Any) -> Run:
        return Run(
            id=row.id,
            job=row.job,
            trigger=Trigger(row.trigger),
            status=Status(row.status),
            queued_at=from_db(row.queued_at),  # type: ignore[arg-type]
            not_before=from_db(row.not_before),  # type: ignore[arg-type]
            scheduled_for=from_db(row.scheduled_for),
            started_at=from_db(row.started_at),
            finished_at=from_db(row.finished_at),
            duration_s=row.duration_s,
            exit_code=row.exit_code,
            signal=row.signal,
            attempt=row.attempt,
            retry_of=row.retry_of,
            error=row.error,
            instance=row.instance,
            host=row.host,
            pid=row.pid,
            triggered_by=row.triggered_by,
            config_hash=row.config_hash,
            cancel_requested=row.cancel_requested,
            log=row.log or "",
            log_bytes=row.log_bytes or 0,
            epoch=row.epoch,
        )

    @staticmethod
    def _run_from_dict(row: dict[str, Any]) -> Run:
        values = dict(row)
        for key in ("queued_at", "not_before", "scheduled_for", "started_at", "finished_at"):
            values[key] = from_db(values[key])
        values["trigger"] = Trigger(values["trigger"])
        values["status"] = Status(values["status"])
        values["log"] = values["log"] or ""
        values["log_bytes"] = values["log_bytes"] or 0
        values["cancel_requested"] = bool(values["cancel_requested"])  # SQLite has 0/1
        return Run(**values)

    def execution(self, run_id: int) -> Run | None:
        row = self.m.Execution.get_or_none(self.m.Execution.id == run_id)
        return self._run(row) if row else None

    def executions(
        self,
        job: str | None = None,
        status: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int | None = 10,
        with_log: bool = False,
    ) -> list[Run]:
        E = self.m.Execution
        fields = [f for f in E._meta.sorted_fields if with_log or f.name != "log"]
        query = E.select(*fields)
        if job:
            query = query.where(E.job == job)
        if status:
            query = query.where(E.status.in_(list(status)))
        if since:
            query = query.where(E.queued_at >= to_db(since))
        query = query.order_by(E.id.desc())
        if limit:
            query = query.limit(limit)
        return [self._run(row) for row in query]

    def claim(
        self,
        instance: str,
        host: str,
        limit: int,
        now: datetime | None = None,
        probe: bool = True,
    ) -> list[tuple[Run, JobSpec]]:
        """Atomically move up to `limit` due queued runs to running for `instance`.

        A job whose overlap is skip, queue or replace never has two running runs,
        across all instances. `probe=False` skips the read that first asks whether
        anything is claimable, for a caller that has just queued a run due now.
        """
        if limit <= 0:
            return []
        p = self.db.param
        # On PostgreSQL, due means due by the database's clock at the statement's (or
        # the claim transaction's) start, read in the statement itself: a round trip
        # less than asking first. SQLite's clock is in-process anyway.
        moment = now if now is not None or self.backend == "postgresql" else self.now()
        moment_sql = p if moment is not None else self._db_now_sql()
        moment_params = (to_db(moment),) if moment is not None else ()
        # Most ticks find nothing to claim (an idle daemon ticks for its heartbeats):
        # one read says so, instead of a write transaction of four statements.
        claimable = (
            f"SELECT 1 FROM executions WHERE status = {p} AND not_before <= {moment_sql} LIMIT 1"
        )
        if (
            probe
            and not self.db.execute_sql(claimable, (Status.QUEUED.value, *moment_params)).fetchone()
        ):
            return []
        with self.db.atomic():
            lock = " FOR UPDATE OF e SKIP LOCKED" if self.backend == "postgresql" else ""
            # The whole row, so the claimed runs need no second read; and the clock,
            # the start of runs no lock below makes wait (SKIP LOCKED never waits).
            cursor = self.db.execute_sql(
                f"SELECT j.overlap, j.config_hash, c.now, {CLAIM_COLUMNS} FROM executions e "
                f"JOIN jobs j ON j.name = e.job CROSS JOIN (SELECT {self._clock_sql()} AS now) c "
                f"WHERE e.status = {p} "
                f"AND e.not_before <= {moment_sql} ORDER BY e.id LIMIT {p}{lock}",
                (Status.QUEUED.value, *moment_params, limit * 4),
            )
            keys = ("overlap", "job_config_hash", "clock", *RUN_COLUMNS)
            candidates = [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]
            if not candidates:
                return []
            started = from_db(candidates[0]["clock"])
            exclusive = sorted({c["job"] for c in candidates if c["overlap"] in EXCLUSIVE})
            busy: set[str] = set()
            if exclusive:
                if self.backend == "postgresql":
                    # Serialize claimers of the same exclusive job across instances,
                    # locking in name order as fires do. Its rows are not read: it
                    # goes with the next statement, still a statement of its own
                    # whose snapshot (read committed) sees what the lock waited for.
                    self.db.hold(
                        "SELECT name FROM jobs WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
                        [(exclusive,)],
                    )
                busy, started = self._running_jobs_and_clock(exclusive)
            if now is not None:
                started = now
            assert started is not None
            chosen: list[dict[str, Any]] = []
            for cand in candidates:
                if len(chosen) >= limit:
                    break
                if cand["overlap"] in EXCLUSIVE:
                    if cand["job"] in busy:
                        continue
                    busy.add(cand["job"])
                chosen.append(cand)
            if not chosen:
                return []
            # Specs of the chosen runs' jobs only, each parsed once for all its runs;
            # those a fire of this tick read already are known by their hash. The
            # run records the hash of the spec it runs, computed from that spec's
            # text: the jobs row's hash column is only as true as its last writer.
            specs: dict[str, JobSpec] = {}
            hashes: dict[str, str] = {}
            for c in chosen:
                known = self.specs.by_hash(c["job_config_hash"])
                if known is not None and known.name == c["job"]:
                    specs[c["job"]] = known
                    hashes[c["job"]] = c["job_config_hash"]
            unknown = sorted({c["job"] for c in chosen} - specs.keys())
            texts = self._select_in("SELECT name, spec FROM jobs WHERE name IN ({in})", unknown)
            for name, text in texts:
                specs[name] = self.specs.parse(text)
                hashes[name] = spec_text_hash(text)
            self._executemany(
                f"UPDATE executions SET status = {p}, started_at = {p}, instance = {p}, "
                f"host = {p}, config_hash = {p} WHERE id = {p} AND status = {p}",
                [
                    (Status.RUNNING.value, to_db(started), instance, host, hashes[c["job"]],
                     c["id"], Status.QUEUED.value)
                    for c in chosen
                ],
            )  # fmt: skip
            runs = {}
            for c in chosen:
                del c["job_config_hash"]
                c.update(status=Status.RUNNING.value, started_at=to_db(started), instance=instance,
                         host=host, config_hash=hashes[c["job"]])  # fmt: skip
                del c["overlap"], c["clock"]
                runs[c["id"]] = self._run_from_dict(c)
        return [(runs[c["id"]], specs[c["job"]]) for c in chosen]

    def claim_run(
        self, run_id: int, instance: str, host: str, spec: JobSpec | None = None
    ) -> tuple[Run, JobSpec] | None:
        """Claim one specific queued run (for `jobd trigger --local`), to run the
        job's stored definition, or `spec` when the caller has its own (the
        config file's, which the store may not have applied yet)."""
        E, Job = self.m.Execution, self.m.Job
        with self.db.atomic():
            row = (
                E.select(E.id, Job.spec, Job.config_hash)
                .join(Job, on=(Job.name == E.job))
                .where(E.id == run_id, E.status == Status.QUEUED)
                .dicts()
                .first()
            )
            if row is None:
                return None
            started = to_db(self.now())
            E.update(
                status=Status.RUNNING,
                started_at=started,
                not_before=started,  # it was held for this claim (see `trigger --local`)
                instance=instance,
                host=host,
                # Of what runs, as in claim(): the caller's spec, or the stored one.
                config_hash=spec.config_hash if spec is not None else spec_text_hash(row["spec"]),
            ).where(E.id == run_id, E.status == Status.QUEUED).execute()
            run = self._run(E.get(E.id == run_id))
        return run, spec if spec is not None else self.specs.parse(row["spec"])

    def _running_jobs_and_clock(self, names: Sequence[str]) -> tuple[set[str], datetime]:
        """The jobs among `names` with a running run, and the store's clock, in one
        statement on PostgreSQL."""
        if self.backend != "postgresql":
            rows = self._select_in(
                "SELECT DISTINCT job FROM executions WHERE status = {p} AND job IN ({in})",
                names,
                (Status.RUNNING.value,),
            )
            return {row[0] for row in rows}, self.now()
        clock, running = self.db.execute_sql(
            f"SELECT {self._clock_sql()}, ARRAY(SELECT DISTINCT job FROM executions "
            "WHERE status = %s AND job = ANY(%s))",
            (Status.RUNNING.value, list(names)),
        ).fetchone()
        moment = from_db(clock)
        assert moment is not None
        return set(running), moment

    def runs_to_stop(self, instance: str, run_ids: Sequence[int]) -> dict[int, str]:
        """Of the runs `instance` is executing, those it must stop, with the reason:
        a cancel was requested, or another instance already settled the run (marked
        it abandoned while this one was paused or cut off) and may be retrying it."""
        if not run_ids:
            return {}
        rows = self._select_in(
            "SELECT id, status, instance, cancel_requested FROM executions WHERE id IN ({in})",
            run_ids,
        )
        stop: dict[int, str] = {}
        for run_id, status, owner, cancel in rows:
            if status != Status.RUNNING or owner != instance:
                stop[run_id] = f"stopped: the store already has this run as {status}"
            elif cancel:
                stop[run_id] = "cancelled by request"
        return stop

    def request_cancel(self, run_id: int) -> Status:
        """Cancel a queued run at once, or flag a running one for its daemon.

        Returns the status the run had."""
        E = self.m.Execution
        with self.db.atomic():
            row = E.get_or_none(E.id == run_id)
            if row is None:
                raise KeyError(run_id)
            status = Status(row.status)
            if status is Status.QUEUED:
                cancelled = (
                    E.update(
                        status=Status.CANCELLED,
                        finished_at=to_db(self.now()),
                        error="cancelled before it started",
                    )
                    .where(E.id == run_id, E.status == Status.QUEUED)
                    .execute()
                )
                if cancelled:
                    return status
                status = Status.RUNNING  # claimed meanwhile: flag it for its daemon
            if status is Status.RUNNING:
                E.update(cancel_requested=True).where(
                    E.id == run_id, E.status == Status.RUNNING
                ).execute()
            return status

    # -- instances and lost runs ---------------------------------------------------

    def register_instance(self, instance: str, host: str, pid: int, version: str) -> None:
        now = to_db(self.now())
        Inst = self.m.Instance
        Inst.insert(
            id=instance, host=host, pid=pid, version=version, started_at=now, heartbeat_at=now
        ).on_conflict(
            conflict_target=[Inst.id],
            update={Inst.heartbeat_at: now, Inst.stopped_at: None, Inst.pid: pid},
        ).execute()

    def heartbeat(
        self, instance: str, role: str, running: int, clock_skew: float | None = None
    ) -> None:
        I = self.m.Instance
        # Dated by the database in the same statement: one round trip, not two.
        I.update(
            heartbeat_at=pw.SQL(self._db_now_sql()),
            role=role,
            running=running,
            clock_skew=clock_skew,
        ).where(I.id == instance).execute()

    def touch_instance(self, instance: str) -> None:
        """Renew only an instance's heartbeat (jobd.runs.fence, from a thread of its own)."""
        I = self.m.Instance
        I.update(heartbeat_at=pw.SQL(self._db_now_sql())).where(I.id == instance).execute()

    def stop_instance(self, instance: str) -> None:
        I = self.m.Instance
        I.update(stopped_at=to_db(self.now()), role="stopped", running=0).where(
            I.id == instance
        ).execute()

    def remove_instance(self, instance: str) -> None:
        """Forget a one-shot instance (`trigger --local`) that ended cleanly; its
        runs keep its name."""
        self.m.Instance.delete().where(self.m.Instance.id == instance).execute()

    def instances(self) -> list[dict[str, Any]]:
        I = self.m.Instance
        return [
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "version": row.version,
                "started_at": from_db(row.started_at),
                "heartbeat_at": from_db(row.heartbeat_at),
                "role": row.role,
                "running": row.running,
                "clock_skew": row.clock_skew,
                "stopped_at": from_db(row.stopped_at),
            }
            for row in I.select().order_by(I.started_at)
        ]

    def instance_lock_dir(self) -> str | None:
        """SQLite: the directory of the instances' liveness locks (jobd.system.liveness)."""
        if self.backend != "sqlite":
            return None
        return files.instances_dir(sqlite_path(self.url))

    def instance_state(
        self, instance: str, heartbeat_at: datetime | None, ttl: float, now: datetime
    ) -> Presence:
        """The one place that decides whether an instance that has not stopped is
        still there: by its lock where it has one, else by its heartbeat."""
        directory = self.instance_lock_dir()
        state = lock_state(directory, instance) if directory else LockState.MISSING
        if state is LockState.HELD:
            return Presence.LIVE
        if state is LockState.FREE:
            return Presence.DEAD
        fresh = heartbeat_at is not None and (now - heartbeat_at).total_seconds() <= ttl
        return Presence.LIVE if fresh else Presence.STALE

    def reap_lost_runs(
        self,
        ttl: float,
        follow_ups: Callable[[Run, Outcome, JobSpec | None], Sequence[NewRun]],
        dead_instances: Sequence[str] = (),
    ) -> list[Run]:
        """Mark running runs whose instance is gone (see instance_state, or known
        dead) abandoned, and queue their retries, atomically. A late finish by
        that instance then finds the run no longer running and changes nothing."""
        E, I, Job = self.m.Execution, self.m.Instance, self.m.Job
        dead = list(dead_instances)
        if (
            not dead
            and self.instance_lock_dir() is None
            and not E.select(E.id).where(E.status == Status.RUNNING).exists()
        ):
            # Nothing runs anywhere, and without liveness locks nothing else is
            # decided here: one indexed look instead of a transaction of them.
            return []
        with self.db.atomic():
            now = self.now()
            live = []
            for instance, heartbeat_at in (
                I.select(I.id, I.heartbeat_at)
                .where(I.stopped_at.is_null(), I.id.not_in(dead or [""]))
                .tuples()
            ):
                state = self.instance_state(instance, from_db(heartbeat_at), ttl, now)
                if state is Presence.LIVE:
                    live.append(instance)
                elif state is Presence.DEAD:
                    dead.append(instance)
            rows = list(
                E.select()
                .where(E.status == Status.RUNNING, E.instance.not_in(live or [""]))
                .order_by(E.id)
            )
            lost: list[Run] = []
            queued = False
            for row in rows:
                run = self._run(row)
                instance = self.m.Instance.get_or_none(I.id == run.instance)
                where = f"{instance.host} pid {instance.pid}" if instance else "unknown host"
                outcome = Outcome(
                    Status.ABANDONED,
                    error=f"instance {run.instance} ({where}) vanished while the run was going",
                )
                updated = (
                    E.update(
                        status=outcome.status.value,
                        error=outcome.error,
                        finished_at=to_db(now),
                        duration_s=max(0.0, (now - (run.started_at or now)).total_seconds()),
                    )
                    .where(E.id == run.id, E.status == Status.RUNNING)
                    .execute()
                )
                if not updated:
                    continue
                job_row = Job.get_or_none(Job.name == run.job)
                spec = self.specs.parse(job_row.spec) if job_row else None
                for follow in follow_ups(run, outcome, spec):
                    E.insert(self._run_row(follow, now)).execute()
                    queued = True
                lost.append(run)
            if dead:
                I.update(stopped_at=to_db(now), role="stopped", running=0).where(
                    I.id.in_(dead), I.stopped_at.is_null()
                ).execute()
            if queued:
                self._wake_in_transaction()
        directory = self.instance_lock_dir()
        for instance in dead if directory else ():
            forget(directory, instance)  # type: ignore[arg-type]
        if queued:
            self._wake_after_commit()
        return lost

    def record_progress(
        self,
        pids: dict[int, int],
        logs: dict[int, tuple[str, int]],
        finishes: Sequence[tuple[int, str, Outcome, Sequence[NewRun]]],
        lasted: dict[int, float] | None = None,
    ) -> list[bool]:
        """Write a tick's worth of run progress in one transaction: pids, output tails,
        and ends (each with its retries/chains). Returns, per finish, whether it applied.

        `lasted` gives, by run id, how long a run went on, measured by its runner:
        the run ended that long after its start, however late the end is written
        (after a store outage, say). Without it, the end is now."""
        E = self.m.Execution
        p = self.db.param
        applied: list[bool] = []
        with self.db.atomic():
            now = self.now()
            self._executemany(
                f"UPDATE executions SET pid = {p} WHERE id = {p}",
                [(pid, run_id) for run_id, pid in pids.items()],
            )
            self._executemany(
                f"UPDATE executions SET log = {p}, log_bytes = {p} WHERE id = {p}",
                [(tail, total, run_id) for run_id, (tail, total) in logs.items()],
            )
            if not finishes:
                return applied
            ids = [run_id for run_id, *_rest in finishes]
            current: dict[int, tuple[str, str | None, Any]] = {
                r[0]: r[1:]
                for r in self._select_in(
                    "SELECT id, status, instance, started_at FROM executions WHERE id IN ({in})",
                    ids,
                )
            }
            ends = []
            for run_id, instance, outcome, _follows in finishes:
                row = current.get(run_id)
                if row is None or row[0] != Status.RUNNING or row[1] != instance:
                    continue
                started = from_db(row[2]) or now
                duration = max(0.0, (now - started).total_seconds())
                if lasted is not None and run_id in lasted:
                    duration = min(duration, max(0.0, lasted[run_id]))
                ended = started + timedelta(seconds=duration)
                ends.append(
                    (run_id, instance, outcome.status.value, outcome.exit_code, outcome.signal,
                     outcome.error, to_db(ended), duration)
                )  # fmt: skip
            ended = self._end_runs(ends)
            follow_rows = []
            for run_id, _instance, _outcome, follows in finishes:
                applied.append(run_id in ended)
                if run_id in ended:
                    follow_rows += [self._run_row(follow, now) for follow in follows]
            for start in range(0, len(follow_rows), BATCH):
                E.insert_many(follow_rows[start : start + BATCH]).execute()
            queued = bool(follow_rows)
            if queued:
                self._wake_in_transaction()
        if queued:
            self._wake_after_commit()
        return applied

    def _end_runs(self, ends: Sequence[tuple]) -> set[int]:
        """Record many ends, each only if its instance still runs it: the condition is
        in the UPDATE itself, so a concurrent abandon or cancel cannot be overwritten.
        Returns the ids whose end was recorded. Rows
        are (id, instance, status, exit_code, signal, error, finished_at, duration_s)."""
        if not ends:
            return set()
        cursor = self.db.cursor()
        if self.backend == "postgresql":
            from psycopg2.extras import execute_values

            returned = execute_values(
                cursor,
                "UPDATE executions AS e SET status = v.status, exit_code = v.exit_code, "
                "signal = v.signal, error = v.error, finished_at = v.finished_at, "
                "duration_s = v.duration_s FROM (VALUES %s) AS v(id, instance, status, "
                "exit_code, signal, error, finished_at, duration_s) "
                "WHERE e.id = v.id AND e.status = 'running' AND e.instance = v.instance "
                "RETURNING e.id",
                ends,
                template="(%s::integer, %s::text, %s::text, %s::integer, %s::integer, %s::text, "
                "%s::timestamp, %s::double precision)",
                page_size=BATCH,
                fetch=True,
            )
            return {row[0] for row in returned}
        # SQLite: this transaction took the write lock when it began, so the rows read
        # before are still as they were and every conditional UPDATE applies.
        cursor.executemany(
            "UPDATE executions SET status = ?, exit_code = ?, signal = ?, error = ?, "
            "finished_at = ?, duration_s = ? WHERE id = ? AND status = 'running' "
            "AND instance = ?",
            [
                (st, code, sig, err, fin, dur, rid, inst)
                for rid, inst, st, code, sig, err, fin, dur in ends
            ],
        )
        return {row[0] for row in ends}

    def next_queued_in(self) -> float | None:
        """Seconds until the earliest queued run may start, by the store's clock (the
        one claims use), or None when nothing is queued. A daemon whose own clock is
        off would otherwise sleep too long, or spin on a run it cannot claim yet."""
        row = self.db.execute_sql(
            f"SELECT MIN(not_before), {self._db_now_sql()} FROM executions "
            f"WHERE status = {self.db.param}",
            (Status.QUEUED.value,),
        ).fetchone()
        if row is None or row[0] is None:
            return None
        first, now = from_db(row[0]), from_db(row[1])
        assert first is not None and now is not None
        return (first - now).total_seconds()

    def limit_waits(self, seconds: float, stopping: Callable[[], bool]) -> None:
        """For the daemon: no wait for the store lasts more than about `seconds`
        (`stopping()`: much less), so a stalled PostgreSQL server or network is
        noticed, and signals are answered, instead of blocking the loop. SQLite is
        a local file, whose waits its busy timeout bounds."""
        if self.backend != "postgresql":
            return
        from jobd.store.pgwire import bound_waits

        bound_waits(seconds, stopping)
        self.db.limit_waits(seconds)
        self.reset_connection()  # the next connection carries the settings

    def reset_connection(self) -> None:
        """Drop a connection that may be broken; the next query reconnects."""
        with suppress(Exception):
            self.db.close()

    def queue_depth(self) -> int:
        E = self.m.Execution
        return E.select().where(E.status == Status.QUEUED).count()

    def last_statuses(self, names: Sequence[str]) -> dict[str, Status]:
        """Each job's latest run status, one indexed lookup per job."""
        E = self.m.Execution
        result: dict[str, Status] = {}
        for name in names:
            row = E.select(E.status).where(E.job == name).order_by(E.id.desc()).first()
            if row is not None:
                result[name] = Status(row.status)
        return result

    # -- audit ------------------------------------------------------------------

    def audit(
        self,
        action: str,
        actor: str,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.m.AuditEvent.insert(
            at=to_db(self.now()),
            action=action,
            actor=actor,
            target=target,
            detail=json.dumps(detail, sort_keys=True) if detail else None,
        ).execute()

    def audit_events(
        self, limit: int = 20, targets: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; with `targets`, only the events about these (an API tenant's jobs)."""
        A = self.m.AuditEvent
        rows = A.select().order_by(A.id.desc()).limit(limit)
        if targets is not None:
            rows = rows.where(A.target.in_(list(targets)))
        return [
            {
                "id": row.id,
                "at": from_db(row.at),
                "action": row.action,
                "actor": row.actor,
                "target": row.target,
                "detail": json.loads(row.detail) if row.detail else None,
            }
            for row in rows
        ]


def open_store(url: str, migrate_schema: bool = True, create: bool = True) -> Store:
    """Connect, check the schema, and migrate it forward. Raises StoreUnavailable.

    `create`: make a SQLite store that does not exist yet; commands that only read
    pass False, so that they never leave an empty store where one vanished."""
    db = connect(url, create)
    store = Store(db, url)
    try:
        if migrate_schema:
            store.migrate()
    except StoreUnavailable:
        store.close()
        raise
    except (pw.DatabaseError, sqlite3.DatabaseError) as exc:
        store.close()
        first = first_line(exc, "database error")
        raise StoreUnavailable(f"store {mask_url(url)}: {first}") from None
    return store


__all__ = [
    "STORE_ERRORS",
    "ApplyReport",
    "JobRecord",
    "LeaseLost",
    "LeaseState",
    "Store",
    "open_store",
]
