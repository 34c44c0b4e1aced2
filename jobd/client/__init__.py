"""The Python client: steer jobd from a program, directly on the store or over HTTP.

    from jobd import Client

    client = Client(store="postgresql://jobd@db/jobd")          # no server needed
    client = Client(url="http://127.0.0.1:8089", token=TOKEN)   # the HTTP API
    run = client.trigger("backup")
    run = run.wait(timeout=60)

Both modes have the same methods and return the same types; failures raise
the jobd.errors types (NotFound, QuotaRefused, NoDaemon, ...) with the CLI's
wording. The direct mode calls the operations layer (jobd.ops) exactly as the
CLI does, so quotas, audit rows and wake-ups are the same; the HTTP mode uses
only the standard library (urllib).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobd.core.model import Run as RecordedRun
from jobd.core.model import Status, Trigger
from jobd.core.records import STATUSES
from jobd.errors import UsageError

if TYPE_CHECKING:
    from jobd.client.direct import StoreTransport
    from jobd.client.http import HttpTransport

FINAL = frozenset(STATUSES) - {"queued", "running"}
LONG_POLL_S = 60.0  # one HTTP long poll; a longer wait asks again


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Run(RecordedRun):
    """One run of a job, as `jobd show --json` has it (without its output): the
    recorded run of jobd.core.model, with `wait()`."""

    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, row: Mapping[str, Any], client: Client) -> Run:
        known = {f.name for f in fields(cls)} - {"_client", "log"}
        values = {key: value for key, value in row.items() if key in known}
        for key in ("queued_at", "scheduled_for", "started_at", "finished_at", "not_before"):
            values[key] = _time(values.get(key))
        values["trigger"] = Trigger(values["trigger"])
        values["status"] = Status(values["status"])
        return cls(**values, _client=client)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def wait(self, timeout: float | None = None) -> Run:
        """This run once it ended; TimeoutError when `timeout` seconds pass first."""
        assert self._client is not None
        return self._client.wait(self.id, timeout)


@dataclass(frozen=True)
class Job:
    """A job as `jobd list --json` shows it; `next_fires` from client.job() only."""

    name: str
    schedule: str | None
    timezone: str
    next_fire: datetime | None
    last_status: str | None
    paused: bool
    enabled: bool
    source: str
    applied: str
    description: str
    group: str | None
    next_fires: tuple[datetime, ...] = ()

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Job:
        values = dict(row)
        values["next_fire"] = _time(values.get("next_fire"))
        values["next_fires"] = tuple(_time(v) for v in values.get("next_fires", ()))
        return cls(**values)


@dataclass(frozen=True)
class Scheduled:
    job: str
    created: bool  # False: an existing store-only job was replaced
    next_fire: datetime | None


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime | None
    action: str
    actor: str
    target: str | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> AuditEvent:
        return cls(**{**row, "at": _time(row["at"])})


class Client:
    """`Client(store=URL)` acts on the store itself; `Client(url=..., token=...)` over HTTP.

    The direct mode reads the config file as the CLI does (`config`, else
    $JOBD_CONFIG, ./jobd.toml, ...) for its jobs and group quotas, and records
    `actor` (default user@host) in the audit trail. Over HTTP the token's name is
    the actor."""

    def __init__(
        self,
        store: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        config: str | None = None,
        actor: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (store is None) == (url is None):
            raise UsageError("Client needs either store=URL (direct) or url=... (HTTP)")
        # Each mode's module is imported here, on first use, and only that one: the
        # HTTP mode never loads the store's ORM, nor the store mode urllib.
        self._transport: StoreTransport | HttpTransport
        if store is not None:
            from jobd.client.direct import StoreTransport

            self._transport = StoreTransport(store, config, actor)
        else:
            assert url is not None
            from jobd.client.http import HttpTransport

            self._transport = HttpTransport(url, token, timeout)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs --------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        return [Job.of(row) for row in self._transport.jobs()]

    def job(self, name: str) -> Job:
        return Job.of(self._transport.job(name))

    def trigger(self, name: str) -> Run:
        """Queue a run now, as `jobd trigger NAME`; NoDaemon when no live daemon would
        run it (nothing is queued), QuotaRefused over the group's max_active."""
        return Run.of(self._transport.trigger(name, 0.0), self)

    def pause(self, name: str) -> bool:
        """Stop firing NAME's schedule; False when it was paused already."""
        return bool(self._transport.set_paused(name, True)["changed"])

    def resume(self, name: str) -> bool:
        return bool(self._transport.set_paused(name, False)["changed"])

    def schedule(
        self,
        name: str,
        schedule: str | None = None,
        command: list[str] | None = None,
        **table: Any,
    ) -> Scheduled:
        """Create or replace a store-only job from a `[jobs.NAME]` table's keys,
        validated as in a config file (ConfigError names the key)."""
        fields_: dict[str, Any] = dict(table)
        if schedule is not None:
            fields_["schedule"] = schedule
        if command is not None:
            fields_["command"] = list(command)
        done = self._transport.schedule(name, fields_)
        return Scheduled(done["job"], done["created"], _time(done["next_fire"]))

    def unschedule(self, name: str) -> None:
        self._transport.unschedule(name)

    # -- runs --------------------------------------------------------------------

    def execution(self, run_id: int) -> Run:
        return Run.of(self._transport.execution(run_id), self)

    def executions(
        self,
        job: str | None = None,
        status: str | list[str] | None = None,
        since: str | None = None,
        limit: int = 10,
    ) -> list[Run]:
        """Runs, newest first, as `jobd executions`; `since` is 1d, 2h30m or a time."""
        statuses = [status] if isinstance(status, str) else list(status or [])
        rows = self._transport.executions(job, statuses, since, limit)
        return [Run.of(row, self) for row in rows]

    def cancel(self, run_id: int) -> str:
        """Cancel a queued run, or ask the daemon to stop a running one; returns
        what it was ("queued" or "running"). InvalidState when it already ended."""
        return str(self._transport.cancel(run_id)["was"])

    def wait(self, run_id: int, timeout: float | None = None) -> Run:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = LONG_POLL_S if deadline is None else deadline - time.monotonic()
            row = self._transport.wait(run_id, max(0.0, min(LONG_POLL_S, left)))
            if row["status"] in FINAL:
                return Run.of(row, self)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} ({row['job']}) is still {row['status']}")

    def logs(self, run_id: int, follow: bool = False) -> Any:
        """The kept output as one string; with follow=True, an iterator of new output
        until the run ends."""
        if follow:
            return self._transport.follow(run_id)
        return str(self._transport.log(run_id)["log"])

    def audit(self, limit: int = 20) -> list[AuditEvent]:
        """Audit events, newest first, as `jobd audit`."""
        return [AuditEvent.of(row) for row in self._transport.audit(limit)]
