"""Commands for watching jobd from outside: metrics (and the live view, top)."""

from __future__ import annotations

import sys

import click

from jobd.cli.context import Context, pass_ctx


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
    from jobd.metrics import render

    sys.stdout.buffer.write(render(ctx.reader()))
    sys.stdout.flush()


COMMANDS = [metrics]
