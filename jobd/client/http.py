"""The client's HTTP mode: the jobd API over urllib."""

from __future__ import annotations

import codecs
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

from jobd.client import FINAL
from jobd.errors import JobdError, StoreUnavailable, error_type


class HttpTransport:
    """The HTTP mode: the API, with the standard library's urllib."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def close(self) -> None:
        pass

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
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
