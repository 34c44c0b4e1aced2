"""Operations on job definitions: list, pause, resume, schedule, unschedule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from jobd.core.model import JobSpec, Source
from jobd.errors import UsageError
from jobd.ops.quotas import upsert_or_refuse
from jobd.ops.scope import Scope

if TYPE_CHECKING:
    from jobd.core.model import Config
    from jobd.store import JobRecord


class Applied(Enum):
    """Whether the store runs a job as the config file defines it now."""

    YES = "applied"
    NOT_YET = "not applied"  # in the file; no daemon has applied it
    PENDING = "pending reload"  # the file changed it since a daemon applied it
    REMOVED = "removed at reload"  # applied, no longer in the file


@dataclass(frozen=True)
class JobEntry:
    spec: JobSpec  # what runs now: the applied definition, or the file's if none is
    paused: bool
    next_fire_at: datetime | None
    applied: Applied

    @property
    def name(self) -> str:
        return self.spec.name


def unapplied_jobs(config: Config, now: datetime) -> list[JobEntry]:
    """The config file's jobs as they stand before any daemon applied them (no
    store yet)."""
    return [_unapplied(spec, False, now) for _name, spec in sorted(config.jobs.items())]


def _unapplied(spec: JobSpec, paused: bool, now: datetime) -> JobEntry:
    """A job of the file that no daemon applied: with the first fire the file gives it."""
    from jobd.core.planner import first_fire_after

    first = first_fire_after(spec, now) if spec.enabled else None
    return JobEntry(spec, paused, first, Applied.NOT_YET)


def list_jobs(scope: Scope, now: datetime) -> list[JobEntry]:
    """The store's jobs and the config file's, by name, each marked by how the
    store's definition stands against the file's."""
    config = scope.config
    records = {r.name: r for r in scope.store.jobs(include_removed=True)}
    entries: list[JobEntry] = []
    for name in sorted({*config.jobs, *(n for n, r in records.items() if not r.removed)}):
        record, spec = records.get(name), config.jobs.get(name)
        if record is None or record.removed:
            assert spec is not None
            paused = record is not None and record.paused  # paused before it was applied
            entries.append(_unapplied(spec, paused, now))
            continue
        applied = Applied.YES
        if record.source is Source.FILE and scope.config_problem is None:
            if spec is None:
                applied = Applied.REMOVED
            elif spec.config_hash != record.spec.config_hash:
                applied = Applied.PENDING
        entries.append(JobEntry(record.spec, record.paused, record.next_fire_at, applied))
    return entries


@dataclass(frozen=True)
class PauseChange:
    job: str
    paused: bool  # the state now
    changed: bool  # False: it was so already


def set_paused(scope: Scope, actor: str, name: str, paused: bool) -> PauseChange:
    """Pause or resume a job's schedule; audited when it changes anything.

    A config job that no daemon applied yet can be paused too: it gets a row
    that no daemon fires (Store.add_unapplied_job), and stays paused once applied.
    """
    record, spec = scope.find_job(name)
    store = scope.store
    if record is None:
        assert spec is not None
        store.add_unapplied_job(spec, store.now())
        record = store.job(name)
        assert record is not None
    if record.paused == paused:
        return PauseChange(name, paused, changed=False)
    store.set_paused(name, paused, store.now())
    store.audit("pause" if paused else "resume", actor, name)
    return PauseChange(name, paused, changed=True)


@dataclass(frozen=True)
class Scheduled:
    record: JobRecord
    created: bool


def schedule(
    scope: Scope, actor: str, name: str, fields: Mapping[str, Any], origin: str = "command line"
) -> Scheduled:
    """Create or replace a store-only job, as pg_cron's cron.schedule does.

    `fields` are a `[jobs.NAME]` table's keys, validated exactly as in a config
    file (errors name `origin`). A config job's name is refused; a group at
    max_jobs refuses a new job (QuotaRefused, audited)."""
    from jobd.core.config.parse import parse_job

    config = scope.whole_config()  # the groups and the default zone come from it
    spec = parse_job(
        name,
        fields,
        file=origin,
        environ={},
        default_tz=config.settings.timezone,
        source=Source.CLI,
        groups=config.groups,
    )
    store = scope.store
    existing = store.job(name)
    in_file = name in config.jobs
    applied_from_file = existing is not None and existing.source is Source.FILE
    if in_file or (applied_from_file and not existing.removed):  # type: ignore[union-attr]
        where = f" in {config.path}" if in_file else ""
        raise UsageError(
            f"job {name!r} is defined in the config file{where}; change it there "
            "(`jobd schedule` manages store-only jobs)"
        )
    quota = config.groups.get(spec.group or "")
    if quota is not None and quota.max_jobs:
        created = upsert_or_refuse(store, actor, spec, quota)
    else:
        created = store.upsert_cli_job(spec, store.now())
    detail: dict[str, Any] = {"schedule": spec.schedule, "timezone": spec.timezone}
    detail |= {key: list(value) for key, value in fields.items() if key == "command"}
    if spec.group:
        detail["group"] = spec.group
    store.audit("schedule", actor, name, detail)
    record = store.job(name)
    assert record is not None
    return Scheduled(record, created)


def unschedule(scope: Scope, actor: str, name: str) -> None:
    """Remove a store-only job; its history stays. Config jobs are refused."""
    record, _spec = scope.find_job(name)
    if record is None or record.source is not Source.CLI:
        raise UsageError(
            f"job {name!r} comes from the config file; remove it there "
            "(`jobd unschedule` removes jobs made with `jobd schedule`)"
        )
    scope.store.remove_job(name, scope.store.now())
    scope.store.audit("unschedule", actor, name)
