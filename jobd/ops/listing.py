"""The run listing every front end shares (`jobd executions`, GET /v1/executions,
the client's `executions()`), and reading a look-back such as `1d`.

The CLI's fast path imports this module: it loads nothing beyond the standard
library at import, and the core's duration and time parsers only when a
look-back is given.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobd.core.records import STATUSES
from jobd.errors import NotFound, UsageError, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from jobd.store.reader import Reader


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
