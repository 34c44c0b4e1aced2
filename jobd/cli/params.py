"""Parameter types shared by the commands: statuses, run ids, job names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


class StatusChoice(click.Choice):
    """The values of model.Status, read from the enum only when the option is used or shown.

    A plain click.Choice would need the model imported at load time, and every
    command would pay for its dataclasses (see bench/cli_latency.py).
    """

    name = "status"

    def __init__(self) -> None:
        self.case_sensitive = False

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        from jobd.core.model import Status

        return tuple(status.value for status in Status)


class JobName(click.ParamType):
    """A job name; completes from the store when the shell asks."""

    name = "name"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[Any]:
        from click.shell_completion import CompletionItem

        from jobd.ops.context import Context
        from jobd.store.reader import open_reader

        obj = ctx.find_object(Context) or Context(config_path=None, store_override=None)
        try:
            # Only a store that exists already: completing must not create one.
            reader = open_reader(obj.store_url)
            if reader is None:
                return []
            try:
                names = reader.job_names()
            finally:
                reader.close()
        except Exception:
            return []  # completion must never print a traceback into the shell
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]


JOB_NAME = JobName()
# The stores' integers are 64-bit: a larger number would fail in the driver.
MAX_INT = 2**63 - 1
RUN_ID = click.IntRange(min=1, max=MAX_INT)
COUNT = click.IntRange(min=0, max=MAX_INT)
