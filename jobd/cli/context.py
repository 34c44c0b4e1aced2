"""What every command shares: the loaded config, the store, and option decorators.

Click is imported only by the decorators, so that fast.py can use Context
without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from jobd.errors import NotFound, did_you_mean

if TYPE_CHECKING:
    from jobd.model import Config
    from jobd.store import JobRecord, Store
    from jobd.store.reader import Reader

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    def __init__(self, config_path: str | None, store_override: str | None) -> None:
        self.config_path = config_path
        self.store_override = store_override
        self._config: Config | None = None
        self._store: Store | None = None
        self._reader: Reader | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from jobd.paths import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def store_url(self) -> str:
        override = self.store_override or os.environ.get("JOBD_STORE")
        if override:
            return override
        from jobd.paths import store_url

        return store_url(self.config)

    @property
    def store(self) -> Store:
        if self._store is None:
            from jobd.store import open_store

            self._store = open_store(self.store_url)
        return self._store

    def reader(self) -> Reader:
        """Read-only history queries without the ORM (see jobd.store.reader).

        A missing, older or newer store is opened through Store first, which
        creates, migrates or refuses it.
        """
        if self._reader is None:
            from jobd.store.reader import Reader, open_reader

            reader = None if self._store is not None else open_reader(self.store_url)
            self._reader = reader or Reader.over(self.store)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def job(self, name: str) -> JobRecord:
        record = self.store.job(name)
        if record is None or record.removed:
            names = [r.name for r in self.store.jobs()]
            hint = did_you_mean(name, names)
            raise NotFound(f"unknown job {name!r}" + (f" ({hint})" if hint else ""))
        return record

    def now(self) -> datetime:
        return datetime.now(UTC)


def actor() -> str:
    """user@host of whoever runs this command, for audit events and triggered_by."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


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
