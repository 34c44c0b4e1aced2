"""Operations on recorded history: prune, the run query every front end lists
with, and reading a look-back such as `1d`.

The CLI's fast path (`jobd executions`) imports this module: what loads the
store's ORM waits inside the functions that need it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobd.core.records import STATUSES
from jobd.errors import NotFound, UsageError, did_you_mean
from jobd.ops.scope import Scope

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from jobd.store.reader import Reader


@dataclass(frozen=True)
class Pruned:
    dry_run: bool
    keep: int  # runs kept per job; 0: no count limit
    max_age: float  # seconds; 0: no age limit
    deleted: dict[str, int]  # per job (each limit counted on its own in a dry run)
    by_group: dict[str, int]  # deleted for each group's max_retained

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def prune(
    scope: Scope, actor: str, keep: int | None, max_age: float | None, dry_run: bool = False
) -> Pruned:
    """Delete finished runs beyond the newest `keep` per job, older than `max_age`
    seconds, and beyond each group's max_retained (defaults: [jobd] history);
    queued and running runs stay. Audited unless a dry run."""
    from jobd.store import admin

    config = scope.whole_config()  # retention lives in the file: never guess it
    keep_n = config.settings.history_keep if keep is None else keep
    age = config.settings.history_max_age if max_age is None else max_age
    store = scope.store
    counts = admin.prune(store, keep_n or None, age or None, store.now(), dry_run=dry_run)
    by_group: dict[str, int] = {}
    if config.groups:
        from jobd.store.groups import prune_retained

        for quota in config.groups.values():
            deleted = prune_retained(store, quota, dry_run=dry_run)
            if deleted:
                by_group[quota.name] = sum(deleted.values())
            for job, n in deleted.items():
                counts[job] = counts.get(job, 0) + n
    pruned = Pruned(dry_run, keep_n, age, counts, by_group)
    if not dry_run:
        detail: dict[str, Any] = {"keep": keep_n, "older_than_s": age, "deleted": pruned.total}
        if by_group:
            detail["groups"] = by_group
        store.audit("prune", actor, None, detail)
    return pruned


def parse_since(text: str, now: datetime) -> datetime:
    """A look-back: a duration such as `1d` or `2h30m`, or an RFC 3339 instant."""
    from jobd.core.durations import DurationError, parse_duration
    from jobd.core.timeutil import parse_instant

    try:
        return now - timedelta(seconds=parse_duration(text))
    except DurationError:
        pass
    try:
        return parse_instant(text)
    except ValueError:
        raise UsageError(
            f"--since: expected a duration like 1d or 2h, or an RFC 3339 time, got {text!r}"
        ) from None


def find_runs(
    open_reader: Callable[[], Reader],
    now: datetime,
    job: str | None = None,
    statuses: Sequence[str] = (),
    since: str | None = None,
    limit: int | None = None,
    before: int | None = None,
    jobs: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Runs newest first, as `jobd executions`, `GET /v1/executions` and the
    client list them. `before`: a page's cursor; `jobs`: the only jobs the caller
    may see (a group's), whose names alone a did-you-mean may offer. The reader is
    opened once the arguments are valid: a bad filter is a usage error (exit 2,
    HTTP 400) even where there is no store."""
    for status in statuses:
        if status not in STATUSES:
            raise UsageError(f"status: expected one of {', '.join(sorted(STATUSES))}")
    since_at = parse_since(since, now) if since else None
    reader = open_reader()
    if job is not None:
        known = reader.job_exists(job) if jobs is None else job in jobs
        if not known:
            hint = did_you_mean(job, reader.job_names() if jobs is None else jobs)
            raise NotFound(f"unknown job {job!r}" + (f" ({hint})" if hint else ""))
    return reader.executions(job, statuses, since_at, limit, before=before, jobs=jobs)
