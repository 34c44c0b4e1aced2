"""What every part of Store (jobs.py, runs.py, instances.py, lease.py) shares."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import peewee as pw

from jobd.store.dialect import Dialect
from jobd.store.specs import SpecCache

if TYPE_CHECKING:
    from jobd.core.model import NewRun


class Part:
    """The connection, the dialect and the parsed specs, which Store sets up; and,
    for the type checker, what Store and its other parts give each part."""

    db: pw.Database
    dialect: Dialect
    specs: SpecCache

    if TYPE_CHECKING:

        def atomic(self) -> AbstractContextManager[None]: ...
        def now(self) -> datetime: ...
        def wake_daemons(self) -> None: ...
        def _moving_fires(self) -> AbstractContextManager[list[bool]]: ...
        def _wake_in_transaction(self) -> None: ...
        def _wake_after_commit(self) -> None: ...
        def _run_row(self, run: NewRun, now: datetime, epoch: int | None = None) -> tuple: ...
        def check_epoch(self, epoch: int) -> datetime: ...
        def end_runs(self, ends: Sequence[tuple[Any, ...]]) -> set[int]: ...
        def _active_jobs(
            self, jobs: Sequence[Any], now: datetime, active_within: float | None
        ) -> set[str]: ...
