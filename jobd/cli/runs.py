"""Commands about runs: trigger, executions, show, logs, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from jobd.cli import history, render
from jobd.cli.context import json_option, local_option, pass_ctx
from jobd.cli.follow import await_run, finish, interrupted, interruptible, waiting
from jobd.cli.params import COUNT, JOB_NAME, RUN_ID, StatusChoice
from jobd.errors import JobdError, NotFound, UsageError
from jobd.ops.context import Context, actor

if TYPE_CHECKING:
    from jobd.ops.runs import Triggered


@click.command()
@click.argument("name", type=JOB_NAME)
@click.option("--wait", is_flag=True, help="Block until the run ends; exit with its outcome.")
@click.option("--follow", is_flag=True, help="Also stream its output (implies --wait).")
@click.option("--local", "local_run", is_flag=True, help="Run it in this process, not by a daemon.")
@json_option
@pass_ctx
def trigger(
    ctx: Context, name: str, wait: bool, follow: bool, local_run: bool, as_json: bool
) -> None:
    """Queue a run of NAME now and print its id.

    A live daemon on the same store picks it up within milliseconds. Without
    one, nothing would run it: the command says so and exits 69 without
    queueing, unless --local runs it here. A job whose group already has
    max_active runs queued or running is refused at once: exit 75, audited
    as quota.refused.

    \b
    Exit codes with --wait/--follow: 0 succeeded, 1 failed (or cancelled,
    abandoned, skipped), 124 timed out, 130 Ctrl-C (the run goes on).

    \b
    Examples:
      jobd trigger backup
      jobd trigger backup --wait
      jobd trigger backup --follow
      id=$(jobd trigger backup) && jobd logs "$id" --follow
    """
    from jobd.ops.runs import no_daemon
    from jobd.ops.runs import trigger as trigger_run
    from jobd.store.files import MissingStore

    if wait or follow:
        interruptible()
    run_local = _local_executor() if local_run else None
    if local_run:
        ctx.create_store = True  # a first run here may come before any daemon made it
    try:
        # --local runs the file's definition: a broken file is its error, in one
        # line, not a warning that it went on without it and then the error.
        scope = ctx.scope(whole_config=local_run)
    except MissingStore as exc:  # no daemon ever ran on it
        raise no_daemon(name, f"no store at {exc.database} yet") from None
    queued = trigger_run(scope, actor(), name, local=local_run)
    if queued.differs_from_file:
        click.echo(
            f"jobd: {name} differs in {scope.config.path} from what the daemon "
            "applied; this run uses the applied definition (reload the daemon to "
            "apply the file: SIGHUP, `systemctl reload jobd`)",
            err=True,
        )
    try:
        _after_queueing(ctx, queued, wait, follow, run_local, as_json)
    except KeyboardInterrupt:
        if run_local is not None:
            raise  # the run stopped with this process; nothing goes on
        interrupted(queued.run_id)


def _after_queueing(
    ctx: Context, queued: Triggered, wait: bool, follow: bool, run_local: Any, as_json: bool
) -> None:
    """Once the run is queued, Ctrl-C leaves it queued: everything here may be interrupted."""
    name, run_id = queued.job, queued.run_id
    if queued.paused:
        click.echo(f"jobd: {name} is paused; its schedule stays paused, this run goes", err=True)
    if not as_json:
        click.echo(run_id)
    if run_local is not None:
        run_local(ctx.store, ctx.store_config, run_id, queued.spec)
        wait = True
    if not (wait or follow):
        if as_json:
            render.print_json(_run_json(ctx.reader().execution(run_id, with_log=False)))
        elif render.interactive(err=True):
            click.echo(f"queued run {run_id}; follow it: jobd logs {run_id} --follow", err=True)
        return
    reader = ctx.reader()
    with waiting(name, run_id, spinner=not follow) as tick:
        state = await_run(reader, run_id, follow=follow, on_tick=tick)
    if as_json:
        render.print_json(_run_json(reader.execution(run_id, with_log=False)))
    finish(state)


def _local_executor() -> Any:
    """The daemon's executor, to run a job in this process (`trigger --local`)."""
    try:
        from jobd.runs.local import run_local
    except ModuleNotFoundError as exc:
        if exc.name not in ("jobd.runs.local", "jobd"):
            raise
        raise JobdError(
            "--local needs the in-process executor (jobd.runs.local), which this build lacks"
        ) from None
    return run_local


def _run_json(row: dict[str, Any] | None) -> dict[str, Any]:
    from jobd.core.records import RUN_KEYS

    assert row is not None
    return {key: row[key] for key in RUN_KEYS}


@click.command()
@click.option("--job", "--job-type", "job", type=JOB_NAME, help="Only this job's runs.")
@click.option(
    "--status",
    "statuses",
    type=StatusChoice(),
    multiple=True,
    help="Only runs in this status; repeat for several.",
)
@click.option("--since", metavar="WHEN", help="Only runs queued since: 1d, 2h30m, or a time.")
@click.option(
    "--limit",
    default=10,
    show_default=True,
    type=COUNT,
    help="At most this many, newest first; 0 for all.",
)
@json_option
@local_option
@pass_ctx
def executions(
    ctx: Context,
    job: str | None,
    statuses: tuple[str, ...],
    since: str | None,
    limit: int,
    as_json: bool,
    local_time: bool,
) -> None:
    """List runs, newest first.

    \b
    Examples:
      jobd executions --limit 10
      jobd executions --job backup --status failed --status timed_out --since 7d
      jobd executions --json | jq '.[] | select(.status == "failed") | .id'
    """
    history.list_runs(ctx, job, statuses, since, limit, as_json, local_time)


def _execution(ctx: Context, run_id: int, with_log: bool = True) -> dict[str, Any]:
    row = ctx.reader().execution(run_id, with_log=with_log)
    if row is None:
        raise NotFound(f"no run with id {run_id} (see `jobd executions`)")
    return row


@click.command()
@click.argument("run_id", metavar="ID", type=RUN_ID)
@json_option
@local_option
@pass_ctx
def show(ctx: Context, run_id: int, as_json: bool, local_time: bool) -> None:
    """Show one run: every field, then the kept tail of its output.

    \b
    Examples:
      jobd show 4711
      jobd show 4711 --json | jq .exit_code
    """
    row = _execution(ctx, run_id)
    if as_json:
        render.print_json(row)
        return
    now = ctx.now()

    def at(key: str) -> str:
        value = row[key]
        if value is None:
            return "-"
        return f"{render.when(value, local_time)} ({render.ago(value, now)})"

    by = f" by {row['triggered_by']}" if row["triggered_by"] else ""
    retry = f" (retry of run {row['retry_of']})" if row["retry_of"] else ""
    render.fields(
        [
            ("id", str(row["id"])),
            ("job", row["job"]),
            ("status", row["status"] + (" (cancel requested)" if row["cancel_requested"] else "")),
            ("trigger", f"{row['trigger']}{by}"),
            ("attempt", f"{row['attempt']}{retry}"),
            ("scheduled for", at("scheduled_for")),
            ("queued", at("queued_at")),
            ("not before", at("not_before")),
            ("started", at("started_at")),
            ("finished", at("finished_at")),
            ("duration", history.took(row, now)),
            ("exit code", history.exit_text(row)),
            ("error", row["error"] or "-"),
            ("instance", row["instance"] or "-"),
            ("host", row["host"] or "-"),
            ("pid", str(row["pid"]) if row["pid"] is not None else "-"),
            ("config hash", row["config_hash"] or "-"),
            ("leader epoch", str(row["epoch"]) if row["epoch"] is not None else "-"),
            ("output", _output_summary(row["log"], row["log_bytes"])),
            *_notifications(ctx, row),
        ]
    )
    if row["log"]:
        click.echo("")
        click.echo(row["log"], nl=not row["log"].endswith("\n"))


def _notifications(ctx: Context, row: dict[str, Any]) -> list[tuple[str, str]]:
    """One line per channel told of this run, as the daemon recorded it."""
    from jobd.store.notices import deliveries

    lines = []
    for sent in deliveries(ctx.reader(), row["job"], row["id"]):
        attempts = sent.get("attempts", 1)
        if sent["delivered"]:
            text = f"{sent['channel']}: {sent['event']} delivered"
            if attempts > 1:
                text += f" (attempt {attempts})"
        else:
            text = (
                f"{sent['channel']}: {sent['event']} NOT delivered after {attempts} "
                f"attempt{'s' if attempts != 1 else ''}: {sent.get('error', '?')}"
            )
        lines.append(("notified" if not lines else "", text))
    return lines


def _output_summary(log: str, total: int) -> str:
    kept = len(log.encode())
    if total == 0:
        return "none"
    lines = log.count("\n") + (0 if log.endswith("\n") or not log else 1)
    if kept >= total:
        return f"{render.size(total)}, {lines} lines, all kept"
    return f"{render.size(total)}; the last {lines} lines ({render.size(kept)}) kept"


@click.command()
@click.argument("run_id", metavar="[ID]", type=RUN_ID, required=False)
@click.option(
    "--job", "job", type=JOB_NAME, metavar="NAME", help="The latest run of NAME instead of an ID."
)
@click.option("--follow", "-f", is_flag=True, help="Stream new output until the run ends.")
@json_option
@pass_ctx
def logs(ctx: Context, run_id: int | None, job: str | None, follow: bool, as_json: bool) -> None:
    """Print the output a run captured (the last `log_lines` lines).

    With --job NAME, the latest run of NAME; with --follow too, its running run
    (or the one queued next). With --follow, keep printing as the output grows,
    then say how the run ended and exit with its outcome like `trigger --wait`:
    0, 1, 124, or 130 on Ctrl-C.

    \b
    Examples:
      jobd logs 4711
      jobd logs 4711 --follow
      jobd logs --job backup --follow
    """
    if follow and as_json:
        raise UsageError("--json prints the output once; it cannot be combined with --follow")
    if (run_id is None) == (job is None):
        both = run_id is not None
        raise UsageError("give a run ID or --job NAME" + (", not both" if both else ""))
    if follow:
        interruptible()
    if job is not None:
        run_id = _latest_run_of(ctx, job, follow)
    assert run_id is not None
    row = _execution(ctx, run_id, with_log=not follow)
    if as_json:
        keys = ("id", "job", "status", "log_bytes", "log")
        render.print_json({key: row[key] for key in keys})
        return
    if not follow:
        log, total = row["log"], row["log_bytes"]
        if total > len(log.encode()):
            click.echo(f"jobd: {total - len(log.encode())} earlier bytes were not kept", err=True)
        click.echo(log, nl=bool(log) and not log.endswith("\n"))
        return
    with waiting(row["job"], run_id, spinner=False) as tick:
        state = await_run(ctx.reader(), run_id, follow=True, on_tick=tick)
    finish(state)


def _latest_run_of(ctx: Context, job: str, follow: bool) -> int:
    """The run `logs --job` shows: the latest; to follow, the running one (the
    oldest still running), else the next queued one, else the latest."""
    from jobd.errors import did_you_mean

    reader = ctx.reader()
    if follow:
        for status in ("running", "queued"):
            active = reader.executions(job=job, statuses=[status], limit=None)
            if active:
                return int(active[-1]["id"])
    latest = reader.executions(job=job, limit=1)
    if latest:
        return int(latest[0]["id"])
    if reader.job_exists(job):
        raise NotFound(f"job {job!r} has no runs yet")
    hint = did_you_mean(job, reader.job_names())
    raise NotFound(f"unknown job {job!r}" + (f" ({hint})" if hint else ""))


@click.command()
@click.argument("run_id", metavar="ID", type=RUN_ID)
@pass_ctx
def cancel(ctx: Context, run_id: int) -> None:
    """Cancel a queued run at once, or ask the daemon to stop a running one.

    A running run's process group gets SIGTERM, then SIGKILL after the kill
    grace; it ends as `cancelled`. A finished run cannot be cancelled (exit 1).

    \b
    Example:
      jobd cancel 4711
    """
    from jobd.ops.runs import cancel as cancel_run

    done = cancel_run(ctx.scope(), actor(), run_id)
    if done.was == "queued":
        click.echo(f"cancelled run {run_id} ({done.job}) before it started")
    else:
        host = f" on {done.host}" if done.host else ""
        click.echo(
            f"asked the daemon{host} to stop run {run_id} ({done.job}); "
            f"follow it: jobd logs {run_id} --follow"
        )


COMMANDS = [trigger, executions, show, logs, cancel]
