"""What the API tests share: a real `jobd run` serving [api] on an ephemeral
loopback port (or `jobd serve` alone), tokens, and plain HTTP over urllib."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import jobd_cmd, wait_for
from tests.daemons import Daemons, JobdProcess, config_text

SERVING = re.compile(r"serving the API on (https?://[0-9.]+:[0-9]+)/v1")


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return str(self.headers.get("Content-Type", ""))


def http(
    method: str,
    url: str,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    timeout: float = 60,
) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


@dataclass
class Api:
    base: str  # http://127.0.0.1:PORT
    store_url: str
    tmp_path: Path
    daemon: Any = None

    def token(self, name: str, group: str | None = None, read_only: bool = False) -> str:
        from jobd.core.model import Config, Settings
        from jobd.ops.scope import Scope
        from jobd.ops.tokens import create_token
        from tests.conftest import open_store

        store = open_store(self.store_url)
        try:
            scope = Scope(store, Config(settings=Settings(), jobs={}))
            return create_token(scope, "tester", name, group, read_only).secret
        finally:
            store.close()

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Reply:
        return http(method, self.base + path, token, **kwargs)


def go_file(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"go-{name}"


def api_jobs(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """quick: prints and succeeds. held: prints, then waits for its go file."""

    def held(name: str) -> list[str]:
        go = go_file(tmp_path, name)
        return ["sh", "-c", f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second"]

    return {
        "quick": {"command": ["sh", "-c", "echo hello; echo world"]},
        "held": {"command": held("held")},
        "scan_a": {"command": held("scan_a"), "group": "tenant-a"},
        "scan_b": {"command": ["true"], "group": "tenant-b"},
    }


API_TABLES = """
[groups.tenant-a]
max_active = 1

[groups.tenant-b]

[api]
listen = "127.0.0.1:0"
"""


def serving_url(log: str) -> str | None:
    match = SERVING.search(log)
    return match.group(1) if match else None


@pytest.fixture
def api(store_url: str, tmp_path: Path) -> Iterator[Api]:
    """A real daemon with [api] on an ephemeral port, on this test's store."""
    import uuid

    daemons = Daemons(tmp_path, uuid.uuid4().hex)
    daemons.config.write_text(config_text(api_jobs(tmp_path)) + API_TABLES)
    daemons.config.chmod(0o644)
    try:
        daemon: JobdProcess = daemons.start(store_url)
        base = wait_for(lambda: serving_url(daemon.log()))
        yield Api(base, store_url, tmp_path, daemon)
    finally:
        daemons.cleanup()


@contextlib.contextmanager
def serving(store_url: str, tmp_path: Path) -> Iterator[Api]:
    """`jobd serve` alone (no daemon) on `store_url`, the API test jobs in its config."""
    config = tmp_path / "jobd.toml"
    config.write_text(config_text(api_jobs(tmp_path)) + API_TABLES)
    config.chmod(0o644)
    log = tmp_path / "serve.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            jobd_cmd("--config", str(config), "--store", store_url, "serve"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:

        def url() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"jobd serve exited: {log.read_text()}")
            return serving_url(log.read_text())

        yield Api(wait_for(url, timeout=20), store_url, tmp_path)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def served(store_url: str, tmp_path: Path) -> Iterator[Api]:
    """`jobd serve` alone (no daemon), on this test's store."""
    with serving(store_url, tmp_path) as api:
        yield api
