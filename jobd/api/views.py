"""The API's endpoints. Each calls the operation the CLI calls (jobd.ops), or the
read-only queries of `jobd executions`/`show`/`logs` (jobd.store.reader), and
adds only what HTTP needs: tenancy by the token's group, status codes, paging.

A group token sees its group's jobs and their runs only; anything else answers
404 with the wording of an unknown name, so other tenants' names do not leak.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from jobd.api.app import CLIENT_GONE, OPENAPI_PATH, Request, Response, route
from jobd.errors import Forbidden, NotFound, ServerBusy, StoreUnavailable, UsageError
from jobd.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from jobd.observe.metrics import render as render_metrics
from jobd.ops.health import health
from jobd.ops.jobs import list_jobs, schedule, set_paused, unschedule
from jobd.ops.listing import find_runs
from jobd.ops.runs import cancel, trigger
from jobd.ops.scope import Scope
from jobd.ops.shapes import FINAL, follow_output, job_json, run_json, wait_final
from jobd.store.reader import Reader

MAX_WAIT_S = 120.0  # a long poll holds a worker thread: bounded
MAX_PAGE = 1000


def _reader(app: Any) -> Any:
    return Reader.over(app.store)


def _number(request: Request, name: str, parse: Any, what: str, low: Any, high: Any) -> Any:
    """A numeric query argument, checked against [low, high]; None when absent."""
    text = request.arg(name)
    if text is None or text == "":
        return None
    try:
        value = parse(text)
    except ValueError:
        raise UsageError(f"{name}: expected {what}, got {text!r}") from None
    if not low <= value <= high:
        bounds = f"{low:g} to {high:g} seconds" if parse is float else f"{low} to {high}"
        raise UsageError(f"{name}: expected {bounds}, got {text}")
    return value


def _int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    value = _number(request, name, int, "an integer", low, high)
    return default if value is None else int(value)


def _float(request: Request, name: str, high: float) -> float | None:
    value = _number(request, name, float, "a number of seconds", 0, high)
    return None if value is None else float(value)


def _bool(request: Request, name: str) -> bool:
    text = (request.arg(name) or "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise UsageError(f"{name}: expected true or false, got {text!r}")
    return text in ("true", "1")


# -- tenancy -----------------------------------------------------------------------


def _unknown_job(name: str) -> NotFound:
    return NotFound(f"unknown job {name!r}")


def _visible_job(scope: Scope, request: Request, name: str) -> tuple[Any, Any]:
    """find_job, for this token: a job outside its group is unknown, with no
    did-you-mean (the hint could name another tenant's job)."""
    if request.group is None:
        return scope.find_job(name)
    try:
        record, spec = scope.find_job(name)
    except NotFound:
        raise _unknown_job(name) from None
    group = (record.spec if record is not None else spec).group
    if group != request.group:
        raise _unknown_job(name)
    return record, spec


def _group_jobs(app: Any, group: str) -> list[str]:
    """Every job of the group the store knows, removed ones too (their runs stay visible)."""
    return [r.name for r in app.store.jobs(include_removed=True) if r.spec.group == group]


def _visible_run(app: Any, request: Request, run_id: int, with_log: bool = False) -> dict:
    row = _reader(app).execution(run_id, with_log=with_log)
    unknown = NotFound(f"no run with id {run_id} (see `jobd executions`)")
    if row is None:
        raise unknown
    if request.group is not None:
        record = app.store.job(row["job"])
        if record is None or record.spec.group != request.group:
            raise unknown
    return row


class Views:
    # -- probes ----------------------------------------------------------------

    @route("GET", "/healthz", public=True)
    def healthz(self, app: Any, request: Request) -> Response:
        return Response(200, {"status": "ok"})

    @route("GET", "/readyz", public=True)
    def readyz(self, app: Any, request: Request) -> Response:
        """Ready when the store answers, a daemon is live to run what is triggered, and
        a table lease, if any, is held (the criteria of `jobd check` about the
        service; a failing or overdue job does not make the API unready)."""

        report = health(app.scope(), with_jobs=False)
        if report.service_problems():
            raise StoreUnavailable("; ".join(p.message for p in report.service_problems()))
        return Response(200, {"status": "ready", "live_instances": report.live_instances})

    @route("GET", "/metrics")
    def metrics(self, app: Any, request: Request) -> Response:
        """What `jobd metrics` prints; in `jobd run`, the daemon's own metrics too."""
        if request.group is not None:
            raise Forbidden(
                f"token {request.token.name!r} is bound to group {request.group!r}; "
                "the metrics name every job"
            )
        return Response(200, render_metrics(app.store), content_type=METRICS_CONTENT_TYPE)

    @route("GET", "/v1/openapi.json", public=True)
    def openapi(self, app: Any, request: Request) -> Response:
        return Response(200, json.loads(OPENAPI_PATH.read_text()))

    # -- jobs ------------------------------------------------------------------

    @route("GET", "/v1/jobs")
    def list_jobs(self, app: Any, request: Request) -> Response:
        entries = list_jobs(app.scope(), datetime.now(UTC))
        if request.group is not None:
            entries = [e for e in entries if e.spec.group == request.group]
        last = app.store.last_statuses([e.name for e in entries])
        return Response(200, [job_json(e, last) for e in entries])

    @route("GET", "/v1/jobs/{name}")
    def get_job(self, app: Any, request: Request) -> Response:
        name = request.params["name"]
        scope = app.scope()
        _visible_job(scope, request, name)
        entry = next(e for e in list_jobs(scope, datetime.now(UTC)) if e.name == name)
        body = job_json(entry, app.store.last_statuses([name]), with_fires=True)
        return Response(200, body)

    @route("POST", "/v1/jobs/{name}/trigger", write=True)
    def trigger(self, app: Any, request: Request) -> Response:
        name = request.params["name"]
        wait = _float(request, "wait", MAX_WAIT_S)
        scope = app.scope()
        _visible_job(scope, request, name)
        queued = trigger(scope, request.actor, name)
        reader = _reader(app)
        location = [("Location", f"/v1/executions/{queued.run_id}")]
        # Past the waiters' limit a long poll answers at once: the client polls.
        if wait and app.waiters.acquire(blocking=False):
            try:
                wait_final(reader, queued.run_id, wait, app.closing.is_set)
            finally:
                app.waiters.release()
        row = reader.execution(queued.run_id, with_log=False)
        if row is None:
            raise NotFound(f"run {queued.run_id} no longer exists (pruned?)")
        status = 202 if wait and row["status"] not in FINAL else 201
        return Response(status, run_json(row), location)

    @route("POST", "/v1/jobs/{name}/pause", write=True)
    def pause(self, app: Any, request: Request) -> Response:
        return self._set_paused(app, request, True)

    @route("POST", "/v1/jobs/{name}/resume", write=True)
    def resume(self, app: Any, request: Request) -> Response:
        return self._set_paused(app, request, False)

    @staticmethod
    def _set_paused(app: Any, request: Request, paused: bool) -> Response:
        name = request.params["name"]
        scope = app.scope()
        _visible_job(scope, request, name)
        change = set_paused(scope, request.actor, name, paused)
        return Response(200, {"job": name, "paused": change.paused, "changed": change.changed})

    # -- store-only jobs --------------------------------------------------------

    @route("PUT", "/v1/schedules/{name}", write=True)
    def put_schedule(self, app: Any, request: Request) -> Response:
        """Upsert a store-only job from a `[jobs.NAME]` table as JSON."""

        name = request.params["name"]
        fields = request.json_body()
        if not isinstance(fields, dict):
            raise UsageError(
                "request body: expected a JSON object, the keys of a [jobs.NAME] table"
            )
        scope = app.scope()
        if request.group is not None:
            fields.setdefault("group", request.group)
            if fields["group"] != request.group:
                raise UsageError(
                    f"request body: key 'group': this token may schedule in group "
                    f"{request.group!r} only"
                )
            existing = app.store.job(name)
            if existing is not None and not existing.removed:
                if existing.spec.group != request.group:
                    raise _unknown_job(name)
            elif name in scope.config.jobs and scope.config.jobs[name].group != request.group:
                raise _unknown_job(name)
        done = schedule(scope, request.actor, name, fields, origin="request body")
        body = {
            "job": name,
            "created": done.created,
            "next_fire": done.record.next_fire_at,
        }
        headers = [("Location", f"/v1/jobs/{name}")]
        return Response(201 if done.created else 200, body, headers)

    @route("DELETE", "/v1/schedules/{name}", write=True)
    def delete_schedule(self, app: Any, request: Request) -> Response:
        name = request.params["name"]
        scope = app.scope()
        _visible_job(scope, request, name)
        unschedule(scope, request.actor, name)
        return Response(204)

    # -- runs ------------------------------------------------------------------

    @route("GET", "/v1/executions")
    def executions(self, app: Any, request: Request) -> Response:
        """Newest first; `cursor` is the last id of the previous page, so runs queued
        while a client pages never shift what it reads next."""

        limit = _int(request, "limit", 50, 1, MAX_PAGE)
        rows = find_runs(
            lambda: _reader(app),
            datetime.now(UTC),
            job=request.arg("job") or None,
            statuses=[s.lower() for s in request.args("status") if s],
            since=request.arg("since"),
            limit=limit,
            before=_int(request, "cursor", None, 1, 2**63 - 1),
            jobs=None if request.group is None else _group_jobs(app, request.group),
        )
        next_cursor = rows[-1]["id"] if len(rows) == limit else None
        return Response(200, {"items": rows, "next_cursor": next_cursor})

    @route("GET", "/v1/executions/{id:int}")
    def execution(self, app: Any, request: Request) -> Response:
        return Response(200, run_json(_visible_run(app, request, int(request.params["id"]))))

    @route("GET", "/v1/executions/{id:int}/log")
    def log(self, app: Any, request: Request) -> Response:
        """The kept output; with follow=true, a text stream of new output until the run ends."""
        run_id = int(request.params["id"])
        follow = _bool(request, "follow")
        row = _visible_run(app, request, run_id, with_log=not follow)
        if not follow:
            body = {key: row[key] for key in ("id", "job", "status", "log_bytes", "log")}
            return Response(200, body)
        if not app.waiters.acquire(blocking=False):
            raise ServerBusy(
                "too many requests are waiting (log follows, long polls); try again shortly"
            )
        headers = [("X-Content-Type-Options", "nosniff"), ("X-Accel-Buffering", "no")]
        gone = request.environ.get(CLIENT_GONE, lambda: False)
        stream = _Held(_follow(app, run_id, gone), app.waiters.release)
        return Response(200, stream, headers, "text/plain; charset=utf-8")

    @route("POST", "/v1/executions/{id:int}/cancel", write=True)
    def cancel(self, app: Any, request: Request) -> Response:
        run_id = int(request.params["id"])
        _visible_run(app, request, run_id)
        done = cancel(app.scope(), request.actor, run_id)
        body = {"id": run_id, "job": done.job, "was": done.was, "host": done.host}
        return Response(200 if done.was == "queued" else 202, body)

    # -- audit -----------------------------------------------------------------

    @route("GET", "/v1/audit")
    def audit(self, app: Any, request: Request) -> Response:
        """Newest first; a group token sees the events about its group's jobs only."""
        limit = _int(request, "limit", 20, 1, MAX_PAGE) or 20
        targets = _group_jobs(app, request.group) if request.group is not None else None
        return Response(200, app.store.audit_events(limit, targets=targets))


class _Held(Iterator[bytes]):
    """A stream that gives its waiter's place back when the server closes it, even
    if it never started (a generator's own `finally` would not run then)."""

    def __init__(self, stream: Iterator[bytes], release: Any) -> None:
        self.stream = stream
        self._release: Any = release

    def __next__(self) -> bytes:
        return next(self.stream)

    def close(self) -> None:
        self.stream.close()  # type: ignore[attr-defined]
        release, self._release = self._release, None
        if release is not None:
            release()


def _follow(app: Any, run_id: int, gone: Any) -> Iterator[bytes]:
    """The run's new output; it ends with the run, when the client hangs up (a
    run that prints nothing would otherwise keep a worker polling for nobody), or
    when the server stops."""

    def stop() -> bool:
        return bool(app.closing.is_set() or gone())

    for text in follow_output(_reader(app), run_id, stop):
        yield text.encode()
