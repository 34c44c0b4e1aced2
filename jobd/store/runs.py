"""The executions table: queueing, claiming, progress and the one way a run ends.

Part of Store (jobd.store.store), which brings the connection, the dialect and
the wake-ups these methods use.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from jobd.core.model import JobSpec, NewRun, Outcome, Overlap, Run, Status, Trigger, spec_text_hash
from jobd.core.timeutil import from_db, to_db
from jobd.store import queries as q
from jobd.store.part import Part

EXCLUSIVE = (Overlap.SKIP.value, Overlap.QUEUE.value, Overlap.REPLACE.value)
_TIMES = ("queued_at", "not_before", "scheduled_for", "started_at", "finished_at")
# A run's end as Store writes it (see end_runs):
# (id, instance, status, exit_code, signal, error, finished_at, duration_s).
End = tuple[int, str | None, str, int | None, int | None, str | None, datetime | None, float]


def run_from_row(row: dict[str, Any]) -> Run:
    """The one mapping from an executions row (EXECUTION_COLUMNS by name) to a Run."""
    values = dict(row)
    for key in _TIMES:
        values[key] = from_db(values[key])
    values["trigger"] = Trigger(values["trigger"])
    values["status"] = Status(values["status"])
    values["log"] = values.get("log") or ""
    values["log_bytes"] = values["log_bytes"] or 0
    values["cancel_requested"] = bool(values["cancel_requested"])  # SQLite has 0/1
    return Run(**values)


def end_of(
    run_id: int, instance: str | None, outcome: Outcome, ended: datetime, duration: float
) -> End:
    return (
        run_id,
        instance,
        outcome.status.value,
        outcome.exit_code,
        outcome.signal,
        outcome.error,
        to_db(ended),
        duration,
    )


def _choose(candidates: list[dict[str, Any]], busy: set[str], limit: int) -> list[dict[str, Any]]:
    """Up to `limit` of the claim's candidates, oldest first: at most one run of
    each exclusive job (skip, queue, replace), and none of a job already `busy`."""
    chosen: list[dict[str, Any]] = []
    for cand in candidates:
        if len(chosen) >= limit:
            break
        if cand["overlap"] in EXCLUSIVE:
            if cand["job"] in busy:
                continue
            busy.add(cand["job"])
        chosen.append(cand)
    return chosen


class RunsPart(Part):
    """Runs; mixed into Store."""

    def _run_row(self, run: NewRun, now: datetime, epoch: int | None = None) -> tuple:
        """A new run's row, NEW_RUN_COLUMNS in order."""
        final = run.status.final
        return (
            run.job,
            run.trigger.value,
            to_db(run.scheduled_for),
            to_db(now),
            to_db(max(run.not_before, now) if not final else now),
            run.status.value,
            run.attempt,
            run.retry_of,
            run.triggered_by,
            run.error,
            to_db(now) if final else None,
            epoch,
            False,  # cancel_requested
            "",  # log
            0,  # log_bytes
        )

    def insert_run(self, run: NewRun, now: datetime) -> int:
        """Queue one run inside the caller's transaction; its id. The caller wakes the daemons."""
        return int(self.dialect.one(q.RUN_INSERT, self._run_row(run, now))[0])

    def enqueue(self, run: NewRun) -> int:
        with self.db.atomic():
            run_id = self.insert_run(run, self.now())
        self.wake_daemons()
        return run_id

    def execution(self, run_id: int) -> Run | None:
        row = self.dialect.one(q.RUN, (run_id,))
        return run_from_row(dict(zip(q.EXECUTION_COLUMNS, row, strict=True))) if row else None

    def executions(
        self,
        job: str | None = None,
        status: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int | None = 10,
        with_log: bool = False,
    ) -> list[Run]:
        columns = [c for c in q.EXECUTION_COLUMNS if with_log or c != "log"]
        filters: list[tuple[str, Any]] = []
        if job:
            filters.append(("job", job))
        if status:
            filters.append(("statuses", list(status)))
        if since:
            filters.append(("since", to_db(since)))
        sql, params = q.runs_page(self.dialect.name, columns, filters, limit)
        rows = self.db.execute_sql(sql, params).fetchall()
        return [run_from_row(dict(zip(columns, row, strict=True))) for row in rows]

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
        d = self.dialect
        # On PostgreSQL, due means due by the database's clock at the statement's (or
        # the claim transaction's) start, read in the statement itself: a round trip
        # less than asking first.
        moment = d.claim_moment(now, self.now)
        moment_sql = d.param if moment is not None else d.sql(q.NOW_EXPRESSION)
        moment_params = (to_db(moment),) if moment is not None else ()
        queued = Status.QUEUED.value
        # Most ticks find nothing to claim (an idle daemon ticks for its heartbeats):
        # one read says so, instead of a write transaction of four statements.
        if probe:
            claimable = d.sql(q.CLAIMABLE).format(moment=moment_sql)
            if not self.db.execute_sql(claimable, (queued, *moment_params)).fetchone():
                return []
        with self.db.atomic():
            # The whole row, so the claimed runs need no second read; and the clock,
            # the start of runs no lock below makes wait (SKIP LOCKED never waits).
            cursor = self.db.execute_sql(
                d.sql(q.CLAIM_CANDIDATES).format(moment=moment_sql),
                (queued, *moment_params, limit * 4),
            )
            keys = ("overlap", "job_config_hash", "clock", *q.EXECUTION_COLUMNS)
            candidates = [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]
            if not candidates:
                return []
            started = from_db(candidates[0]["clock"])
            exclusive = sorted({c["job"] for c in candidates if c["overlap"] in EXCLUSIVE})
            busy: set[str] = set()
            if exclusive:
                d.lock_jobs(exclusive)
                busy, started = d.running_jobs_and_clock(exclusive)
            if now is not None:
                started = now
            assert started is not None
            chosen = _choose(candidates, busy, limit)
            if not chosen:
                return []
            specs, hashes = self._specs_of(chosen)
            d.executemany(
                q.CLAIM,
                [
                    (Status.RUNNING.value, to_db(started), instance, host, hashes[c["job"]],
                     c["id"], queued)
                    for c in chosen
                ],
            )  # fmt: skip
            runs = {}
            for c in chosen:
                del c["job_config_hash"], c["overlap"], c["clock"]
                c.update(status=Status.RUNNING.value, started_at=to_db(started), instance=instance,
                         host=host, config_hash=hashes[c["job"]])  # fmt: skip
                runs[c["id"]] = run_from_row(c)
        return [(runs[c["id"]], specs[c["job"]]) for c in chosen]

    def _specs_of(self, chosen: Sequence[dict[str, Any]]) -> tuple[dict[str, JobSpec], dict]:
        """The specs of the chosen runs' jobs, and the hashes of their texts. Each
        is parsed once for all its runs; those a fire of this tick read already are
        known by their hash. The run records the hash of the spec it runs, computed
        from that spec's text: the jobs row's hash column is only as true as its
        last writer."""
        specs: dict[str, JobSpec] = {}
        hashes: dict[str, str] = {}
        for c in chosen:
            known = self.specs.by_hash(c["job_config_hash"])
            if known is not None and known.name == c["job"]:
                specs[c["job"]] = known
                hashes[c["job"]] = c["job_config_hash"]
        unknown = sorted({c["job"] for c in chosen} - specs.keys())
        for name, text in self.dialect.run_in(q.JOB_SPECS, unknown):
            specs[name] = self.specs.parse(text)
            hashes[name] = spec_text_hash(text)
        return specs, hashes

    def claim_run(
        self, run_id: int, instance: str, host: str, spec: JobSpec | None = None
    ) -> tuple[Run, JobSpec] | None:
        """Claim one specific queued run (for `jobd trigger --local`), to run the
        job's stored definition, or `spec` when the caller has its own (the
        config file's, which the store may not have applied yet)."""
        queued = Status.QUEUED.value
        with self.db.atomic():
            row = self.dialect.one(q.CLAIM_ONE_READ, (run_id, queued))
            if row is None:
                return None
            text = row[0]
            started = to_db(self.now())
            # Of what runs, as in claim(): the caller's spec, or the stored one.
            config_hash = spec.config_hash if spec is not None else spec_text_hash(text)
            # not_before: it was held for this claim (see `trigger --local`).
            self.dialect.run(
                q.CLAIM_ONE,
                (Status.RUNNING.value, started, started, instance, host, config_hash, run_id,
                 queued),
            )  # fmt: skip
            run = self.execution(run_id)
        assert run is not None
        return run, spec if spec is not None else self.specs.parse(text)

    def runs_to_stop(self, instance: str, run_ids: Sequence[int]) -> dict[int, str]:
        """Of the runs `instance` is executing, those it must stop, with the reason:
        a cancel was requested, or another instance already settled the run (marked
        it abandoned while this one was paused or cut off) and may be retrying it."""
        if not run_ids:
            return {}
        stop: dict[int, str] = {}
        for run_id, status, owner, cancel in self.dialect.run_in(q.TO_STOP, run_ids):
            if status != Status.RUNNING or owner != instance:
                stop[run_id] = f"stopped: the store already has this run as {status}"
            elif cancel:
                stop[run_id] = "cancelled by request"
        return stop

    def request_cancel(self, run_id: int) -> Status:
        """Cancel a queued run at once, or flag a running one for its daemon.

        Returns the status the run had."""
        with self.db.atomic():
            row = self.dialect.one(q.RUN_STATUS, (run_id,))
            if row is None:
                raise KeyError(run_id)
            status = Status(row[0])
            if status is Status.QUEUED:
                cancelled = self.dialect.run(
                    q.CANCEL_QUEUED,
                    (Status.CANCELLED.value, to_db(self.now()), "cancelled before it started",
                     run_id, Status.QUEUED.value),
                ).rowcount  # fmt: skip
                if cancelled:
                    return status
                status = Status.RUNNING  # claimed meanwhile: flag it for its daemon
            if status is Status.RUNNING:
                self.dialect.run(q.FLAG_CANCEL, (True, run_id, Status.RUNNING.value))
            return status

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
        applied: list[bool] = []
        d = self.dialect
        with self.db.atomic():
            now = self.now()
            d.executemany(q.SET_PID, [(pid, run_id) for run_id, pid in pids.items()])
            d.executemany(
                q.SET_LOG, [(tail, total, run_id) for run_id, (tail, total) in logs.items()]
            )
            if not finishes:
                return applied
            ids = [run_id for run_id, *_rest in finishes]
            current = {r[0]: r[1:] for r in d.run_in(q.ENDING, ids)}
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
                ends.append(end_of(run_id, instance, outcome, ended, duration))
            ended_ids = self.end_runs(ends)
            follow_rows = []
            for run_id, _instance, _outcome, follows in finishes:
                applied.append(run_id in ended_ids)
                if run_id in ended_ids:
                    follow_rows += [self._run_row(follow, now) for follow in follows]
            d.executemany(q.RUNS_INSERT, follow_rows)
            queued = bool(follow_rows)
            if queued:
                self._wake_in_transaction()
        if queued:
            self._wake_after_commit()
        return applied

    def end_runs(self, ends: Sequence[End]) -> set[int]:
        """The one way a run ends (finished, failed, timed out, or abandoned): each
        end is recorded only while its instance still runs it, the condition in the
        UPDATE itself, so a concurrent abandon or cancel cannot be overwritten.
        Returns the ids whose end was recorded."""
        return self.dialect.end_runs(ends)

    def next_queued_in(self) -> float | None:
        """Seconds until the earliest queued run may start, by the store's clock (the
        one claims use), or None when nothing is queued. A daemon whose own clock is
        off would otherwise sleep too long, or spin on a run it cannot claim yet."""
        row = self.dialect.one(q.NEXT_QUEUED, (Status.QUEUED.value,))
        if row is None or row[0] is None:
            return None
        first, now = from_db(row[0]), from_db(row[1])
        assert first is not None and now is not None
        return (first - now).total_seconds()

    def queue_depth(self) -> int:
        return int(self.dialect.one(q.QUEUE_DEPTH, (Status.QUEUED.value,))[0])

    def last_statuses(self, names: Sequence[str]) -> dict[str, Status]:
        """Each job's latest run status, one indexed lookup per job."""
        result: dict[str, Status] = {}
        for name in names:
            row = self.dialect.one(q.LAST_STATUS, (name,))
            if row is not None:
                result[name] = Status(row[0])
        return result
