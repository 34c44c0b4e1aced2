"""Operations on runs: trigger and cancel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobd.core.model import NewRun, Source, Trigger
from jobd.errors import InvalidState, NoDaemon, NotFound
from jobd.ops.quotas import enqueue_or_refuse
from jobd.ops.scope import Scope
from jobd.store.admin import live_instances

if TYPE_CHECKING:
    from jobd.core.model import JobSpec
    from jobd.store import JobRecord

# The not_before of a queued local run until its caller claims it: no daemon
# takes it meanwhile.
LOCAL_HOLD = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Triggered:
    run_id: int
    job: str
    spec: JobSpec  # what will run
    paused: bool  # its schedule is paused (this run goes all the same)
    # Set when the file's definition differs from the applied one that runs.
    differs_from_file: bool = False


def trigger(scope: Scope, actor: str, name: str, local: bool = False) -> Triggered:
    """Queue a manual run of NAME, audited, and wake the daemons.

    Without `local`, a live daemon must exist (NoDaemon otherwise, nothing
    queued) and must have applied the job (NotApplied); it runs the applied
    definition. With `local`, the caller runs it (jobd.runs.local) as the config file
    defines it now, and no daemon claims it first. A group at max_active
    refuses it (QuotaRefused, audited)."""
    store = scope.store
    if local:
        record, spec = _local_definition(scope, name)
        differs = False
    else:
        record, file_spec = scope.find_job(name)
        ttl = scope.config.settings.lease_ttl

        if not live_instances(store, ttl, store.now()):
            raise no_daemon(name, f"none heartbeat within {ttl:g}s")
        if record is None:  # a daemon runs what it applied: it must have this job
            raise scope.not_applied(name)
        spec = record.spec
        differs = file_spec is not None and file_spec.config_hash != spec.config_hash
    not_before = LOCAL_HOLD if local else store.now()
    run = NewRun(job=name, trigger=Trigger.MANUAL, not_before=not_before, triggered_by=actor)
    quota = scope.group_quota(spec.group)
    if quota is not None and quota.max_active:
        run_id = enqueue_or_refuse(store, actor, run, quota)
    else:
        run_id = store.enqueue(run)
    store.audit("trigger", actor, name, {"run": run_id, "local": local})
    paused = record is not None and record.paused
    return Triggered(run_id, name, spec, paused, differs)


def no_daemon(name: str, why: str) -> NoDaemon:
    """Nothing would run a manual run of NAME: say so, and what to do instead."""
    return NoDaemon(
        f"no live jobd daemon on this store ({why}), so nothing would run it; "
        f"start `jobd run`, or run it here with `jobd trigger {name} --local`. "
        "Nothing was queued."
    )


def _local_definition(scope: Scope, name: str) -> tuple[JobRecord | None, JobSpec]:
    """What a local run runs: a config-file job as the file defines it now
    (applied or not), a store-only job as stored.

    A config job that no daemon applied yet gets a row that no daemon fires
    (Store.add_unapplied_job), so the run is recorded like any other."""
    record, spec = scope.find_job(name)
    if record is not None and record.source is Source.CLI:
        return record, record.spec
    if spec is None:
        scope.whole_config()  # a broken file raises its error: its job is needed here
        assert record is not None
        spec = record.spec
    if record is None:
        scope.store.add_unapplied_job(spec, scope.store.now())
    return record, spec


@dataclass(frozen=True)
class Cancelled:
    run_id: int
    job: str
    was: str  # queued: cancelled at once; running: its daemon stops it
    host: str | None


def cancel(scope: Scope, actor: str, run_id: int) -> Cancelled:
    """Cancel a queued run at once, or flag a running one for its daemon to stop.
    A run that already ended is InvalidState."""
    store = scope.store
    run = store.execution(run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id} (see `jobd executions`)")
    if run.status.final:
        raise InvalidState(f"run {run_id} ({run.job}) already ended: {run.status.value}")
    was = store.request_cancel(run_id)
    if was.final:  # it ended between the two reads
        raise InvalidState(f"run {run_id} ({run.job}) already ended: {was.value}")
    store.audit("cancel", actor, run.job, {"run": run_id, "was": was.value})
    return Cancelled(run_id, run.job, was.value, run.host)
