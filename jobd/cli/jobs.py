"""Commands about job definitions: validate, list, next.

Every command module imports only click and the CLI's own small modules at the
top; the rest is imported inside the command, so that `jobd executions` does
not pay for cron parsing or the store's ORM (see bench/cli_latency.py).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jobd.cli import render
from jobd.cli.context import json_option, local_option, pass_ctx
from jobd.core.durations import format_duration
from jobd.core.timeutil import parse_instant, rfc3339
from jobd.errors import ConfigError, UsageError
from jobd.ops.context import Context
from jobd.system.paths import NO_CONFIG_FILE

if TYPE_CHECKING:
    from jobd.core.model import JobSpec


def _next_fire(spec: JobSpec, after: datetime) -> datetime | None:
    from zoneinfo import ZoneInfo

    from jobd.core.cron import parse_schedule

    if spec.schedule is None or not spec.enabled:
        return None
    return parse_schedule(spec.schedule).next_after(after, ZoneInfo(spec.timezone))


@click.command()
@json_option
@local_option
@pass_ctx
def validate(ctx: Context, as_json: bool, local_time: bool) -> None:
    """Check the config and print its jobs; needs no store.

    Exits 0 when the config is valid, 2 with one line naming the file, job and
    key when it is not.

    \b
    Example:
      jobd validate --config /etc/jobd/jobd.toml
    """
    config = ctx.config
    if config.path == NO_CONFIG_FILE:
        from jobd.system.paths import config_candidates

        looked = ", ".join(str(p) for p in config_candidates(None, os.environ, Path.cwd()))
        raise ConfigError(f"no config file found (looked for {looked}; or pass --config PATH)")
    now = ctx.now()
    specs = list(config.jobs.values())
    if as_json:
        render.print_json(
            {
                "config": config.path,
                "jobs": [
                    {
                        "name": s.name,
                        "kind": s.kind.value,
                        "schedule": s.schedule,
                        "timezone": s.timezone,
                        "next_fire": rfc3339(_next_fire(s, now)),
                        "enabled": s.enabled,
                    }
                    for s in specs
                ],
            }
        )
        return
    rows = [
        [
            s.name,
            s.kind.value,
            s.schedule or "(manual)",
            s.timezone,
            render.when(_next_fire(s, now), local_time),
        ]
        for s in specs
    ]
    render.table(["JOB", "KIND", "SCHEDULE", "TZ", "NEXT FIRE"], rows)
    click.echo(f"{config.path}: ok, {len(specs)} job{'s' if len(specs) != 1 else ''}", err=True)


@click.command(name="list")
@json_option
@local_option
@pass_ctx
def list_jobs(ctx: Context, as_json: bool, local_time: bool) -> None:
    """List the jobs: the store's and the config file's, with schedule, tz, next
    fire and the time LEFT until it, the LAST run's start and the time PASSED
    since, its STATUS, paused, source, and, when jobs have groups, each group's
    active runs against max_active. At a terminal, NEXT FIRE and LAST are
    relative to now (`in 4m12s`, `2h ago`); on a pipe and with --local they are
    absolute, each beside LEFT or PASSED, as in `systemctl list-timers`.

    A config job that no daemon has applied yet shows as `file (not applied)`
    with the file's schedule; one whose file definition differs from what the
    daemon applied shows the applied one, as `file (pending reload)`.

    \b
    Example:
      jobd list --json | jq '.[] | select(.paused)'
    """
    from jobd.ops.jobs import Applied, list_jobs, unapplied_jobs
    from jobd.store.admin import latest_runs
    from jobd.store.files import MissingStore

    now = ctx.now()
    latest: dict[str, Any]
    have_store = True
    try:
        entries = list_jobs(ctx.scope(), now)
        latest = latest_runs(ctx.store, [e.name for e in entries])
    except MissingStore as exc:  # before any daemon ran: the file's jobs are all there is
        click.echo(
            f"jobd: no store at {exc.database} yet: these are the config file's jobs "
            "(`jobd run` creates the store)",
            err=True,
        )
        entries, latest, have_store = unapplied_jobs(ctx.store_config, now), {}, False

    def left(entry: Any) -> float | None:
        if entry.paused or entry.next_fire_at is None:
            return None
        return (entry.next_fire_at - now).total_seconds()

    quotas = ctx.store_config.groups
    grouped = {e.spec.group for e in entries if e.spec.group}
    active: dict[str, int] = {}
    if grouped & set(quotas) and have_store:
        from jobd.store.groups import active_by_group

        active = active_by_group(ctx.store, sorted(grouped & set(quotas)))
    if as_json:
        render.print_json(
            [
                {
                    "name": e.name,
                    "schedule": e.spec.schedule,
                    "timezone": e.spec.timezone,
                    "next_fire": rfc3339(e.next_fire_at),
                    "left_s": left(e),
                    "last_run_at": rfc3339(latest[e.name]["at"]) if e.name in latest else None,
                    "last_status": latest[e.name]["status"] if e.name in latest else None,
                    "paused": e.paused,
                    "enabled": e.spec.enabled,
                    "source": e.spec.source.value,
                    "applied": e.applied.value,
                    "description": e.spec.description,
                    "group": e.spec.group,
                }
                for e in entries
            ]
        )
        return
    # On a pipe or with --local: systemctl list-timers' pairs, the absolute
    # NEXT FIRE and LAST, each with the time LEFT or PASSED. For a person at a
    # terminal, as in the other tables, the times relative to now only: the
    # absolute pairs made rows wider than a terminal and wrapped.
    relative = render.relative_times(local_time)
    rows = []
    for e in entries:
        last = latest[e.name]["at"] if e.name in latest else None
        if relative:
            times = ["(paused)" if e.paused else _next(left(e)), render.ago(last, now)]
        else:
            next_fire = render.when(e.next_fire_at, local_time) if not e.paused else "(paused)"
            times = [next_fire, _left(left(e)), render.when(last, local_time)]
            times.append(render.ago(last, now))
        rows.append(
            [
                e.name,
                e.spec.schedule or "(manual)",
                e.spec.timezone,
                *times,
                latest[e.name]["status"] if e.name in latest else "-",
                "yes" if e.paused else "no",
                e.spec.source.value + ("" if e.applied is Applied.YES else f" ({e.applied.value})"),
            ]
        )
    times_headers = ["NEXT FIRE", "LAST"] if relative else ["NEXT FIRE", "LEFT", "LAST", "PASSED"]
    headers = ["JOB", "SCHEDULE", "TZ", *times_headers, "STATUS", "PAUSED", "SOURCE"]
    if grouped:  # a column only for stores that use groups
        headers.append("GROUP (ACTIVE)")
        for row, e in zip(rows, entries, strict=True):
            row.append(_group_cell(e.spec.group, active, quotas))
    # At a terminal too narrow for every column, TZ, PAUSED and SOURCE give way.
    whole = [i for i, h in enumerate(headers) if h not in ("TZ", "PAUSED", "SOURCE")]
    status = headers.index("STATUS")
    render.table(headers, rows, styles={status: render.status_style}, whole=whole)
    if not entries:
        click.echo("no jobs: none in the store, none in the config file", err=True)
    elif any(e.applied is not Applied.YES for e in entries):
        click.echo(
            "jobd applies the config file at `jobd run` and on reload (SIGHUP, "
            "`systemctl reload jobd`)",
            err=True,
        )


def _left(seconds: float | None) -> str:
    """Time until the next fire, as systemctl list-timers' LEFT; a past one is overdue."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return f"overdue {format_duration(-seconds)}"
    return format_duration(seconds)


def _next(seconds: float | None) -> str:
    """The next fire relative to now: `in 4m12s`, or `overdue 30s`."""
    if seconds is None or seconds < 0:
        return _left(seconds)
    return f"in {format_duration(seconds)}"


def _group_cell(group: str | None, active: dict[str, int], quotas: Any) -> str:
    """`tenant-a (2/2)`: the group and its queued + running runs against max_active."""
    if group is None:
        return "-"
    if group not in quotas:
        return f"{group} (no quota in this config)"
    limit = quotas[group].max_active
    used = active.get(group, 0)
    return f"{group} ({used}/{limit})" if limit else f"{group} ({used})"


@click.command(name="next")
@click.argument("name")
@click.option("-n", "count", default=5, show_default=True, type=click.IntRange(1, 10000))
@click.option("--after", metavar="TIME", help="Start from this RFC 3339 time instead of now.")
@json_option
@local_option
@pass_ctx
def next_cmd(
    ctx: Context, name: str, count: int, after: str | None, as_json: bool, local_time: bool
) -> None:
    """Print a job's next fire times.

    \b
    Example (what happens around the DST change?):
      jobd next nightly_backup -n 3 --after 2026-10-24T00:00:00Z
    """
    spec = ctx.store_config.jobs.get(name)
    if spec is None:
        # Jobs made with `jobd schedule` live only in the store.
        record, spec = ctx.scope().find_job(name)
        spec = spec or record.spec  # type: ignore[union-attr]
    if spec.schedule is None:
        raise UsageError(f"job {name!r} has no schedule; it runs only when triggered")
    from zoneinfo import ZoneInfo

    from jobd.core.cron import next_fires, parse_schedule

    try:
        start = parse_instant(after) if after else datetime.now(UTC)
    except ValueError:
        raise UsageError(f"--after: not an RFC 3339 time: {after!r}") from None
    tz = ZoneInfo(spec.timezone)
    fires = next_fires(parse_schedule(spec.schedule), tz, start, count)
    if as_json:
        render.print_json(
            {
                "job": name,
                "timezone": spec.timezone,
                "fires": [rfc3339(f) for f in fires],
                "local": [rfc3339(f, tz) for f in fires],
            }
        )
        return
    for fire in fires:
        local = fire.astimezone(tz).isoformat()
        click.echo(f"{render.when(fire, local_time)}  ({spec.timezone}: {local})")


COMMANDS = [validate, list_jobs, next_cmd]
