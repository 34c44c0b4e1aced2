"""`python -m jobd.runs.kinds.http NAME`: makes an `http` job's request in a child process.

The request comes in through the environment (JOBD_HTTP, the job's `http` table
as JSON, and JOBD_HTTP_TIMEOUT); `${VAR}` placeholders are filled in here, from
this process's environment (the job's `env` over the daemon's), so a secret is
never written to the store. Every filled-in value is masked as *** in what this
prints, which becomes the run's log: the request line, the status, the latency
and the first HTTP_BODY_SHOWN bytes of the response body.

A status outside `expect` (default: any 2xx), or no answer, fails the run: the
last line is `error: …` (the runner makes it the run's error) and the exit
status is 1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

from jobd.core.config.kinds import fill_placeholders
from jobd.core.masking import Masker
from jobd.core.model import HTTP_BODY_SHOWN
from jobd.runs.childlog import fail

MAX_REDIRECTS = 5
DEFAULT_TIMEOUT = 300.0  # a job without a timeout still gets an answer or an error


def fill(value: Any, environ: Mapping[str, str], masker: Masker) -> Any:
    """A JSON value with `${VAR}` filled in every string, keys included."""
    if isinstance(value, str):
        text, used = fill_placeholders(value, environ)
        masker.add(used)
        return text
    if isinstance(value, list):
        return [fill(item, environ, masker) for item in value]
    if isinstance(value, dict):
        return {fill(k, environ, masker): fill(v, environ, masker) for k, v in value.items()}
    return value


def excerpt(body: bytes, masker: Masker, length: str | None) -> str:
    """The body's start, masked before it is cut, so no secret is cut in two."""
    text = masker(body.decode("utf-8", errors="replace"))
    if len(body) <= HTTP_BODY_SHOWN:
        return text
    return (
        text[:HTTP_BODY_SHOWN]
        + f"\n… cut at {HTTP_BODY_SHOWN} bytes"
        + (f" of {length}" if length else "")
    )


def request(spec: dict[str, Any], timeout: float, environ: Mapping[str, str]) -> int:
    import urllib3

    masker = Masker()
    try:
        filled = fill(spec, environ, masker)
    except KeyError as exc:
        return fail(f"${{{exc.args[0]}}} is not set in the job's environment", masker)
    method, url = filled["method"], filled["url"]
    headers = dict(filled.get("headers") or {})
    body: bytes | None = None
    if "json" in filled:
        body = json.dumps(filled["json"]).encode()
        if not any(h.lower() == "content-type" for h in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in filled:
        body = filled["body"].encode()
    headers.setdefault("User-Agent", "jobd")
    expect = spec.get("expect") or []
    print(masker(f"{method} {url}"), flush=True)
    pool = urllib3.PoolManager(
        # jobd's own `retries` retry a failed run; here only redirects are followed.
        retries=urllib3.Retry(
            total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS
        ),
        timeout=urllib3.Timeout(total=timeout),
    )
    started = time.monotonic()
    try:
        response = pool.request(method, url, body=body, headers=headers, preload_content=False)
        margin = masker.longest
        data = response.read(HTTP_BODY_SHOWN + margin + 1) if method != "HEAD" else b""
        length = response.headers.get("Content-Length")
        response.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        elapsed = (time.monotonic() - started) * 1000
        reason = getattr(exc, "reason", None) or exc
        return fail(f"no answer after {elapsed:.0f} ms: {reason}", masker)
    elapsed = (time.monotonic() - started) * 1000
    print(f"HTTP {response.status} {response.reason or ''} in {elapsed:.0f} ms".rstrip())
    if data:
        print(excerpt(data, masker, length))
    ok = response.status in expect if expect else 200 <= response.status < 300
    if not ok:
        wanted = ", ".join(str(code) for code in expect) if expect else "2xx"
        return fail(f"HTTP {response.status} {response.reason or ''} (expected {wanted})", masker)
    sys.stdout.flush()
    return 0


def main() -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    spec = json.loads(os.environ.get("JOBD_HTTP") or "{}")
    timeout = float(os.environ.get("JOBD_HTTP_TIMEOUT") or 0) or DEFAULT_TIMEOUT
    return request(spec, timeout, os.environ)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # SIGTERM: the run was stopped
        sys.exit(128 + signal.SIGTERM)
