"""Start a real `jobd run` for a test and stop it afterwards, waiting for its
readiness line rather than sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import jobd_cmd, wait_for


@contextmanager
def jobd_daemon(
    config: Path, store_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`jobd run --config CONFIG` on STORE_URL; its log goes to CONFIG.log."""
    log = config.with_suffix(".log")
    full_env = {**os.environ, "JOBD_STORE": store_url, **(env or {})}
    full_env.pop("JOBD_CONFIG", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            jobd_cmd("run", "--config", str(config)), env=full_env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: " started: " in log.read_text() or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
