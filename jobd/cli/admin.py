"""Commands for operators and monitors: status, check, prune, audit."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from jobd.cli import render
from jobd.cli.context import json_option, local_option, pass_ctx
from jobd.cli.params import COUNT, MAX_INT
from jobd.cli.quotas import quota_cell, quota_style
from jobd.errors import ExitCode
from jobd.ops.context import Context, actor

RUNNING_SHOWN = 20


@click.command()
@json_option
@local_option
@pass_ctx
def status(ctx: Context, as_json: bool, local_time: bool) -> None:
    """Show the store, the leader, the instances, the queue and the next fires.

    \b
    Examples:
      jobd status
      jobd status --json | jq '.instances[] | select(.live) | .host'
    """
    from jobd.ops.quotas import group_usage
    from jobd.store import admin, mask_url
    from jobd.store.reader import Reader

    store = ctx.store
    now = store.now()
    ttl = ctx.store_config.settings.lease_ttl
    lease = admin.leader_lease(store, now)
    instances = admin.instances(store, ttl, now)
    running = Reader.over(store).executions(statuses=["running"], limit=None)
    report = {
        "store": {
            "url": mask_url(ctx.store_url),
            "backend": store.backend,
            "schema_version": admin.schema_version(store),
        },
        "leader": lease,
        "instances": instances,
        "queue_depth": store.queue_depth(),
        "running": running,
        "next_fires": admin.upcoming(store, 5),
        "groups": group_usage(store, ctx.store_config.groups),
        "checked_at": now,
    }
    if as_json:
        render.print_json(report)
        return
    _print_status(report, now, local_time)


def _role(instance: dict[str, Any]) -> str:
    """An instance's role as it stands: a dead one leads nothing any more."""
    if instance["live"] or instance["stopped_at"] or instance["role"] == "stopped":
        return str(instance["role"])
    return f"gone (was {instance['role']})"


def _print_status(report: dict[str, Any], now: datetime, local: bool) -> None:
    store = report["store"]
    live = [i for i in report["instances"] if i["live"]]
    render.fields(
        [
            ("store", f"{store['url']} ({store['backend']}, schema {store['schema_version']})"),
            ("leader", _leader_text(report["leader"], live, now)),
            ("instances", f"{len(live)} live, {len(report['instances']) - len(live)} gone"),
            ("queued", str(report["queue_depth"])),
            ("running", str(len(report["running"]))),
        ]
    )
    for section, rows in (
        (_instance_table, report["instances"]),
        (_running_table, report["running"]),
        (_group_table, report["groups"]),
        (_next_fire_table, report["next_fires"]),
    ):
        if rows:
            click.echo("")
            section(rows, now, local)


def _leader_text(lease: dict[str, Any] | None, live: list[dict[str, Any]], now: datetime) -> str:
    leading = [i for i in live if i["role"] == "leader"]
    if lease is None or (lease["holder"] is None and leading):
        # The file guard keeps no lease row; the leader says so in its heartbeat.
        if leading:
            return f"{leading[0]['id']} on {leading[0]['host']} (file lock)"
        return "none (no live daemon holds the leader guard)"
    if lease["holder"] is None:  # released by a clean stop
        return f"none (released by its last holder on {lease['host']}, epoch {lease['epoch']})"
    state = "EXPIRED" if lease["expired"] else "held"
    return (
        f"{lease['holder']} on {lease['host']}, epoch {lease['epoch']}, {state}; "
        f"acquired {render.ago(lease['acquired_at'], now)}, "
        f"expires {render.ago(lease['expires_at'], now)}"
    )


def _instance_table(instances: list[dict[str, Any]], now: datetime, local: bool) -> None:
    rows = [
        [
            i["id"],
            i["host"],
            str(i["pid"]),
            _role(i),
            str(i["running"]),
            render.ago(i["heartbeat_at"], now),
            "yes" if i["live"] else ("stopped" if i["stopped_at"] else "no"),
        ]
        for i in instances
    ]
    render.table(["INSTANCE", "HOST", "PID", "ROLE", "RUNNING", "HEARTBEAT", "LIVE"], rows)


def _running_table(running: list[dict[str, Any]], now: datetime, local: bool) -> None:
    rows = [
        [str(r["id"]), r["job"], render.moment(r["started_at"], now, local), r["host"] or "-"]
        for r in running[:RUNNING_SHOWN]
    ]
    render.table(["RUN", "JOB", "STARTED", "HOST"], rows)
    if len(running) > RUNNING_SHOWN:
        click.echo(f"… and {len(running) - RUNNING_SHOWN} more", err=True)


def _group_table(groups: list[dict[str, Any]], now: datetime, local: bool) -> None:
    rows = [
        [
            g["group"],
            quota_cell(g["active"], g["max_active"]),
            quota_cell(g["jobs"], g["max_jobs"]),
            quota_cell(g["retained"], g["max_retained"]),
        ]
        for g in groups
    ]
    styles = {1: quota_style, 2: quota_style, 3: quota_style}
    render.table(["GROUP", "ACTIVE", "JOBS", "RETAINED"], rows, styles=styles)


def _next_fire_table(fires: list[dict[str, Any]], now: datetime, local: bool) -> None:
    rows = [[f["job"], render.when(f["at"], local), render.ago(f["at"], now)] for f in fires]
    render.table(["NEXT FIRE", "AT", "IN"], rows)


@click.command()
@json_option
@pass_ctx
def check(ctx: Context, as_json: bool) -> None:
    """Monitoring probe: exit 0 when healthy, 1 with the reasons when not.

    Unhealthy: no live instance; an expired leader lease; a job overdue by
    more than max(60s, 2 x lease_ttl) while not paused; a job whose last run
    failed, timed out or was abandoned; a config file that no longer parses
    (the daemon runs on its last good config, but would not restart). The
    store unreachable: exit 69.

    \b
    Examples:
      jobd check
      jobd check --json   # for a monitor that parses the reasons
    """
    from jobd.ops.health import health

    report = health(ctx.scope())
    healthy = report.healthy
    if as_json:
        render.print_json(
            {
                "healthy": healthy,
                "reasons": [
                    {"check": p.check, "job": p.job, "message": p.message} for p in report.problems
                ],
                "live_instances": report.live_instances,
                "jobs": report.jobs,
                "checked_at": report.checked_at,
            }
        )
    elif healthy:
        click.echo(f"healthy: {report.live_instances} live instance(s), {report.jobs} job(s)")
    else:
        click.echo(f"unhealthy: {len(report.problems)} problem(s)")
        for problem in report.problems:
            click.echo(f"- {problem.message}")
    if not healthy:
        raise click.exceptions.Exit(int(ExitCode.FAILURE))


@click.command()
@click.option(
    "--keep",
    metavar="N",
    type=COUNT,
    help="Runs kept per job (default: [jobd] history.keep).",
)
@click.option(
    "--older-than",
    metavar="AGE",
    help="Delete runs that finished longer ago, e.g. 90d (default: [jobd] history.max_age).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
@json_option
@pass_ctx
def prune(
    ctx: Context, keep: int | None, older_than: str | None, dry_run: bool, as_json: bool
) -> None:
    """Enforce history retention now: delete finished runs beyond the newest
    --keep per job, or older than --older-than, and beyond the newest
    max_retained across each [groups.NAME]. Queued and running runs stay.

    0 disables a limit. --dry-run counts each limit on its own, so a run
    beyond two limits counts twice.

    \b
    Examples:
      jobd prune --dry-run
      jobd prune --keep 100 --older-than 30d
    """
    from jobd.core.durations import DurationError, parse_duration
    from jobd.errors import UsageError
    from jobd.ops.history import prune as prune_history

    try:
        max_age = parse_duration(older_than) if older_than is not None else None
    except DurationError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    pruned = prune_history(ctx.scope(whole_config=True), actor(), keep, max_age, dry_run)
    counts, by_group, total = pruned.deleted, pruned.by_group, pruned.total
    keep_n, max_age = pruned.keep, pruned.max_age
    if as_json:
        render.print_json(
            {
                "dry_run": dry_run,
                "keep": keep_n or None,
                "older_than_s": max_age or None,
                "deleted": counts,
                "groups": by_group,
                "total": total,
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    if counts:
        render.table(["JOB", "RUNS"], [[job, str(n)] for job, n in sorted(counts.items())])
    kept = f"newest {keep_n} per job kept" if keep_n else "no count limit"
    aged = f"older than {render.duration(max_age)}" if max_age else "no age limit"
    groups = "".join(
        f"; group {name}: newest {ctx.config.groups[name].max_retained} kept ({n} run(s))"
        for name, n in sorted(by_group.items())
    )
    click.echo(f"{verb} {total} run(s): {kept}, {aged}{groups}", err=True)


@click.command()
@click.option(
    "--limit",
    metavar="N",
    default=20,
    show_default=True,
    type=click.IntRange(min=1, max=MAX_INT),
    help="Events shown.",
)
@json_option
@local_option
@pass_ctx
def audit(ctx: Context, limit: int, as_json: bool, local_time: bool) -> None:
    """Show who triggered, cancelled, paused, scheduled and pruned what, newest first.

    \b
    Examples:
      jobd audit --limit 50
      jobd audit --json | jq '.[] | select(.action == "trigger")'
    """
    events = ctx.store.audit_events(limit)
    if as_json:
        render.print_json(events)
        return
    if not events:
        click.echo("no audit events yet", err=True)
        return
    now = ctx.now()
    rows = [
        [
            str(event["id"]),
            render.moment(event["at"], now, local_time),
            event["action"],
            event["actor"],
            event["target"] or "-",
            json.dumps(event["detail"], sort_keys=True) if event["detail"] else "-",
        ]
        for event in events
    ]
    render.table(["ID", "AT", "ACTION", "ACTOR", "TARGET", "DETAIL"], rows)


COMMANDS = [status, check, prune, audit]
