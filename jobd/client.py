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

import codecs
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from jobd.errors import JobdError, StoreUnavailable, UsageError, error_type

FINAL = frozenset(("succeeded", "failed", "timed_out", "cancelled", "abandoned", "skipped"))
LONG_POLL_S = 60.0  # one HTTP long poll; a longer wait asks again


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Run:
    """One run of a job, as `jobd show --json` has it (without its output)."""

    id: int
    job: str
    trigger: str
    status: str
    queued_at: datetime | None = None
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    attempt: int = 1
    error: str | None = None
    instance: str | None = None
    host: str | None = None
    pid: int | None = None
    triggered_by: str | None = None
    not_before: datetime | None = None
    retry_of: int | None = None
    config_hash: str | None = None
    cancel_requested: bool = False
    epoch: int | None = None
    log_bytes: int | None = None
    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, row: Mapping[str, Any], client: Client) -> Run:
        known = {f.name for f in fields(cls)} - {"_client"}
        values = {key: value for key, value in row.items() if key in known}
        for key in ("queued_at", "scheduled_for", "started_at", "finished_at", "not_before"):
            values[key] = _time(values.get(key))
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
        self._transport: _Direct | _Http
        if store is not None:
            self._transport = _Direct(store, config, actor)
        else:
            assert url is not None
            self._transport = _Http(url, token, timeout)

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


# -- direct: the operations layer ---------------------------------------------------


class _Direct:
    def __init__(self, store_url: str, config: str | None, actor: str | None) -> None:
        from jobd.ops.context import Context
        from jobd.ops.context import actor as default_actor

        self.ctx = Context(config_path=config, store_override=store_url)
        self.actor = actor or default_actor()

    def close(self) -> None:
        self.ctx.close()

    def _reader(self) -> Any:
        from jobd.store.reader import Reader

        return Reader.over(self.ctx.store)

    def jobs(self) -> list[dict[str, Any]]:
        from datetime import UTC

        from jobd.ops.jobs import list_jobs
        from jobd.ops.shapes import job_json

        entries = list_jobs(self.ctx.scope(), datetime.now(UTC))
        last = self.ctx.store.last_statuses([e.name for e in entries])
        return [job_json(e, last) for e in entries]

    def job(self, name: str) -> dict[str, Any]:
        from datetime import UTC

        from jobd.ops.jobs import list_jobs
        from jobd.ops.shapes import job_json

        scope = self.ctx.scope()
        scope.find_job(name)
        entry = next(e for e in list_jobs(scope, datetime.now(UTC)) if e.name == name)
        return job_json(entry, self.ctx.store.last_statuses([name]), with_fires=True)

    def trigger(self, name: str, wait: float) -> dict[str, Any]:
        from jobd.ops.runs import trigger

        queued = trigger(self.ctx.scope(), self.actor, name)
        return self.execution(queued.run_id)

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        from jobd.ops.jobs import set_paused

        change = set_paused(self.ctx.scope(), self.actor, name, paused)
        return {"job": name, "paused": change.paused, "changed": change.changed}

    def schedule(self, name: str, table: dict[str, Any]) -> dict[str, Any]:
        from jobd.ops.jobs import schedule

        done = schedule(self.ctx.scope(whole_config=True), self.actor, name, table, "Client")
        return {"job": name, "created": done.created, "next_fire": done.record.next_fire_at}

    def unschedule(self, name: str) -> None:
        from jobd.ops.jobs import unschedule

        unschedule(self.ctx.scope(), self.actor, name)

    def execution(self, run_id: int) -> dict[str, Any]:
        from jobd.errors import NotFound
        from jobd.ops.shapes import run_json

        row = self._reader().execution(run_id, with_log=False)
        if row is None:
            raise NotFound(f"no run with id {run_id} (see `jobd executions`)")
        return run_json(row)

    def executions(
        self, job: str | None, statuses: list[str], since: str | None, limit: int
    ) -> list[dict[str, Any]]:
        from datetime import UTC

        from jobd.ops.history import find_runs

        return find_runs(self._reader(), datetime.now(UTC), job, statuses, since, limit or None)

    def cancel(self, run_id: int) -> dict[str, Any]:
        from jobd.ops.runs import cancel

        done = cancel(self.ctx.scope(), self.actor, run_id)
        return {"id": run_id, "job": done.job, "was": done.was, "host": done.host}

    def wait(self, run_id: int, seconds: float) -> dict[str, Any]:
        from jobd.ops.shapes import wait_final

        wait_final(self._reader(), run_id, seconds)
        return self.execution(run_id)

    def log(self, run_id: int) -> dict[str, Any]:
        self.execution(run_id)  # NotFound as the CLI says it
        log, total = self._reader().log(run_id)
        return {"log": log, "log_bytes": total}

    def follow(self, run_id: int) -> Iterator[str]:
        from jobd.ops.shapes import follow_output

        self.execution(run_id)
        return follow_output(self._reader(), run_id)

    def audit(self, limit: int) -> list[dict[str, Any]]:
        return self.ctx.store.audit_events(limit)


# -- HTTP: the API, with urllib ----------------------------------------------------


class _Http:
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def close(self) -> None:
        pass

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as error:
            raise _error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise StoreUnavailable(f"cannot reach the jobd API at {self.base}: {reason}") from None

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        with self._open(method, path, body, timeout) as response:
            data = response.read()
        return json.loads(data) if data else None

    @staticmethod
    def _name(name: str) -> str:
        return quote(name, safe="")

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/jobs"))

    def job(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{self._name(name)}"))

    def trigger(self, name: str, wait: float) -> dict[str, Any]:
        query = f"?wait={wait:g}" if wait else ""
        path = f"/v1/jobs/{self._name(name)}/trigger{query}"
        return dict(self._call("POST", path, timeout=self.timeout + wait))

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        action = "pause" if paused else "resume"
        return dict(self._call("POST", f"/v1/jobs/{self._name(name)}/{action}"))

    def schedule(self, name: str, table: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("PUT", f"/v1/schedules/{self._name(name)}", table))

    def unschedule(self, name: str) -> None:
        self._call("DELETE", f"/v1/schedules/{self._name(name)}")

    def execution(self, run_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/executions/{int(run_id)}"))

    def executions(
        self, job: str | None, statuses: list[str], since: str | None, limit: int
    ) -> list[dict[str, Any]]:
        params: list[tuple[str, Any]] = [("limit", limit or 1000)]
        params += [("job", job)] if job else []
        params += [("status", s) for s in statuses]
        params += [("since", since)] if since else []
        page = self._call("GET", f"/v1/executions?{urlencode(params)}")
        return list(page["items"])

    def cancel(self, run_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/executions/{int(run_id)}/cancel"))

    def wait(self, run_id: int, seconds: float) -> dict[str, Any]:
        # The API's long poll is on trigger; for a run already queued, poll its state.
        deadline = time.monotonic() + seconds
        while True:
            row = self.execution(run_id)
            if row["status"] in FINAL or time.monotonic() >= deadline:
                return row
            time.sleep(0.1)

    def log(self, run_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/executions/{int(run_id)}/log"))

    def audit(self, limit: int) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/v1/audit?limit={int(limit)}"))

    def follow(self, run_id: int) -> Iterator[str]:
        response = self._open("GET", f"/v1/executions/{int(run_id)}/log?follow=true")
        return _stream(response)


def _stream(response: Any) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with response:
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            text = decoder.decode(chunk)
            if text:
                yield text
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest


def _error(error: Any) -> JobdError:
    """The jobd error a problem response names, with the server's wording."""
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    kind = error_type(str(body.get("type", "")))
    detail = str(body.get("detail") or f"HTTP {error.code}")
    exc = kind(detail)
    if kind is JobdError:
        exc.http_status = error.code
    return exc
