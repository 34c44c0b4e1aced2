"""`jobd run` speaks sd_notify: READY after set-up, watchdog pings from the loop,
RELOADING/READY around SIGHUP, STOPPING on SIGTERM (a real daemon, a real socket)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from tests.conftest import jobd_cmd, wait_for


def test_notify_messages_in_order(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.05)
    config = tmp_path / "jobd.toml"
    config.write_text('[jobs.hello]\nschedule = "@hourly"\ncommand = ["true"]\n')
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "400000",  # 0.4 s: pings every 0.2 s
        "JOBD_STORE": f"sqlite:///{tmp_path / 'jobd.db'}",
    }
    proc = subprocess.Popen(
        jobd_cmd("--config", str(config), "run"), env=env, stderr=subprocess.PIPE, text=True
    )
    messages: list[str] = []

    def received(predicate) -> bool:  # type: ignore[no-untyped-def]
        with contextlib.suppress(TimeoutError):
            messages.append(sock.recv(4096).decode())
        return any(predicate(m) for m in messages)

    try:
        wait_for(lambda: received(lambda m: "READY=1" in m))
        wait_for(lambda: sum("WATCHDOG=1" in m for m in messages) >= 3 or received(lambda m: False))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: received(lambda m: "RELOADING=1" in m))
        wait_for(lambda: sum("READY=1" in m for m in messages) >= 2 or received(lambda m: False))
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: received(lambda m: "STOPPING=1" in m))
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    kinds = [
        kind
        for m in messages
        for kind in ("READY=1", "RELOADING=1", "STOPPING=1")
        if kind in m.split("\n")
    ]
    assert kinds == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=leader" in ready
    reloading = next(m for m in messages if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in reloading
    first_ready = messages.index(ready)
    assert any("WATCHDOG=1" in m for m in messages[first_ready:])
