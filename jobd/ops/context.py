"""Where a front end's operations act: the config file and the store, found from
`--config`/`--store` (or their environment variables and defaults), opened once
and lazily; and who is acting.

The CLI and the Python client's store mode share it, so both find the same
config and store the same way. It imports nothing heavy at load, so that the
CLI's fast path can use it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobd.errors import ConfigError

if TYPE_CHECKING:
    from jobd.core.model import Config
    from jobd.ops.scope import Scope
    from jobd.store import Store
    from jobd.store.reader import Reader

# The commands that create a SQLite store that does not exist yet: the daemon,
# and the commands that write a job's state (`schedule` defines a job with no
# config file; `pause` and `resume` may come before any daemon ran). `trigger
# --local` creates one too (see jobd.cli.runs). Any other command given a
# missing store says "no store at PATH" (exit 69).
STORE_CREATORS = frozenset({"run", "schedule", "pause", "resume"})


class Context:
    def __init__(
        self, config_path: str | None, store_override: str | None, create_store: bool = False
    ) -> None:
        self.config_path = config_path
        self.store_override = store_override
        # Only the commands in STORE_CREATORS make a SQLite store that is not there:
        # the others would leave an empty one where a daemon's store vanished.
        self.create_store = create_store
        self._config: Config | None = None
        self._settings_only: Config | None = None
        # Why the config file did not load, once a command went on without it.
        self.config_problem: ConfigError | None = None
        self._store: Store | None = None
        self._reader: Reader | None = None

    @property
    def config(self) -> Config:
        """The whole config, for commands that act on its jobs: an error if it is broken."""
        if self._config is None:
            if self.config_problem is not None:
                raise self.config_problem
            from jobd.system.paths import load_config

            self._config = load_config(self.config_path, store_override=self.store_override)
        return self._config

    @property
    def store_config(self) -> Config:
        """The config for commands that need the store and the `[jobd]` settings only.

        The daemon keeps running on its last good config when the file breaks,
        so a broken file must not lock the operator out of it: these commands
        say once on stderr what is wrong and go on with the file's `[jobd]`
        table and no config jobs. A broken `[jobd]` table is still an error,
        as then even the store is unknown.
        """
        if self._config is not None:
            return self._config
        if self._settings_only is None:
            from jobd.system.paths import load_config_or_settings

            config, problem = load_config_or_settings(
                self.config_path, store_override=self.store_override
            )
            if problem is None:
                self._config = config
                return config
            self._settings_only, self.config_problem = config, problem
            import sys

            print(
                f"jobd: warning: {problem}; went on without the config's jobs "
                "(the daemon keeps its last good config)",
                file=sys.stderr,
            )
        return self._settings_only

    @property
    def store_url(self) -> str:
        from jobd.system.paths import store_override, store_url

        override = store_override(self.store_override, os.environ)
        if override:
            return override

        return store_url(self.store_config)

    @property
    def store(self) -> Store:
        if self._store is None:
            from jobd.store.drivers import load_orm
            from jobd.store.urls import backend_of

            url = self.store_url
            load_orm(backend_of(url))
            from jobd.store import open_store
            from jobd.system.hooks import HOST

            self._store = open_store(url, create=self.create_store, hooks=HOST)
        return self._store

    def reader(self) -> Reader:
        """Read-only history queries without the ORM (see jobd.store.reader).

        A missing, older or newer store is opened through Store first, which
        creates, migrates or refuses it.
        """
        if self._reader is None:
            from jobd.store.reader import Reader, open_reader

            reader = None
            if self._store is None:
                url = self.store_url if self._config is not None else self._history_store_url()
                reader = open_reader(url)
            self._reader = reader or Reader.over(self.store)
        return self._reader

    def _history_store_url(self) -> str:
        """The store URL without parsing the config: `--store`, $JOBD_STORE, the
        config file's `[jobd] store`, or the default.

        Reading history needs nothing else, and parsing and validating every
        job (cron expressions, time zones) costs more than the query itself
        (bench/cli_latency.py). Commands that act on jobs load the whole config.
        """
        import tomllib
        from pathlib import Path

        from jobd.core.urls import check_store_url
        from jobd.system.paths import (
            check_config_ownership,
            default_store_url,
            locate_config,
            store_override,
        )

        override = store_override(self.store_override, os.environ)
        if override:
            return override

        path = locate_config(self.config_path, os.environ, Path.cwd())
        if path is None:
            return default_store_url()
        check_config_ownership(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
        except tomllib.TOMLDecodeError:
            # A broken file: say so once, and read its [jobd] table on its own.
            return self.store_url
        table = data.get("jobd")
        store = table.get("store") if isinstance(table, dict) else None
        if store is None:
            return default_store_url()
        if not isinstance(store, str):
            raise ConfigError("expected a string", file=str(path), key="jobd.store")
        check_store_url(store, str(path), "jobd.store")
        return store

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def scope(self, whole_config: bool = False) -> Scope:
        """What the operations act on (jobd.ops): the store and the config.

        `whole_config` for operations that need the config's jobs: a broken file
        is then an error, in one line, rather than a warning."""
        from jobd.ops.scope import Scope

        config = self.config if whole_config else self.store_config
        return Scope(self.store, config, self.config_problem)

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
