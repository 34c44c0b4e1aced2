"""The WSGI application: routing, bearer authentication, JSON bodies, and errors
as RFC 9457 problems mapped from the jobd.errors types.

No framework: the API is a dozen routes, and a router of regular expressions
keeps the whole stack to the server (cheroot, jobd.api.server) and the standard
library.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jobd.core.timeutil import rfc3339
from jobd.errors import (
    ConfigError,
    Forbidden,
    JobdError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QuotaRefused,
    ServerBusy,
    Unauthorized,
    UsageError,
    problem_type,
    store_failure,
)
from jobd.ops.scope import Scope
from jobd.ops.tokens import authenticate
from jobd.system.paths import load_config_or_settings, locate_config

log = logging.getLogger("jobd.api")

MAX_BODY = 64 * 1024  # a [jobs.NAME] table is a few hundred bytes
PROBLEM = "application/problem+json"
# How long a rejected quota asks a client to wait before it tries again.
RETRY_AFTER_S = 5
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
# The environ key of a callable, set by the server, that says whether the client
# of this request hung up: a log follow stops polling for nobody.
CLIENT_GONE = "jobd.client_gone"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    environ: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    token: Any = None  # jobd.ops.tokens.Token, once authenticated

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    @property
    def actor(self) -> str:
        return str(self.token.name)

    @property
    def group(self) -> str | None:
        return self.token.group if self.token is not None else None

    def json_body(self) -> Any:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise UsageError("invalid Content-Length") from None
        if length > MAX_BODY:
            raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
        data = self.environ["wsgi.input"].read(length) if length else b""
        try:
            return json.loads(data or b"null")
        except (ValueError, RecursionError):
            raise UsageError("request body: expected JSON") from None


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-able, bytes as they are, or an iterator of bytes (a stream)
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


Handler = Callable[[Any, Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    public: bool = False  # no token needed
    write: bool = False  # refused to read-only tokens


def route(method: str, path: str, *, public: bool = False, write: bool = False) -> Any:
    """Mark a view method with its route; path parameters are {name} (no slash) or {id:int}."""

    def pattern(text: str) -> re.Pattern[str]:
        regex = re.sub(r"\{(\w+):int\}", r"(?P<\1>[0-9]{1,18})", text)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        return re.compile(regex + r"\Z")

    def mark(func: Handler) -> Handler:
        func.route = (method, path, pattern(path), public, write)  # type: ignore[attr-defined]
        return func

    return mark


def to_json(value: Any) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class ConfigSource:
    """The config file as the CLI reads it, parsed again only when the file changes:
    the API acts on the same jobs, groups and settings as `jobd trigger` would."""

    def __init__(self, config_path: str | None, store_override: str | None) -> None:
        self.config_path = config_path
        self.store_override = store_override
        self._lock = threading.Lock()
        self._stamp: Any = object()
        self._loaded: tuple[Any, ConfigError | None] | None = None

    def _file_stamp(self) -> Any:
        path = locate_config(self.config_path, os.environ, Path.cwd())
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError:
            return (str(path), None)
        return (str(path), stat.st_mtime_ns, stat.st_size)

    def get(self) -> tuple[Any, ConfigError | None]:
        with self._lock:
            stamp = self._file_stamp()
            if self._loaded is None or stamp != self._stamp:
                self._loaded = load_config_or_settings(
                    self.config_path, store_override=self.store_override
                )
                self._stamp = stamp
            return self._loaded


class Application:
    """The WSGI callable. One Store is shared by the worker threads: peewee keeps a
    connection per thread."""

    def __init__(self, store: Any, configs: ConfigSource, views: Any) -> None:
        self.store = store
        self.configs = configs
        self.views = views
        self.routes: list[Route] = []
        self.waiters = threading.BoundedSemaphore(6)
        self.closing = threading.Event()  # the server stops: waits end
        for name in dir(views):
            func = getattr(views, name)
            spec = getattr(func, "route", None)
            if spec is not None:
                method, _path, pattern, public, write = spec
                self.routes.append(Route(method, pattern, func, public, write))

    def limit_waiters(self, threads: int) -> None:
        """Long polls and log follows may hold all workers but two: a client that
        waits can never stop the others from being served."""
        self.waiters = threading.BoundedSemaphore(max(1, threads - 2))

    def scope(self) -> Scope:
        config, problem = self.configs.get()
        return Scope(self.store, config, problem)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(
            method=environ["REQUEST_METHOD"].upper(),
            path=environ.get("PATH_INFO") or "/",
            query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            environ=environ,
        )
        try:
            response = self._dispatch(request)
        except Exception as exc:
            response = self._failure(exc, request)
        return self._send(response, start_response)

    def _dispatch(self, request: Request) -> Response:
        allowed = []
        for candidate in self.routes:
            match = candidate.pattern.match(request.path)
            if match is None:
                continue
            allowed.append(candidate.method)
            if candidate.method != request.method:
                continue
            request.params = match.groupdict()
            if not candidate.public:
                self._authenticate(request, candidate)
            return candidate.handler(self, request)
        if allowed:
            raise MethodNotAllowed(f"{request.method} is not allowed here: {', '.join(allowed)}")
        raise NotFound(f"no such endpoint: {request.path}")

    def _authenticate(self, request: Request, candidate: Route) -> None:
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized("a bearer token is required (jobd token create NAME)")
        token = authenticate(self.scope(), credentials.strip())
        if token is None:
            raise Unauthorized("the bearer token is unknown, revoked or expired")
        if candidate.write and token.read_only:
            raise Forbidden(f"token {token.name!r} is read-only")
        request.token = token

    def _failure(self, exc: Exception, request: Request) -> Response:
        error: JobdError | None = exc if isinstance(exc, JobdError) else store_failure(exc)
        if error is None:
            log.error(
                "%s %s failed: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc_info=exc,
                extra={"action": "api.error"},
            )
            error = JobdError("internal error; the server's log says more")
            error.http_status = 500
        return problem(error)

    @staticmethod
    def _send(response: Response, start_response: Any) -> Iterable[bytes]:
        status = f"{response.status} {HTTPStatus(response.status).phrase}"
        headers = [("Content-Type", response.content_type), *response.headers]
        headers.append(("Cache-Control", "no-store"))
        if isinstance(response.body, Iterator):
            start_response(status, headers)
            return response.body
        if isinstance(response.body, bytes):
            data = response.body
        else:
            data = b"" if response.status == 204 else to_json(response.body)
        headers.append(("Content-Length", str(len(data))))
        start_response(status, headers)
        return [data]


def problem(error: JobdError) -> Response:
    """An RFC 9457 problem with the CLI's wording; `exit_code` is what the CLI exits with."""
    status = error.http_status
    body = {
        "type": problem_type(type(error)),
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": str(error),
        "exit_code": int(error.exit_code),
    }
    headers = []
    if isinstance(error, Unauthorized):
        headers.append(("WWW-Authenticate", 'Bearer realm="jobd"'))
    if isinstance(error, QuotaRefused | ServerBusy):
        headers.append(("Retry-After", str(RETRY_AFTER_S)))
    return Response(status, body, headers, PROBLEM)
