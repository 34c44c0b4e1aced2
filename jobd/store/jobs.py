"""The jobs table: definitions applied from the config or the CLI, pauses, and fires.

A fire is a run inserted for a job's slot together with the move of that job's
next fire, in one transaction; so fires live here, beside the jobs they move.
Part of Store (jobd.store.store), which brings the connection, the dialect and
the wake-ups these methods use.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobd.core.model import (
    Config,
    JobSpec,
    NewRun,
    Source,
    Status,
    Trigger,
    spec_text_hash,
)
from jobd.core.planner import first_fire_after
from jobd.core.timeutil import from_db, to_db
from jobd.store import queries as q
from jobd.store.part import Part

APPLY_LOCK = zlib.crc32(b"jobd-apply-config")


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


class JobsPart(Part):
    """Jobs and fires; mixed into Store."""

    def _record(self, row: Sequence[Any]) -> JobRecord:
        text, paused, removed, next_fire, last_fire, updated = row
        return JobRecord(
            spec=self.specs.parse(text),
            paused=bool(paused),
            removed=bool(removed),
            next_fire_at=from_db(next_fire),
            last_fire_at=from_db(last_fire),
            updated_at=from_db(updated),  # type: ignore[arg-type]
        )

    def jobs(self, include_removed: bool = False) -> list[JobRecord]:
        rows = self.dialect.all(q.JOBS if include_removed else q.JOBS_LISTED)
        return [self._record(row) for row in rows]

    def job(self, name: str) -> JobRecord | None:
        row = self.dialect.one(q.JOB, (name,))
        return self._record(row) if row else None

    def apply_config(self, config: Config, now: datetime) -> ApplyReport:
        """Insert or update the file's jobs by name; mark file jobs gone from it removed.

        Jobs created from the CLI are never touched. A job whose schedule did not
        change keeps its next fire; a changed one fires at its next slot after now,
        never immediately because of the change.
        """
        added, updated, removed = [], [], []
        first_fires: dict[tuple[str | None, str], datetime | None] = {}
        with self._moving_fires() as changed:
            # Daemons starting together with one config would race on the inserts.
            self.dialect.lock(APPLY_LOCK)
            # The stored spec too, not only its hash: anyone who can write the jobs
            # table can rewrite a spec and leave the file's hash beside it. Each row
            # is compared as it is read, so the texts are not all held at once.
            existing: dict[str, tuple[str, bool, bool]] = {}
            rewritten: set[str] = set()
            for name, source, config_hash, is_removed, text in self.dialect.run(q.JOBS_TO_APPLY):
                spec = config.jobs.get(name)
                same = spec is not None and config_hash == spec.config_hash
                if same and text != spec.to_json():
                    same = False
                    rewritten.add(name)
                existing[name] = (source, same, bool(is_removed))
            new_rows = []
            for name, spec in config.jobs.items():
                row = existing.get(name)
                if row is not None and row[0] == Source.CLI.value:
                    continue  # the CLI owns it; the file may not silently take it over
                if row is None:
                    new_rows.append(self._job_row(spec, now, first_fires))
                    added.append(name)
                elif row[2] or not row[1]:
                    self._update_job(spec, now)
                    updated.append(name)
            self.dialect.executemany(q.JOB_INSERT, new_rows)
            for name, (source, _same, was_removed) in existing.items():
                if source == Source.FILE.value and not was_removed and name not in config.jobs:
                    self.dialect.run(q.JOB_REMOVE, (True, to_db(now), name))
                    removed.append(name)
            changed.append(bool(added or updated or removed))
        restored = tuple(name for name in updated if name in rewritten)
        return ApplyReport(tuple(added), tuple(updated), tuple(removed), restored)

    @staticmethod
    def _definition(spec: JobSpec, next_fire: datetime | None, now: datetime) -> tuple:
        """The jobs-table columns that follow from a spec (DEFINITION_COLUMNS)."""
        return (
            spec.source.value,
            spec.to_json(),
            spec.config_hash,
            spec.schedule,
            spec.timezone,
            spec.overlap.value,
            spec.enabled,
            spec.group,
            to_db(next_fire if spec.enabled else None),
            to_db(now),
        )

    def _job_row(
        self,
        spec: JobSpec,
        now: datetime,
        first_fires: dict[tuple[str | None, str], datetime | None] | None = None,
        removed: bool = False,
    ) -> tuple:
        """A new job's row (NEW_JOB_COLUMNS); `first_fires` shares the first fire of
        jobs with the same schedule and zone (it depends on nothing else at one `now`)."""
        first: datetime | None = None
        if spec.enabled and not removed:
            key = (spec.schedule, spec.timezone)
            if first_fires is None or key not in first_fires:
                first = first_fire_after(spec, now)
                if first_fires is not None:
                    first_fires[key] = first
            else:
                first = first_fires[key]
        return (spec.name, to_db(now), False, removed, *self._definition(spec, first, now))

    def _update_job(self, spec: JobSpec, now: datetime) -> None:
        row = self.dialect.one(q.JOB, (spec.name,))
        old = self._record(row)
        timing_changed = (old.spec.schedule, old.spec.timezone) != (spec.schedule, spec.timezone)
        next_fire = old.next_fire_at
        if timing_changed or old.removed or next_fire is None or not old.spec.enabled:
            next_fire = first_fire_after(spec, now)
        columns = self._definition(spec, next_fire, now)
        self.dialect.run(q.JOB_REDEFINE, (False, *columns, spec.name))

    def upsert_cli_job(self, spec: JobSpec, now: datetime) -> bool:
        """Create or update a store-only job; True when it was created."""
        with self._moving_fires():
            if self.dialect.one(q.JOB_SPEC, (spec.name,)) is None:
                self.dialect.run(q.JOB_INSERT, self._job_row(spec, now))
                return True
            self._update_job(spec, now)
            return False

    def add_unapplied_job(self, spec: JobSpec, now: datetime) -> None:
        """Give a config-file job that no daemon has applied yet a row, so that a
        command can pause it or record a `trigger --local` run of it.

        The row stays `removed`, which no daemon fires or lists, until a daemon
        applies a config holding the job (apply_config then takes the row over
        with its own definition, keeping the pause). So a daemon running an
        older config is not surprised by a job it never applied."""
        self.dialect.run(q.JOB_INSERT_IF_NEW, self._job_row(spec, now, removed=True))

    def remove_job(self, name: str, now: datetime) -> None:
        with self._moving_fires():
            self.dialect.run(q.JOB_REMOVE, (True, to_db(now), name))

    def set_paused(self, name: str, paused: bool, now: datetime) -> None:
        """Pause or resume. A resumed job fires at its next slot after now: the slots
        it slept through are not missed fires to catch up on."""
        with self._moving_fires() as changed:
            row = self.dialect.one(q.JOB, (name,))
            if row is None:
                changed.append(False)
                return
            record = self._record(row)
            if not paused and record.paused and record.spec.enabled and not record.removed:
                next_fire = to_db(first_fire_after(record.spec, now))
                self.dialect.run(q.JOB_RESUME, (paused, to_db(now), next_fire, name))
            else:
                self.dialect.run(q.JOB_PAUSE, (paused, to_db(now), name))

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
        rows = self.dialect.all(q.DUE_JOBS, (to_db(now), limit))
        if not rows:
            return DueJobs([], set(), None)
        jobs = []
        for row in rows:
            record = self._record(row[:-1])
            # By the hash of the text read, never the hash column: see claim().
            self.specs.remember(spec_text_hash(row[0]), record.spec)
            jobs.append(record)
        store_now = from_db(rows[0][-1])
        assert store_now is not None
        return DueJobs(jobs, self._active_jobs(jobs, store_now, active_within), store_now)

    def next_fire_at(self) -> datetime | None:
        # Read before every sleep: straight through the driver.
        (value,) = self.dialect.one(q.NEXT_FIRE)
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
        with self.db.atomic():
            self.dialect.relax_commit()
            # Queued when written: the fencing check reads the clock anyway.
            now = self.check_epoch(epoch) if epoch is not None else self.now()
            inserted = self.dialect.insert_fires([self._run_row(run, now, epoch) for run in runs])
            if inserted:
                self._unfire_paused(now, {run.job for run in runs})
            self._advance(advances)
            if cancel_jobs:
                self.dialect.run_in(
                    q.CANCEL_RUNNING_OF, list(cancel_jobs), before=(True, Status.RUNNING.value)
                )
            queued = any(not run.status.final for run in runs)
            if inserted and queued:
                self._wake_in_transaction()
        if inserted and queued:
            self._wake_after_commit()
        return inserted

    def _unfire_paused(self, queued_at: datetime, jobs: set[str]) -> None:
        """Take back this transaction's fires of jobs paused or removed since the due
        read: a pause that committed meanwhile must win, or a paused job fires.
        The fires are this transaction's by their queued_at."""
        after = (to_db(queued_at), Trigger.SCHEDULE.value, Trigger.CATCHUP.value)
        self.dialect.later_in(q.UNFIRE_PAUSED, sorted(jobs), after=after)

    def _advance(self, advances: dict[str, tuple[datetime | None, datetime]]) -> None:
        """Move each job's next and last fire."""
        groups: dict[tuple[datetime | None, datetime], list[str]] = {}
        for name, fires in advances.items():
            groups.setdefault(fires, []).append(name)
        if self.dialect.advance_one_by_one(len(groups), len(advances)):
            # Job rows are locked in name order, as claim() locks them: two
            # transactions taking the same rows in different orders deadlock.
            self.dialect.executemany(
                q.ADVANCE,
                [(to_db(nxt), to_db(last), name) for name, (nxt, last) in sorted(advances.items())],
            )
            return
        for (nxt, last), names in groups.items():
            self.dialect.run_in(q.ADVANCE_ALL, names, before=(to_db(nxt), to_db(last)))
