"""Commands that change jobs in the store: pause, resume, schedule, unschedule."""

from __future__ import annotations

import click

from jobd.cli import render
from jobd.cli.context import pass_ctx
from jobd.cli.params import JOB_NAME
from jobd.ops.context import Context, actor


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

    NAME fires at its next slot after now: the slots it slept through while
    paused are not caught up (its `catchup` policy is for fires missed while no
    daemon ran). Running daemons act on it at once.

    \b
    Example:
      jobd resume cost_sync
    """
    _set_paused(ctx, name, False)


def _set_paused(ctx: Context, name: str, paused: bool) -> None:
    from jobd.ops.jobs import set_paused

    change = set_paused(ctx.scope(), actor(), name, paused)
    if not change.changed:
        click.echo(f"{name} is already {'paused' if paused else 'active'}")
    else:
        click.echo(f"{'paused' if paused else 'resumed'} {name}")


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
    from jobd.ops.jobs import schedule as schedule_job

    fields: dict[str, object] = {"schedule": cron, "command": list(command)}
    for key, value in (
        ("timezone", tz),
        ("timeout", timeout),
        ("description", description),
        ("group", group),
    ):
        if value is not None:
            fields[key] = value
    done = schedule_job(ctx.scope(whole_config=True), actor(), name, fields)
    next_fire = done.record.next_fire_at
    when = render.when(next_fire) if next_fire else "never"
    click.echo(f"{'created' if done.created else 'updated'} {name}: next fire {when}")


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
    from jobd.ops.jobs import unschedule as unschedule_job

    unschedule_job(ctx.scope(), actor(), name)
    click.echo(f"removed {name}; its history stays (jobd executions --job {name})")


COMMANDS = [pause, resume, schedule, unschedule]
