"""Which leader guard a daemon takes: `leader = 'auto' | 'file' | 'table'`.

`auto` is the file lock beside a SQLite store (one host; a standby takes over
within milliseconds of the leader's death) and the table lease elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from jobd.core.model import LeaderMode, Settings
from jobd.errors import ConfigError
from jobd.leader import LeaderGuard
from jobd.leader.filelock import FileLeader
from jobd.leader.lease import TableLeader
from jobd.store import Store
from jobd.store.files import leader_lock_path
from jobd.store.urls import sqlite_path
from jobd.system.clock import Clock


def choose_leader(
    store: Store,
    settings: Settings,
    instance: str,
    host: str,
    clock: Clock,
    on_change: Callable[[], None],
) -> LeaderGuard:
    """The guard `settings.leader` names for `store`; ConfigError when the store
    cannot have it. `on_change` is called from a thread when a file lock is won."""
    sqlite = store.backend == "sqlite"
    mode = settings.leader
    if mode is LeaderMode.AUTO:
        mode = LeaderMode.FILE if sqlite else LeaderMode.TABLE
    if mode is LeaderMode.FILE:
        if not sqlite:
            raise ConfigError(
                "leader = 'file' needs a SQLite store; use 'table'", key="jobd.leader"
            )
        return FileLeader(leader_lock_path(sqlite_path(store.url)), on_change)
    return TableLeader(store, instance, host, settings.lease_ttl, settings.max_clock_skew, clock)
