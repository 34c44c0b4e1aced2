"""HTTPS on the API listener ([api] tls_cert / tls_key), both backends: a real
request with a self-signed certificate made here by openssl; plain HTTP to the
TLS port answered in one line and the daemon unharmed; a renewed certificate
loaded on SIGHUP; and every bad certificate or key refused in one line naming
the config file, the key and the path."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from jobd.core.model import Config, Settings
from jobd.ops.scope import Scope
from jobd.ops.tokens import create_token
from jobd.store import open_store
from tests.apihelp import API_TABLES, api_jobs, serving_url
from tests.clihelp import jobd, postgresql_url
from tests.conftest import wait_for
from tests.daemons import Daemons, JobdProcess, config_text

__all__ = ["postgresql_url"]  # fixtures

pytestmark = pytest.mark.slow


def make_pair(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (0600)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    cert.chmod(0o644)
    return cert, key


def tls_tables(cert: Path, key: Path) -> str:
    return API_TABLES + f'tls_cert = "{cert}"\ntls_key = "{key}"\n'


@dataclass
class Tls:
    base: str
    cert: Path
    key: Path
    token: str
    daemon: JobdProcess

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def get(self, path: str, method: str = "GET") -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30, context=self.context()) as response:
            import json

            return response.status, json.loads(response.read())

    def peer_cert(self) -> bytes:
        parts = urlsplit(self.base)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
            context.wrap_socket(raw) as wrapped,
        ):
            der = wrapped.getpeercert(binary_form=True)
        assert der is not None
        return der


@pytest.fixture
def tls(store_url: str, tmp_path: Path) -> Iterator[Tls]:
    cert, key = make_pair(tmp_path)
    daemons = Daemons(tmp_path, uuid.uuid4().hex)
    daemons.config.write_text(config_text(api_jobs(tmp_path)) + tls_tables(cert, key))
    daemons.config.chmod(0o644)
    store = open_store(store_url)
    try:
        token = create_token(Scope(store, Config(Settings(), {})), "tester", "tls").secret
    finally:
        store.close()
    try:
        daemon = daemons.start(store_url)
        base = wait_for(lambda: serving_url(daemon.log()))
        yield Tls(base, cert, key, token, daemon)
    finally:
        daemons.cleanup()


def test_https_serves_and_plain_http_is_refused_cleanly(tls: Tls) -> None:
    assert tls.base.startswith("https://127.0.0.1:")
    status, jobs = tls.get("/v1/jobs")
    assert status == 200 and [j["name"] for j in jobs] == ["held", "quick", "scan_a", "scan_b"]
    status, run = tls.get("/v1/jobs/quick/trigger?wait=30", method="POST")
    assert status == 201 and run["status"] == "succeeded"
    # An unverified client is refused by its own TLS library, not by a hang.
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(tls.base + "/healthz", timeout=30)
    # Plain HTTP to the TLS port: one plain-text 400, then the connection closes.
    parts = urlsplit(tls.base)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"This port speaks HTTPS only: use https:// URLs.\n")
    # Silent connections (no TLS hello) hold neither the acceptor nor a worker.
    idle = [socket.create_connection((parts.hostname, parts.port)) for _ in range(20)]
    try:
        assert tls.get("/healthz")[0] == 200
    finally:
        for sock in idle:
            sock.close()
    assert tls.daemon.running
    assert tls.get("/healthz") == (200, {"status": "ok"})
    assert tls.token not in tls.daemon.log()


def test_a_renewed_certificate_is_loaded_on_sighup(tls: Tls, tmp_path: Path) -> None:
    before = tls.peer_cert()
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    cert, key = make_pair(renewed, "renewed")
    # Renewal tools replace the files where they are.
    tls.cert.write_bytes(cert.read_bytes())
    tls.key.write_bytes(key.read_bytes())
    log_size = len(tls.daemon.log())
    tls.daemon.signal(signal.SIGHUP)
    tls.daemon.wait_log("TLS certificate reloaded", after=log_size)
    after = tls.peer_cert()
    assert after != before and after == ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert tls.get("/healthz")[0] == 200  # verified against the renewed certificate
    # A broken pair on a later SIGHUP keeps the one that works.
    tls.key.write_text("not a key\n")
    log_size = len(tls.daemon.log())
    tls.daemon.signal(signal.SIGHUP)
    tls.daemon.wait_log("TLS certificate not reloaded", after=log_size)
    assert tls.peer_cert() == after and tls.daemon.running


def test_bad_certificates_and_keys_are_refused_in_one_line(sqlite_url: str, tmp_path: Path) -> None:
    cert, key = make_pair(tmp_path)
    other_cert, _ = make_pair(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n")
    open_key = tmp_path / "open.key"
    open_key.write_bytes(key.read_bytes())
    open_key.chmod(0o644)
    missing = tmp_path / "missing.key"
    config = tmp_path / "jobd.toml"
    cases = [
        (cert, missing, f"key 'api.tls_key': {missing}: cannot read: No such file or directory"),
        (cert, open_key, f"key 'api.tls_key': {open_key}: refused: a private key readable by "
         "others (mode 0644; at most 0640)"),
        (garbage, key, f"key 'api.tls_cert': {garbage}: not a PEM certificate"),
        (other_cert, key, f"key 'api.tls_key': {key}: does not load with {other_cert}"),
    ]  # fmt: skip
    for cert_path, key_path, message in cases:
        config.write_text(
            config_text({"quick": {"command": ["true"]}}) + tls_tables(cert_path, key_path)
        )
        config.chmod(0o644)
        # `jobd run` checks the same way (jobd.system.tls), before it detaches.
        for command in (["serve"], ["run"]) if key_path == open_key else (["serve"],):
            done = jobd(sqlite_url, tmp_path, "--config", str(config), *command)
            assert done.returncode == 2, (command, done.stderr)
            assert done.stderr.startswith(f"jobd: {config}: {message}"), (command, done.stderr)
            assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    config.write_text(
        config_text({"quick": {"command": ["true"]}}) + API_TABLES + f'tls_cert = "{cert}"\n'
    )
    done = jobd(sqlite_url, tmp_path, "--config", str(config), "validate")
    assert done.returncode == 2
    assert done.stderr == (
        f"jobd: {config}: key 'api.tls_key': tls_cert and tls_key go together: "
        "set both for HTTPS, or neither\n"
    )
