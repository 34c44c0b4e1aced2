"""Commands for watching jobd from outside: metrics, and the live view (top)."""

from __future__ import annotations

import sys

import click

from jobd.cli.context import pass_ctx
from jobd.ops.context import Context


@click.command()
@pass_ctx
def metrics(ctx: Context) -> None:
    """Print the store's metrics in Prometheus text format.

    Each job's next fire, last success and pause state, the queue depth and the
    runs going on, as a daemon that leads serves them on /metrics: for
    node_exporter's textfile collector on hosts that do not scrape jobd itself.
    Run it on one host only, or the series come twice.

    \b
    Examples:
      jobd metrics
      jobd metrics > /var/lib/node_exporter/jobd.prom.$$ &&
        mv /var/lib/node_exporter/jobd.prom.$$ /var/lib/node_exporter/jobd.prom
    """
    from jobd.observe.metrics import render

    sys.stdout.buffer.write(render(ctx.reader()))
    sys.stdout.flush()


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between redraws.",
)
@pass_ctx
def top(ctx: Context, interval: float) -> None:
    """Watch jobd live: running runs, queue, leader, next fires, failures, durations.

    Redraws every second; q or Ctrl-C quits. Each job's duration trend over its
    last successful runs is a sparkline. On a pipe it prints one screen.

    \b
    Examples:
      jobd top
      jobd top --interval 0.5
    """
    from jobd.cli.top import run

    run(ctx.store, ctx.store_config.settings.lease_ttl, interval)


COMMANDS = [metrics, top]
