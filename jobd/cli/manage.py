"""Commands that change jobs in the store: pause, resume, schedule, unschedule."""

from __future__ import annotations

import click

from jobd.cli import render
from jobd.cli.context import Context, actor, pass_ctx
from jobd.cli.params import JOB_NAME
from jobd.errors import UsageError


@click.command()
@click.argument("name", type=JOB_NAME)
@pass_ctx
def pause(ctx: Context, name: str) -> None:
    """Stop firing NAME's schedule until `jobd resume NAME`.

    The pause is kept in the store: it survives daemon restarts and config
    reloads. Runs already queued or running go on; manual triggers still run.

    \b
    Example:
      jobd pause cost_sync
    """
    _set_paused(ctx, name, True)


@click.command()
@click.argument("name", type=JOB_NAME)
@pass_ctx
def resume(ctx: Context, name: str) -> None:
    """Fire NAME's schedule again after `jobd pause`.

    Fires missed while paused follow the job's `catchup` policy.

    \b
    Example:
      jobd resume cost_sync
    """
    _set_paused(ctx, name, False)


def _set_paused(ctx: Context, name: str, paused: bool) -> None:
    """A config job that no daemon applied yet can be paused too: it gets a row
    that no daemon fires (Store.add_unapplied_job), and stays paused once applied."""
    record, spec = ctx.find_job(name)
    store = ctx.store
    if record is None:
        assert spec is not None
        store.add_unapplied_job(spec, store.now())
        record = store.job(name)
        assert record is not None
    verb = "paused" if paused else "resumed"
    if record.paused == paused:
        click.echo(f"{name} is already {'paused' if paused else 'active'}")
        return
    store.set_paused(name, paused, store.now())
    store.audit("pause" if paused else "resume", actor(), name)
    click.echo(f"{verb} {name}")


@click.command()
@click.argument("name")
@click.argument("cron")
@click.argument("command", nargs=-1, required=True)
@click.option("--tz", metavar="ZONE", help="Time zone of the schedule (default: [jobd] timezone).")
@click.option("--timeout", metavar="DURATION", help="Stop runs after this long, e.g. 30m.")
@click.option("--description", metavar="TEXT", help="What the job is for.")
@click.option(
    "--group",
    metavar="GROUP",
    help="Count the job against a [groups.GROUP] quota of the config.",
)
@pass_ctx
def schedule(
    ctx: Context,
    name: str,
    cron: str,
    command: tuple[str, ...],
    tz: str | None,
    timeout: str | None,
    description: str | None,
    group: str | None,
) -> None:
    """Create or replace a store-only job, as pg_cron's cron.schedule does.

    The job's command comes after `--`, as an argv list, never through a
    shell. Jobs from the config file keep their names: scheduling one of those
    is refused. Applying the config never touches jobs made here. With
    --group, a group already holding max_jobs jobs refuses a new one: exit 75,
    audited as quota.refused.

    \b
    Examples:
      jobd schedule vacuum "0 3 * * *" -- psql -c "VACUUM ANALYZE" app
      jobd schedule report "@every 15m" --tz Europe/Berlin --timeout 5m -- ./report.sh
      jobd schedule tenant_a_scan "0 1 * * *" --group tenant-a -- agent-bom scan --tenant a
    """
    from jobd.config import parse_job
    from jobd.model import Source

    raw: dict[str, object] = {"schedule": cron, "command": list(command)}
    for key, value in (("timeout", timeout), ("description", description), ("group", group)):
        if value is not None:
            raw[key] = value
    # The zone goes in as the default rather than a `timezone` key: config.py's
    # JOB_KEYS does not list that key (yet), while parse_job validates either.
    spec = parse_job(
        name,
        raw,
        file="command line",
        environ={},
        default_tz=tz or ctx.config.settings.timezone,
        source=Source.CLI,
        groups=ctx.config.groups,
    )
    store = ctx.store
    existing = store.job(name)
    in_file = name in ctx.config.jobs
    if in_file or (
        existing is not None and existing.source is Source.FILE and not existing.removed
    ):
        where = f" in {ctx.config.path}" if in_file else ""
        raise UsageError(
            f"job {name!r} is defined in the config file{where}; change it there "
            "(`jobd schedule` manages store-only jobs)"
        )
    quota = ctx.config.groups.get(spec.group or "")
    if quota is not None and quota.max_jobs:
        from jobd.cli.quotas import upsert_or_refuse

        created = upsert_or_refuse(store, spec, quota)
    else:
        created = store.upsert_cli_job(spec, store.now())
    detail = {"schedule": spec.schedule, "timezone": spec.timezone, "command": list(command)}
    if spec.group:
        detail["group"] = spec.group
    store.audit("schedule", actor(), name, detail)
    record = store.job(name)
    when = render.when(record.next_fire_at) if record and record.next_fire_at else "never"
    click.echo(f"{'created' if created else 'updated'} {name}: next fire {when}")


schedule.usage_hint = "put the job's command after --: jobd schedule NAME CRON -- CMD ARGS..."  # type: ignore[attr-defined]


@click.command()
@click.argument("name", type=JOB_NAME)
@pass_ctx
def unschedule(ctx: Context, name: str) -> None:
    """Remove a store-only job made with `jobd schedule`; its run history stays.

    Jobs from the config file are removed by deleting them from the file.

    \b
    Example:
      jobd unschedule vacuum
    """
    from jobd.model import Source

    record, _spec = ctx.find_job(name)
    if record is None or record.source is not Source.CLI:
        raise UsageError(
            f"job {name!r} comes from the config file; remove it there "
            "(`jobd unschedule` removes jobs made with `jobd schedule`)"
        )
    store = ctx.store
    store.remove_job(name, store.now())
    store.audit("unschedule", actor(), name)
    click.echo(f"removed {name}; its history stays (jobd executions --job {name})")


COMMANDS = [pause, resume, schedule, unschedule]
