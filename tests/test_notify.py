"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobd.system.sdnotify import Notifier


class FakeManager:
    """The receiving end of NOTIFY_SOCKET, as the service manager binds it."""

    def __init__(self, address: str, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)  # a deadline, not a sleep: recv returns as soon as it arrives
        self.env_value = env_value

    def messages(self, count: int) -> list[list[str]]:
        return [self.sock.recv(4096).decode().splitlines() for _ in range(count)]

    def assert_silent(self) -> None:
        self.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            self.sock.recv(4096)
        self.sock.settimeout(5)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[FakeManager]:
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # sun_path holds 108 bytes
        pytest.skip("tmp_path too long for a unix socket")
    fake = FakeManager(str(path), str(path))
    yield fake
    fake.sock.close()


def test_messages_arrive_in_order_with_their_contents(manager: FakeManager) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.env_value})
    assert notifier.active
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready("4 jobs, leader")
    notifier.status("running 2 of 4")
    notifier.reloading()
    notifier.ready()
    notifier.watchdog()
    notifier.extend_timeout(12.5)
    notifier.stopping()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    got = manager.messages(7)
    notifier.close()

    assert got[0] == ["READY=1", "STATUS=4 jobs, leader"]
    assert got[1] == ["STATUS=running 2 of 4"]
    assert got[2][0] == "RELOADING=1"
    key, value = got[2][1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert got[3] == ["READY=1"]
    assert got[4] == ["WATCHDOG=1"]
    assert got[5] == ["EXTEND_TIMEOUT_USEC=12500000"]
    assert got[6] == ["STOPPING=1"]


def test_status_newlines_cannot_inject_assignments(manager: FakeManager) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.env_value})
    notifier.status("line one\nREADY=1")
    assert manager.messages(1) == [["STATUS=line one READY=1"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_abstract_socket() -> None:
    name = f"jobd-test-{uuid.uuid4().hex}"
    fake = FakeManager("\0" + name, "@" + name)
    try:
        Notifier.from_env({"NOTIFY_SOCKET": fake.env_value}).ready()
        assert fake.messages(1) == [["READY=1"]]
    finally:
        fake.sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.active
    assert notifier.watchdog_interval is None
    notifier.ready("x")
    notifier.reloading()
    notifier.stopping()
    assert notifier.maybe_watchdog(0.0) is False
    assert notifier.seconds_until_watchdog(0.0) is None


def test_send_errors_are_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="jobd.notify"):
        notifier.ready()
        notifier.watchdog()
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "READY=1" in caplog.records[0].getMessage()


def test_recovers_when_the_socket_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    notifier.status("lost")
    fake = FakeManager(str(path), str(path))
    try:
        notifier.status("found")
        assert fake.messages(1) == [["STATUS=found"]]
    finally:
        fake.sock.close()


def test_unusable_address_is_inactive() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).active


def test_watchdog_pings_at_most_every_half_timeout(manager: FakeManager) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.env_value, "WATCHDOG_USEC": "20000000"})
    assert notifier.watchdog_interval == 10.0
    assert notifier.seconds_until_watchdog(100.0) == 0.0
    pinged = [notifier.maybe_watchdog(t) for t in (100.0, 101.0, 109.9, 110.0, 115.0, 120.5)]
    assert pinged == [True, False, False, True, False, True]
    assert notifier.seconds_until_watchdog(125.0) == pytest.approx(5.5)
    assert manager.messages(3) == [["WATCHDOG=1"]] * 3
    manager.assert_silent()


def test_watchdog_for_another_pid_is_disabled(manager: FakeManager) -> None:
    env = {"NOTIFY_SOCKET": manager.env_value, "WATCHDOG_USEC": "2000000"}
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 1.0
    other = Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None
    assert other.watchdog_due(0.0) is False
    assert other.maybe_watchdog(0.0) is False
    manager.assert_silent()


@pytest.mark.parametrize("value", ["", "0", "soon", "-5"])
def test_malformed_or_zero_watchdog_usec_is_off(manager: FakeManager, value: str) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": manager.env_value, "WATCHDOG_USEC": value})
    assert notifier.watchdog_interval is None
