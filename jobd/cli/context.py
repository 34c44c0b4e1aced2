"""Option decorators every command shares, around the operations' Context.

Click is imported only by the decorators, so that fast.py can use Context
without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from jobd.ops.context import Context

F = TypeVar("F", bound=Callable[..., Any])


def pass_ctx(func: F) -> F:
    import click

    return click.make_pass_decorator(Context)(func)  # type: ignore[return-value]


def json_option(func: F) -> F:
    import click

    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def local_option(func: F) -> F:
    import click

    return click.option(
        "--local", "local_time", is_flag=True, help="Show local times instead of UTC."
    )(func)
